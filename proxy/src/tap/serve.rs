//! `GET /tap` on the admin listener: checks that the client is in `--tap-allow` (a tap
//! shows request paths), parses the query, opens the tap and streams its events as
//! `application/x-ndjson` (HTTP/1.1 chunked), one object per finished request, until the
//! client goes away; the stream's end drops the registration, which closes the tap.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use ipnet::IpNet;
use tokio_stream::wrappers::ReceiverStream;

use super::Taps;
use super::query::TapQuery;
use crate::tls::TlsState;

/// The admin listener's response body: a whole answer, or a tap's stream.
pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

/// What serving `/tap` needs.
pub struct TapEndpoint {
    pub taps: Arc<Taps>,
    /// `--tap-allow`: the networks a tap may be opened from.
    pub allow: Vec<IpNet>,
    /// For the `proxy` field of each event (this proxy's SPIFFE id).
    pub tls: Arc<TlsState>,
}

impl TapEndpoint {
    /// Answers one `/tap` request from `peer`.
    pub fn serve<B>(&self, request: &Request<B>, peer: SocketAddr) -> Response<AdminBody> {
        if !allows(&self.allow, peer) {
            tracing::warn!(%peer, "refused /tap from a client outside --tap-allow");
            let allowed: Vec<String> = self.allow.iter().map(IpNet::to_string).collect();
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "/tap is served only to clients in --tap-allow ({}); {} is not\n",
                    allowed.join(","),
                    peer.ip().to_canonical()
                ),
            );
        }
        if request.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET /tap\n".into());
        }
        let query = match TapQuery::parse(request.uri().query()) {
            Ok(query) => query,
            Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
        };
        let opened = match self.taps.open(&query) {
            Ok(opened) => opened,
            Err(error) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
        };
        tracing::info!(%peer, filter = ?query.filter, max_rps = query.max_rps, "tap opened");
        let proxy = self
            .tls
            .certificate()
            .map(|certificate| certificate.spiffe_id.to_string());
        let headers = query.headers;
        let registration = opened.registration;
        let lines = ReceiverStream::new(opened.events).map(move |event| {
            // The stream owns the registration: when hyper drops the body (the client went
            // away), the tap closes.
            let _open = &registration;
            Ok::<_, Infallible>(Frame::data(Bytes::from(
                event.to_line(proxy.as_deref(), &headers),
            )))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(StreamBody::new(lines).boxed_unsync())
            .expect("static response parts are valid")
    }
}

/// Whether a client at `peer` is in one of the `allow` networks.
fn allows(allow: &[IpNet], peer: SocketAddr) -> bool {
    // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
    let ip = peer.ip().to_canonical();
    allow.iter().any(|network| network.contains(&ip))
}

fn text(status: StatusCode, body: String) -> Response<AdminBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_in_the_allowed_networks_may_tap() {
        let default: Vec<IpNet> = ["127.0.0.0/8", "::1/128"]
            .iter()
            .map(|net| net.parse().unwrap())
            .collect();
        let peer = |text: &str| -> SocketAddr { text.parse().unwrap() };
        assert!(allows(&default, peer("127.0.0.1:5000")));
        assert!(allows(&default, peer("127.0.0.2:5000")));
        assert!(allows(&default, peer("[::1]:5000")));
        // An IPv4 loopback client of a dual-stack listener.
        assert!(allows(&default, peer("[::ffff:127.0.0.1]:5000")));
        assert!(!allows(&default, peer("10.0.0.7:5000")));
        assert!(!allows(&default, peer("[::ffff:10.0.0.7]:5000")));
        assert!(!allows(&default, peer("[2001:db8::1]:5000")));
        let narrow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(!allows(&narrow, peer("127.0.0.2:5000")));
        assert!(!allows(&[], peer("127.0.0.1:5000")));
    }
}
