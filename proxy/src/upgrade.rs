//! HTTP/1.1 `Upgrade` (WebSocket, and any other protocol an app switches to) across the
//! mesh. `Upgrade` and `Connection` are hop-by-hop headers, which the proxy strips from
//! every other request; for an upgrade request each hop passes them on instead, and the
//! request takes the whole L7 path (routing, authorization, metrics, trace). When the
//! answer is `101 Switching Protocols`, both sides of the hop hand over their connection,
//! and the proxy copies bytes between them until either side closes: between two proxies
//! that is still the same mTLS connection. Any other answer is an ordinary response.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::opaque::{self, Flow};

/// One side of an upgrade on its way: the connection it was asked on, which hyper hands
/// over once the `101` is written, and the protocol asked for.
pub struct Upgrade {
    downstream: OnUpgrade,
    protocol: HeaderValue,
}

/// Takes the upgrade out of `request`, if it asks for one: an HTTP/1.1 request with
/// `Connection: upgrade` and an `Upgrade` header.
pub fn take<B>(request: &mut Request<B>) -> Option<Upgrade> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    // Most requests have no `Upgrade`: one lookup, and nothing else, for them.
    let protocol = headers.get(header::UPGRADE)?.clone();
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asked {
        return None;
    }
    Some(Upgrade {
        downstream: hyper::upgrade::on(request),
        protocol,
    })
}

impl Upgrade {
    /// Puts back the headers that ask the next hop for the upgrade (after the hop-by-hop
    /// headers were stripped).
    pub fn ask_next_hop(&self, headers: &mut HeaderMap) {
        insert_upgrade_headers(headers, &self.protocol);
    }

    /// When `response` agrees to the upgrade (`101`), takes its connection, puts back its
    /// upgrade headers, and copies bytes between the two connections in a task of its own
    /// once hyper has handed both over. Other responses are left as they are.
    pub fn splice<B>(self, response: &mut Response<B>, flow: Flow, metrics: Arc<Metrics>) {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let upstream = hyper::upgrade::on(&mut *response);
        let protocol = response
            .headers()
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or(self.protocol);
        insert_upgrade_headers(response.headers_mut(), &protocol);
        let downstream = self.downstream;
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((downstream, upstream)) => {
                    opaque::copy(
                        TokioIo::new(downstream),
                        TokioIo::new(upstream),
                        &flow,
                        &metrics,
                    )
                    .await;
                }
                Err(err) => {
                    tracing::debug!(service = %flow.service, error = %err, "an upgrade did not complete");
                }
            }
        });
    }
}

fn insert_upgrade_headers(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/chat").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_an_http11_request_that_asks_for_it_is_an_upgrade() {
        let websocket = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        type Case<'a> = (Version, &'a [(&'a str, &'a str)], bool);
        let cases: [Case; 4] = [
            (Version::HTTP_11, &websocket, true),
            (Version::HTTP_11, &[("upgrade", "websocket")], false),
            (Version::HTTP_11, &[("connection", "upgrade")], false),
            (Version::HTTP_2, &websocket, false),
        ];
        for (version, headers, upgrade) in cases {
            let mut request = request(version, headers);
            assert_eq!(
                take(&mut request).is_some(),
                upgrade,
                "{version:?} {headers:?}"
            );
        }
    }

    #[test]
    fn the_next_hop_is_asked_for_the_same_protocol() {
        let mut request = request(
            Version::HTTP_11,
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
        );
        let upgrade = take(&mut request).unwrap();
        let mut next = HeaderMap::new();
        upgrade.ask_next_hop(&mut next);
        assert_eq!(next[header::CONNECTION], "upgrade");
        assert_eq!(next[header::UPGRADE], "websocket");
    }
}
