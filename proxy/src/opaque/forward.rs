//! An opaque stream to a service of the mesh: to one of the service's endpoints (in turn,
//! those the circuit breaker holds out last, the next one when a connect fails), over a
//! new mTLS connection that must prove the SPIFFE id published for that endpoint and says
//! ALPN `seam-tcp` (or plain TCP to an endpoint published without an identity); then the
//! bytes are copied both ways. No bytes have gone anywhere
//! before a connect succeeds, so trying the next endpoint is always safe.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, copy};
use crate::metrics::{Direction, Metrics};
use crate::outbound::PeerClients;
use crate::state::endpoints::{EndpointState, EndpointStates};
use crate::state::{Directory, Endpoint, Service};

/// Endpoints tried for one stream before giving up.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Opens opaque streams to the mesh's services.
pub struct Forwarder {
    pub peers: Arc<PeerClients>,
    pub states: Arc<EndpointStates>,
    pub directory: Arc<Directory>,
    pub metrics: Arc<Metrics>,
}

/// Where a stream went: its service, and the endpoints it was tried on.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarding {
    Copied { endpoint: Endpoint },
    NoEndpoints,
    Unreachable { tried: usize },
}

impl Forwarder {
    /// Forwards `local`, a stream for `service`, until both directions are done.
    pub async fn forward<L>(&self, local: L, service: &Service) -> Forwarding
    where
        L: AsyncRead + AsyncWrite + Unpin,
    {
        let order = self.connect_order(service);
        if order.is_empty() {
            tracing::debug!(service = %service.name, "no endpoints for an opaque stream");
            return Forwarding::NoEndpoints;
        }
        let tried = order.len().min(MAX_CONNECT_ATTEMPTS);
        for endpoint in order.into_iter().take(MAX_CONNECT_ATTEMPTS) {
            let client = self.peers.get(endpoint, || self.directory.endpoints());
            match client.connect_opaque().await {
                Ok(stream) => {
                    let _in_flight = self.state(endpoint.address).start();
                    if endpoint.is_plaintext() {
                        self.metrics.plaintext_callees.stream(&service.name);
                    }
                    let flow = Flow {
                        direction: Direction::Outbound,
                        service: service.name.clone(),
                        peer: crate::metrics::peer_label(endpoint.identity.as_ref()),
                    };
                    copy(local, stream.into_inner(), &flow, &self.metrics).await;
                    return Forwarding::Copied {
                        endpoint: endpoint.clone(),
                    };
                }
                Err(err) => {
                    tracing::debug!(service = %service.name, endpoint = %endpoint.address, error = %err, "cannot open an opaque stream; trying the next endpoint");
                }
            }
        }
        if self.metrics.refusal_log.admit("opaque_unreachable") {
            tracing::warn!(service = %service.name, tried, "cannot open an opaque stream: no endpoint could be reached");
        }
        Forwarding::Unreachable { tried }
    }

    /// The service's endpoints in the order to try them: from the next in turn, those the
    /// breaker holds out last.
    fn connect_order<'a>(&self, service: &'a Service) -> Vec<&'a Endpoint> {
        let endpoints = &service.endpoints;
        if endpoints.is_empty() {
            return Vec::new();
        }
        let start = service.own_target().next_turn();
        let in_turn = (0..endpoints.len()).map(|i| &endpoints[(start + i) % endpoints.len()]);
        let (mut ready, ejected): (Vec<_>, Vec<_>) =
            in_turn.partition(|endpoint| !self.state(endpoint.address).is_ejected());
        ready.extend(ejected);
        ready
    }

    /// The kept state of the endpoint at `address` (see `state::endpoints`).
    fn state(&self, address: SocketAddr) -> Arc<EndpointState> {
        self.states.get(address, || {
            self.directory
                .endpoints()
                .into_iter()
                .map(|endpoint| endpoint.address)
                .collect()
        })
    }
}
