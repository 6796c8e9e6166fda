//! The bottom of the request path: sends the attempt to the endpoint the balancer
//! picked, over that endpoint's pooled mTLS connection (see `peers`; plain TCP to an
//! endpoint without a proxy, counted in `plaintext`), and tells a
//! failed connect (the app never saw the request) from a connection that broke later.

use std::sync::Arc;

use futures_util::FutureExt;
use http::Response;

use super::peers::PeerClients;
use super::stack::{Stack, ToEndpoint};
use crate::body;
use crate::metrics::Metrics;
use seam_proto::report::error_chain;

use crate::proxy_error::ProxyError;
use crate::server::strip_hop_by_hop;
use crate::state::Directory;

pub fn service(
    peers: Arc<PeerClients>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
) -> Stack<ToEndpoint> {
    Stack::new(move |attempt: ToEndpoint| {
        let picked = attempt.picked;
        if picked.endpoint.is_plaintext() {
            metrics.plaintext_callees.request(&picked.target.service);
        }
        // Made here and mapped, not awaited in an `async` block, so the future holds the
        // request once (inside `response`) and `response` once.
        let response = peers
            .get(&picked.endpoint, || directory.endpoints())
            .send(attempt.request);
        let service = picked.target.service.clone();
        let endpoint = picked.endpoint.address;
        response.map(move |outcome| match outcome {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, body::streamed(body)))
            }
            Err(err) if err.is_connect() => Err(ProxyError::PeerConnect {
                service: service.to_string(),
                endpoint,
                cause: error_chain(&err),
            }),
            Err(err) => Err(ProxyError::Peer {
                service: service.to_string(),
                endpoint,
                cause: error_chain(&err),
            }),
        })
    })
}
