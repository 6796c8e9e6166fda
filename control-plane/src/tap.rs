//! Tapping a service: opens `GET /tap` on the admin listener of every connected proxy of
//! the service, gives each an equal share of the event rate, and merges their NDJSON
//! streams into one channel of [`TapMessage`]s. Shared by `seamctl tap` (which learns the
//! proxies from the control plane's `/proxies`) and the dashboard (which runs inside the
//! control plane and reads its `ProxyRegistry`). The filters travel to the proxies, which
//! apply them; nothing is filtered here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::{BodyExt as _, Empty};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ctl::status::ProxyStatus;
use crate::registry::ProxyRecord;

/// Events per second a tap gets in all when the caller does not say.
pub const DEFAULT_MAX_RPS: u32 = 100;
/// How long opening one proxy's tap may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line a proxy may send (far beyond any event).
const MAX_LINE: usize = 1 << 20;
/// Messages queued for the reader before the proxies' streams wait.
const MERGED_QUEUE: usize = 1024;

/// What to tap: a service's proxies, and which of their requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapQuery {
    pub service: String,
    /// Only outbound requests to this service.
    pub to: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    /// Events per second across all the proxies (each gets an equal share, at least 1).
    pub max_rps: u32,
    /// Request headers whose values the events show.
    pub headers: Vec<String>,
}

impl TapQuery {
    /// Everything `service`'s proxies see, at the default rate.
    pub fn service(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            to: None,
            path_prefix: None,
            method: None,
            max_rps: DEFAULT_MAX_RPS,
            headers: Vec::new(),
        }
    }

    /// The `/tap?...` path for one of `proxies` proxies.
    pub fn path_for_one_of(&self, proxies: usize) -> String {
        let share = (self.max_rps / u32::try_from(proxies.max(1)).unwrap_or(u32::MAX)).max(1);
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(to) = &self.to {
            query.append_pair("to", to);
        }
        if let Some(prefix) = &self.path_prefix {
            query.append_pair("path_prefix", prefix);
        }
        if let Some(method) = &self.method {
            query.append_pair("method", method);
        }
        query.append_pair("max_rps", &share.to_string());
        if !self.headers.is_empty() {
            query.append_pair("headers", &self.headers.join(","));
        }
        format!("/tap?{}", query.finish())
    }
}

/// One finished request as a proxy's `/tap` reports it (the proxy's contract).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    /// When the request arrived (RFC 3339, milliseconds, UTC).
    pub time: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The SPIFFE id of the proxy that saw it.
    pub proxy: Option<String>,
    /// The service the request is counted under: the callee outbound, the proxy's own
    /// service inbound.
    pub service: String,
    pub route: String,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub grpc_status: Option<u32>,
    /// From the request's arrival at the proxy to the end of the response body.
    pub latency_ms: f64,
    /// Known when the request declared its length; else absent.
    pub request_bytes: Option<u64>,
    pub response_bytes: u64,
    pub retries: u32,
    /// The endpoint an outbound request went to.
    pub endpoint: Option<String>,
    pub mtls: bool,
    /// Values of the request headers the query named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// What the merged stream carries.
#[derive(Clone, Debug)]
pub enum TapMessage {
    Event(Box<TapEvent>),
    /// A proxy whose tap could not be opened, or whose stream broke: which, and why.
    ProxyFailed {
        admin_addr: String,
        reason: String,
    },
}

/// A connected proxy as the tap needs it: its service and where its admin listener is.
#[derive(Clone, Debug)]
pub struct TapProxy {
    pub service: String,
    pub admin_addr: Option<String>,
}

impl From<&ProxyStatus> for TapProxy {
    fn from(proxy: &ProxyStatus) -> Self {
        Self {
            service: proxy.service.clone(),
            admin_addr: proxy.admin_addr.clone(),
        }
    }
}

impl From<&ProxyRecord> for TapProxy {
    fn from(proxy: &ProxyRecord) -> Self {
        Self {
            service: proxy.service.clone(),
            admin_addr: proxy.admin_addr.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("no connected proxy of service {service:?} (connected: {connected})")]
    NoProxies { service: String, connected: String },
    #[error("cannot read the connected proxies from the control plane")]
    Proxies(#[source] anyhow::Error),
}

/// Taps `query.service` on the proxies the control plane at `admin` lists (seamctl).
pub async fn open_via_admin(
    admin: SocketAddr,
    query: &TapQuery,
) -> Result<mpsc::Receiver<TapMessage>, TapError> {
    let proxies = crate::ctl::status::fetch(admin)
        .await
        .map_err(TapError::Proxies)?
        .proxies;
    open(proxies.iter().map(TapProxy::from), query)
}

/// Taps `query.service` on those of `proxies` that serve it. The channel ends when every
/// proxy's stream has ended; dropping it closes every tap at once.
pub fn open(
    proxies: impl IntoIterator<Item = TapProxy>,
    query: &TapQuery,
) -> Result<mpsc::Receiver<TapMessage>, TapError> {
    let proxies: Vec<TapProxy> = proxies.into_iter().collect();
    let tapped: Vec<&TapProxy> = proxies
        .iter()
        .filter(|proxy| proxy.service == query.service)
        .collect();
    if tapped.is_empty() {
        let mut services: Vec<&str> = proxies.iter().map(|p| p.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        return Err(TapError::NoProxies {
            service: query.service.clone(),
            connected: if services.is_empty() {
                "none".to_owned()
            } else {
                services.join(", ")
            },
        });
    }
    let path = query.path_for_one_of(tapped.len());
    let (messages, merged) = mpsc::channel(MERGED_QUEUE);
    for proxy in tapped {
        let messages = messages.clone();
        let admin_addr = proxy.admin_addr.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let shown = admin_addr.clone().unwrap_or_else(|| "-".to_owned());
            if let Err(reason) = follow(admin_addr.as_deref(), &path, &messages).await {
                let _ = messages
                    .send(TapMessage::ProxyFailed {
                        admin_addr: shown,
                        reason,
                    })
                    .await;
            }
        });
    }
    Ok(merged)
}

/// Streams one proxy's events into `messages` until the proxy or the reader goes away.
async fn follow(
    admin_addr: Option<&str>,
    path: &str,
    messages: &mpsc::Sender<TapMessage>,
) -> Result<(), String> {
    let admin_addr = admin_addr.ok_or("the proxy did not say where its admin port is")?;
    let address: SocketAddr = admin_addr
        .parse()
        .map_err(|_| format!("admin address {admin_addr:?} is not an IP:port"))?;
    let mut body = tokio::time::timeout(CONNECT_TIMEOUT, request(address, path))
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))??;
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| format!("the tap stream broke: {error}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line = pending.split_to(end + 1);
            let event: TapEvent = serde_json::from_slice(&line[..end])
                .map_err(|error| format!("sent a line that is not a tap event: {error}"))?;
            if messages
                .send(TapMessage::Event(Box::new(event)))
                .await
                .is_err()
            {
                // The reader is gone: dropping the connection closes the proxy's tap.
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE {
            return Err(format!("sent a line longer than {MAX_LINE} bytes"));
        }
    }
    Ok(())
}

/// Opens `GET path` on a proxy's admin listener: the streaming body of a 200, else why not.
async fn request(address: SocketAddr, path: &str) -> Result<hyper::body::Incoming, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("no answer: {error}"))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(response.into_body())
}

#[cfg(test)]
mod tests;
