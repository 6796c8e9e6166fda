//! `/api/tap?service=NAME`: the live tap of one service, relayed to a browser as
//! server-sent events (`text/event-stream`, read by `EventSource`). It opens `/tap` on
//! every connected proxy of the service through `crate::tap` and sends each finished
//! request as one `data:` line of the proxy's event JSON; a proxy that cannot be tapped
//! becomes a `proxy-failed` event. A comment every few seconds finds a browser that went
//! away, and then the relay ends, which closes every proxy's tap.
//!
//! Query: `service` (required), and the proxy's own filters `to`, `path_prefix`,
//! `method`, `max_rps` (default 100 events/s across the service's proxies). Anything
//! else is refused with 400 naming it.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::registry::ProxyRegistry;
use crate::tap::{self, TapMessage, TapProxy, TapQuery};

/// Time between keep-alive comments: how soon a closed page's tap is closed.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Server-sent event chunks queued for a slow browser before events wait.
const QUEUE: usize = 256;

pub type RelayBody = UnsyncBoxBody<Bytes, Infallible>;

/// Reads the query of `/api/tap`.
pub fn parse_query(query: &str) -> Result<TapQuery, String> {
    let mut tap_query = TapQuery::service("");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "service" => tap_query.service = value,
            "to" => tap_query.to = Some(value).filter(|to| !to.is_empty()),
            "path_prefix" => tap_query.path_prefix = Some(value).filter(|p| !p.is_empty()),
            "method" => tap_query.method = Some(value).filter(|m| !m.is_empty()),
            "max_rps" => {
                tap_query.max_rps = value
                    .parse()
                    .ok()
                    .filter(|rate| *rate > 0)
                    .ok_or_else(|| format!("max_rps={value:?} is not a positive integer"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; /api/tap takes service, to, path_prefix, \
                     method and max_rps"
                ));
            }
        }
    }
    if tap_query.service.is_empty() {
        return Err("/api/tap needs ?service=NAME".into());
    }
    Ok(tap_query)
}

/// Answers `/api/tap` with the query string `query`.
pub fn relay(registry: &ProxyRegistry, query: &str) -> Response<RelayBody> {
    let tap_query = match parse_query(query) {
        Ok(tap_query) => tap_query,
        Err(why) => return refusal(StatusCode::BAD_REQUEST, &why),
    };
    let proxies = registry.snapshot();
    let messages = match tap::open(proxies.iter().map(TapProxy::from), &tap_query) {
        Ok(messages) => messages,
        Err(error) => return refusal(StatusCode::NOT_FOUND, &error.to_string()),
    };
    let (chunks, body) = mpsc::channel(QUEUE);
    tokio::spawn(forward(messages, chunks));
    let stream = ReceiverStream::new(body).map(|chunk: Bytes| Ok(Frame::data(chunk)));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("static response parts are valid")
}

/// Turns tap messages into server-sent events until the tap or the browser ends.
async fn forward(mut messages: mpsc::Receiver<TapMessage>, chunks: mpsc::Sender<Bytes>) {
    if chunks
        .send(Bytes::from_static(b": tap open\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    loop {
        let chunk = tokio::select! {
            message = messages.recv() => match message {
                Some(message) => server_sent_event(&message),
                None => Bytes::from_static(b"event: end\ndata: {}\n\n"),
            },
            _ = keepalive.tick() => Bytes::from_static(b": keep-alive\n\n"),
        };
        let ended = chunk.starts_with(b"event: end");
        // A send fails once the browser has gone: dropping `messages` closes the taps.
        if chunks.send(chunk).await.is_err() || ended {
            return;
        }
    }
}

/// One message as a server-sent event: a request as the default event, a proxy that
/// could not be tapped as `proxy-failed`.
pub fn server_sent_event(message: &TapMessage) -> Bytes {
    let text = match message {
        TapMessage::Event(event) => format!("data: {}\n\n", json!(event)),
        TapMessage::ProxyFailed { admin_addr, reason } => format!(
            "event: proxy-failed\ndata: {}\n\n",
            json!({ "admin_addr": admin_addr, "reason": reason })
        ),
    };
    Bytes::from(text)
}

fn refusal(status: StatusCode, message: &str) -> Response<RelayBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(
            http_body_util::Full::new(Bytes::from(json!({ "error": message }).to_string()))
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}
