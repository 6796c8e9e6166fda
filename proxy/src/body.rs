//! The one body type every proxied request and response has: the peer's or the app's
//! streamed body, a short text the proxy wrote itself, or a request body replayed for a
//! retry. Its error is boxed, so the proxy can end a body it stops on purpose (a retry's
//! superseded attempt) with an error of its own rather than only hyper's.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Why a body broke off: hyper's error for a connection that failed, or the proxy's own.
#[derive(Debug)]
pub struct BodyError(Box<dyn std::error::Error + Send + Sync>);

impl BodyError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// A body holding `text`.
pub fn text(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// A body with nothing in it (no allocation: the boxed body is zero-sized).
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body from a peer or the app, unchanged.
pub fn streamed(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(BodyError::new).boxed()
}
