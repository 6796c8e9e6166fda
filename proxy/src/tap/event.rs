//! One finished request as taps see it, and its JSON line. The request path builds a
//! `TapEvent` only while a tap is open; turning it into JSON happens on each tap's own
//! stream, off the request path, where the tap's choice of headers is applied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Method};
use seam_proto::SpiffeId;
use serde_json::{Map, Value, json};

use crate::metrics::Direction;

/// A finished request: what the tap contract (`GET /tap`, one JSON object per line) shows.
#[derive(Clone, Debug)]
pub struct TapEvent {
    /// When the request arrived.
    pub started_at: SystemTime,
    pub direction: Direction,
    /// The service label the request is counted under.
    pub service: Arc<str>,
    pub route: Arc<str>,
    /// The other side's mesh identity: the caller inbound, the endpoint outbound.
    pub peer: Option<SpiffeId>,
    pub method: Method,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub grpc_status: Option<u32>,
    /// From the request's arrival to the end of the response body.
    pub latency: Duration,
    /// The request body's length when it was known up front (`content-length`).
    pub request_bytes: Option<u64>,
    /// Response body bytes passed to the client.
    pub response_bytes: u64,
    pub retries: u32,
    pub endpoint: Option<SocketAddr>,
    pub mtls: bool,
    /// Values of the request headers some open tap named (the union of their names).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl TapEvent {
    /// The event as one JSON object; `proxy` is this proxy's SPIFFE id, and `headers`
    /// the names this tap asked for (no `headers` key when it asked for none).
    pub fn to_json(&self, proxy: Option<&str>, headers: &[HeaderName]) -> Value {
        let own = proxy.map(str::to_owned);
        let peer = self.peer.as_ref().map(|id| id.as_str().to_owned());
        let (caller, callee) = match self.direction {
            Direction::Inbound => (peer, own.clone()),
            Direction::Outbound => (own.clone(), peer),
        };
        let mut object = json!({
            "time": humantime::format_rfc3339_millis(self.started_at).to_string(),
            "direction": self.direction.as_str(),
            "proxy": own,
            "service": &*self.service,
            "route": &*self.route,
            "caller": caller,
            "callee": callee,
            "method": self.method.as_str(),
            "authority": self.authority,
            "path": self.path,
            "status": self.status,
            "grpc_status": self.grpc_status,
            "latency_ms": (self.latency.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "retries": self.retries,
            "endpoint": self.endpoint.map(|endpoint| endpoint.to_string()),
            "mtls": self.mtls,
        });
        if !headers.is_empty() {
            let mut shown = Map::new();
            for name in headers {
                let values: Vec<&str> = self
                    .headers
                    .iter()
                    .filter(|(captured, _)| captured == name)
                    .map(|(_, value)| value.to_str().unwrap_or("<not text>"))
                    .collect();
                if !values.is_empty() {
                    shown.insert(name.as_str().to_owned(), Value::from(values.join(", ")));
                }
            }
            object["headers"] = Value::Object(shown);
        }
        object
    }

    /// The event as one line of `application/x-ndjson`.
    pub fn to_line(&self, proxy: Option<&str>, headers: &[HeaderName]) -> String {
        let mut line = self.to_json(proxy, headers).to_string();
        line.push('\n');
        line
    }
}
