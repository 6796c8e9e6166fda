//! The outbound listener: plain HTTP/1.1 or HTTP/2 from the local app, routed by the
//! service the request names to one of its endpoints, over pooled mTLS to that endpoint's
//! proxy. Failures the proxy can name (unknown service, no endpoints, unreachable peer)
//! are answered at once with a short body that says so.

mod peers;
mod target;

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{self, ProxyBody};
use crate::metrics::{Direction, Metrics};
use crate::proxy_error::{ProxyError, error_chain};
use crate::server::{
    CLIENT_ID_HEADER, ConnectionLimit, ServerLimits, first_byte_within, http_server,
    next_connection, strip_hop_by_hop,
};
use crate::state::{Directory, Resolution};
use crate::tls::TlsState;

pub use peers::PeerClients;

/// How long the first request for a new service waits for the control plane's answer.
const FIRST_LOOKUP_WAIT: Duration = Duration::from_secs(3);

pub struct Outbound {
    directory: Arc<Directory>,
    peers: PeerClients,
    metrics: Arc<Metrics>,
}

/// The label requests for services the mesh does not know are counted under.
const UNKNOWN_SERVICE: &str = "unknown";

impl Outbound {
    pub fn new(directory: Arc<Directory>, tls: Arc<TlsState>, metrics: Arc<Metrics>) -> Self {
        Self {
            directory,
            peers: PeerClients::new(tls),
            metrics,
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = tokio::time::Instant::now();
        let (service, response) = match self.forward(request).await {
            Ok((service, response)) => (service, response),
            Err((service, error)) => {
                tracing::debug!(%error, "outbound request failed");
                (service, error.into_response())
            }
        };
        self.metrics.record_request(
            Direction::Outbound,
            &service,
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    /// Sends the request on; both outcomes carry the service label to count it under.
    async fn forward(
        &self,
        request: Request<Incoming>,
    ) -> Result<(String, Response<ProxyBody>), (String, ProxyError)> {
        let unknown = |error| (UNKNOWN_SERVICE.to_owned(), error);
        let authority = target::requested_authority(&request).map_err(unknown)?;
        let key = target::service_key(&authority);
        let backend = match self
            .directory
            .resolve(&key, FIRST_LOOKUP_WAIT)
            .await
            .map_err(|err| unknown(err.into()))?
        {
            Resolution::Found(backend) => backend,
            Resolution::NotFound => return Err(unknown(ProxyError::UnknownService(key))),
            Resolution::Pending => return Err(unknown(ProxyError::DiscoveryPending(key))),
        };
        let service = backend.name.clone();
        let Some(endpoint) = backend.pick() else {
            return Err((service.clone(), ProxyError::NoEndpoints(service)));
        };
        let client = self.peers.get(endpoint, || self.directory.endpoints());
        let version = request.version();
        let request = to_peer_request(request, authority);
        match client.for_version(version).request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok((service, Response::from_parts(parts, body::streamed(body))))
            }
            Err(err) => Err((
                service.clone(),
                ProxyError::Peer {
                    service,
                    endpoint: endpoint.address,
                    cause: error_chain(&err),
                },
            )),
        }
    }
}

/// The request as it goes to the peer: absolute URI (the pool needs one; the connector
/// ignores it), the authority the app asked for, no hop-by-hop headers, and no
/// `x-seam-client-id` of the app's own making.
fn to_peer_request(request: Request<Incoming>, authority: Authority) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(CLIENT_ID_HEADER);
    if !parts.headers.contains_key(header::HOST)
        && parts.version != http::Version::HTTP_2
        && let Ok(host) = authority.as_str().parse()
    {
        parts.headers.insert(header::HOST, host);
    }
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    Request::from_parts(parts, body)
}

/// Accepts the app's connections until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    outbound: Arc<Outbound>,
    connections: Arc<GracefulShutdown>,
    stop: CancellationToken,
    limits: ServerLimits,
) {
    let server = http_server(&limits);
    let limit = ConnectionLimit::new(&limits);
    while let Some((tcp, peer)) = next_connection(&listener, &stop, "outbound").await {
        let Some(permit) = outbound.metrics.admit(&limit, Direction::Outbound, peer) else {
            continue;
        };
        let guard = outbound.metrics.connection_opened(Direction::Outbound);
        let outbound = outbound.clone();
        let service = hyper::service::service_fn(move |request| {
            let outbound = outbound.clone();
            async move { Ok::<_, std::convert::Infallible>(outbound.handle(request).await) }
        });
        let server = server.clone();
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            if !first_byte_within(&tcp, limits.header_read_timeout).await {
                tracing::debug!(%peer, "closed an outbound connection that sent nothing");
                return;
            }
            let connection = server.serve_connection(TokioIo::new(tcp), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(error = %err, "outbound connection ended with an error");
            }
        });
    }
}
