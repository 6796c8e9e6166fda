//! The bottom of the request path: sends the attempt to the endpoint the balancer
//! picked, over that endpoint's pooled mTLS connection (see `peers`), and tells a
//! failed connect (the app never saw the request) from a connection that broke later.

use std::sync::Arc;

use http::{Request, Response};

use super::Stack;
use super::balance::Picked;
use super::peers::PeerClients;
use super::route::RouteChoice;
use crate::body::{self, ProxyBody};
use crate::proxy_error::{ProxyError, error_chain};
use crate::server::strip_hop_by_hop;
use crate::state::Directory;
use crate::telemetry::Upstream;

pub fn service(peers: Arc<PeerClients>, directory: Arc<Directory>) -> Stack {
    Stack::new(move |mut request: Request<ProxyBody>| {
        // The last layer: what the layers above left in the extensions is taken, not
        // copied (the peer never sees extensions).
        let picked = request
            .extensions_mut()
            .remove::<Picked>()
            .expect("the balancer runs above the connection");
        let notes = RouteChoice::of(&request).notes.clone();
        let client = peers.get(&picked.endpoint, || directory.endpoints());
        async move {
            match client.send(request).await {
                Ok(response) => {
                    notes.answered_by(Upstream {
                        endpoint: picked.endpoint.address,
                        identity: picked.endpoint.identity,
                    });
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, body::streamed(body)))
                }
                Err(err) if err.is_connect() => Err(ProxyError::PeerConnect {
                    service: picked.target.service.to_string(),
                    endpoint: picked.endpoint.address,
                    cause: error_chain(&err),
                }),
                Err(err) => Err(ProxyError::Peer {
                    service: picked.target.service.to_string(),
                    endpoint: picked.endpoint.address,
                    cause: error_chain(&err),
                }),
            }
        }
    })
}
