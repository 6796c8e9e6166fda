//! The one body type every proxied response has: either the peer's streamed body or a
//! short text the proxy wrote itself.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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
    body.boxed()
}
