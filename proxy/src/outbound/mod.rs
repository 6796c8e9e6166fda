//! The outbound listener: plain HTTP/1.1 or HTTP/2 from the local app, routed by the
//! service the request names to one of its endpoints, over pooled mTLS to that endpoint's
//! proxy. After the service is resolved and the route matched (`route`), the route's
//! `fault` may delay the request or answer it at once (`fault`: outside the timeout and
//! the retries, so the app sees exactly what is configured), and its `mirror` may send a
//! fire-and-forget copy to another service (`mirror`). Then a request goes, within the
//! route's whole-request `timeout`, down a fixed stack of layers, each its own module,
//! outermost first:
//!
//! - `retry`: tries a failed attempt again, within the service's budget, with backoff
//!   (`replay` keeps the request body for it, `grpc` reads a gRPC status);
//! - `split`: draws one of the route's weighted backends for the attempt;
//! - `balance`: picks the backend's endpoint (P2C over peak-EWMA, or round robin),
//!   skipping endpoints the breaker holds out and those at `max_concurrent_requests`
//!   (the concurrency limit: with none left, 503 at once);
//! - `per_endpoint`: counts the attempt in flight on its endpoint, bounds it by the
//!   per-try timeout, feeds its latency to the EWMA and its outcome to the breaker;
//! - `connect`: sends it over the endpoint's pooled mTLS connection (`peers`).
//!
//! Each stage's attempt is its own type (`stack`), so the stack cannot be built in
//! another order. Each layer reads its settings from the route the request matched, in
//! the service snapshot the request started with, so a config change never disturbs
//! requests in flight; per-endpoint state (EWMA, breaker, in-flight) is kept by address
//! across snapshots (`state::endpoints`). Failures the proxy can name are answered with
//! a short body that says so.

mod balance;
mod connect;
mod fault;
#[cfg(test)]
mod fixtures;
mod grpc;
mod intercepted;
mod mirror;
mod notes;
mod peers;
mod per_endpoint;
mod plaintext;
mod replay;
mod retry;
mod retry_after;
mod route;
mod split;
mod stack;
mod target;
mod timeout;
mod tunnel;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::body::{self, ProxyBody};
use crate::detect::Protocol;
use crate::metrics::{ConnectionMetrics, Direction, Metrics};
use crate::opaque::{Flow, Forwarder};
use crate::original_dst::{self, Arrival};
use crate::proxy_error::ProxyError;
use crate::request_id;
use crate::server::{
    CLIENT_ID_HEADER, ConnectionLimit, ServerLimits, first_bytes, http_server, next_connection,
    speaking, strip_hop_by_hop,
};
use crate::spawn_boxed::SpawnBoxed;
use crate::state::endpoints::EndpointStates;
use crate::state::policy::DEFAULT_ROUTE_LABEL;
use crate::state::{Directory, Resolution, Service};
use crate::telemetry::{CountedIo, Handled, Telemetry};
use crate::tls::TlsState;
use crate::upgrade::{self, Upgrade};
use mirror::Mirrors;
use notes::Notes;
use route::RouteChoice;
use target::ConnectionTarget;

pub use peers::PeerClients;
pub use plaintext::PlaintextCallees;

use stack::{Attempt, Stack};

/// How long the first request for a new service waits for the control plane's answer.
const FIRST_LOOKUP_WAIT: Duration = Duration::from_secs(3);

pub struct Outbound {
    /// The label requests for services the mesh does not know are counted under.
    unknown_service: Arc<str>,
    directory: Arc<Directory>,
    stack: Stack<Attempt>,
    /// Sends the copies of mirrored routes.
    mirrors: Mirrors,
    /// Opens opaque streams (non-HTTP connections, `CONNECT` tunnels) to services.
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
    /// How long a redirected connection may take to show its protocol.
    detect_timeout: Duration,
}

impl Outbound {
    pub fn new(
        directory: Arc<Directory>,
        tls: Arc<TlsState>,
        metrics: Arc<Metrics>,
        endpoint_states: Arc<EndpointStates>,
        telemetry: Arc<Telemetry>,
        detect_timeout: Duration,
    ) -> Self {
        let peers = Arc::new(PeerClients::new(tls));
        let forwarder = Forwarder {
            peers: peers.clone(),
            states: endpoint_states.clone(),
            directory: directory.clone(),
            metrics: metrics.clone(),
        };
        let stack = ServiceBuilder::new()
            .layer(retry::layer(
                Arc::new(retry::Budgets::default()),
                metrics.clone(),
            ))
            .layer(split::layer())
            .layer(balance::layer(
                endpoint_states,
                directory.clone(),
                metrics.clone(),
            ))
            .layer(per_endpoint::layer(metrics.clone()))
            .service(connect::service(
                peers.clone(),
                directory.clone(),
                metrics.clone(),
            ));
        Self {
            unknown_service: "unknown".into(),
            mirrors: Mirrors::new(peers, directory.clone(), metrics.clone()),
            directory,
            stack,
            forwarder,
            metrics,
            telemetry,
            detect_timeout,
        }
    }

    /// Answers one request from the app. Not an `async fn`, which would keep the request
    /// twice in a future moved per request: one `async` block holds it once.
    fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        target: Arc<ConnectionTarget>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        let call = self
            .telemetry
            .begin(Direction::Outbound, &mut request, None);
        // Boxed: upgrades are rare, and every request's future would carry one.
        let upgrade = upgrade::take(&mut request).map(Box::new);
        async move {
            let notes = Arc::new(Notes::default());
            let (labels, outcome) = if request.method() == Method::CONNECT {
                // Boxed: a tunnel's future would make every request's larger.
                Box::pin(tunnel::open(self.clone(), request)).await
            } else {
                match self.resolve(&request, &target).await {
                    Ok((authority, service)) => {
                        let (labels, sent) = self.start(
                            request,
                            authority,
                            service,
                            notes.clone(),
                            upgrade.as_deref(),
                        );
                        (labels, sent.await)
                    }
                    Err(error) => {
                        let labels = Labels {
                            service: self.unknown_service.clone(),
                            route: DEFAULT_ROUTE_LABEL.clone(),
                            request_id: self.telemetry.request_id_of(request.headers()),
                        };
                        (labels, Err(error))
                    }
                }
            };
            let (response, upstream) = match outcome {
                Ok(mut response) => {
                    let upstream = notes.take_upstream();
                    if let (Some(upgrade), Some(upstream)) = (upgrade, &upstream) {
                        let flow = Flow {
                            direction: Direction::Outbound,
                            service: labels.service.clone(),
                            peer: crate::metrics::peer_label(upstream.identity.as_ref()),
                        };
                        upgrade.splice(&mut response, flow, self.metrics.clone());
                    }
                    (response, upstream)
                }
                // The proxy wrote this answer; no endpoint did.
                Err(error) => {
                    tracing::debug!(%error, "outbound request failed");
                    (error.into_response(), None)
                }
            };
            let handled = Handled {
                service: labels.service,
                route: labels.route,
                retries: notes.retries(),
                upstream,
                request_id: labels.request_id,
            };
            self.telemetry.finish(call, handled, response)
        }
    }

    /// Starts the request: through its route's fault when one is drawn, then down the
    /// stack (`send`); the outcome is to be counted under the labels.
    fn start(
        self: &Arc<Self>,
        request: Request<Incoming>,
        authority: Authority,
        service: Arc<Service>,
        notes: Arc<Notes>,
        upgrade: Option<&Upgrade>,
    ) -> (
        Labels,
        impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + use<>,
    ) {
        let mut request = to_peer_request(request.map(body::streamed), authority);
        if let Some(upgrade) = upgrade {
            upgrade.ask_next_hop(request.headers_mut());
        }
        // The callee's setting decides; this is the first meshed hop the request meets.
        if !service.request_id_off {
            request_id::ensure(request.headers_mut());
        }
        let choice = RouteChoice::choose(service, &request, notes);
        let labels = Labels {
            service: choice.service.name.clone(),
            route: choice.route.label.clone(),
            request_id: self.telemetry.request_id_of(request.headers()),
        };
        let drawn = choice
            .route
            .policy
            .fault
            .as_ref()
            .and_then(|fault| fault.draw());
        let upgrading = upgrade.is_some();
        let sent = match drawn {
            None => Either::Left(self.send(request, choice, upgrading)),
            Some(drawn) => {
                fault::count(&drawn, &labels.service, &self.metrics);
                let outbound = self.clone();
                // Boxed: faults are rare, and every request's future would carry one.
                Either::Right(Box::pin(fault::inject(drawn, move || {
                    outbound.send(request, choice, upgrading)
                })))
            }
        };
        (labels, sent)
    }

    /// Sends the request down the stack within its route's timeout, after handing a copy
    /// to the route's mirror (never for an upgrade, whose connection is the request's own).
    fn send(
        &self,
        mut request: Request<ProxyBody>,
        choice: RouteChoice,
        upgrading: bool,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + use<> {
        let policy = &choice.route.policy;
        if let Some(mirror) = &policy.mirror
            && !upgrading
        {
            request = self.mirrors.copy(request, mirror, policy.timeout);
        }
        let limit = policy.timeout;
        timeout::within(limit, self.stack.send(Attempt::new(request, choice)))
    }

    /// The authority the request names and the service it resolves to.
    async fn resolve(
        &self,
        request: &Request<Incoming>,
        target: &ConnectionTarget,
    ) -> Result<(Authority, Arc<Service>), ProxyError> {
        let (authority, key) = target.of(request)?;
        match self.directory.resolve(&key, FIRST_LOOKUP_WAIT).await? {
            Resolution::Found(backend) => Ok((authority, backend)),
            Resolution::NotFound => Err(ProxyError::UnknownService(key.to_string())),
            Resolution::Pending => Err(ProxyError::DiscoveryPending(key.to_string())),
        }
    }
}

/// What the outbound counts a request under.
struct Labels {
    service: Arc<str>,
    route: Arc<str>,
    /// `x-request-id` as sent on, for telemetry.
    request_id: Option<http::HeaderValue>,
}

/// The request as it goes to the peer: the authority the app asked for (in the Host
/// header for HTTP/1, whose request line then has the origin form even if the app used an
/// absolute URI; in the URI for HTTP/2, which hyper sends as `:scheme` and `:authority`),
/// no hop-by-hop headers, and no `x-seam-client-id` of the app's own making.
fn to_peer_request<B>(request: Request<B>, authority: Authority) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(CLIENT_ID_HEADER);
    if !parts.headers.contains_key(header::HOST)
        && parts.version != http::Version::HTTP_2
        && let Ok(host) = authority.as_str().parse()
    {
        parts.headers.insert(header::HOST, host);
    }
    let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
    // An HTTP/1 request in origin form (the usual case) goes as it is.
    if parts.version == http::Version::HTTP_2 || !origin_form {
        let mut uri = parts.uri.into_parts();
        if parts.version == http::Version::HTTP_2 {
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
        } else {
            uri.scheme = None;
            uri.authority = None;
        }
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri)
            .expect("a path, with or without scheme and authority, is a valid URI");
    }
    Request::from_parts(parts, body)
}

/// Accepts the app's connections until `stop` is cancelled. A connection the app
/// addressed to the proxy is HTTP naming its service; one iptables redirected here is
/// decided by where it was going (`intercepted`).
pub async fn serve(
    listener: TcpListener,
    outbound: Arc<Outbound>,
    connections: Arc<GracefulShutdown>,
    stop: CancellationToken,
    limits: ServerLimits,
) {
    let server = http_server(&limits);
    let limit = ConnectionLimit::new(&limits);
    let connection_metrics = Arc::new(outbound.metrics.connection_metrics(Direction::Outbound));
    while let Some((tcp, peer)) =
        next_connection(&listener, &stop, "outbound", &outbound.metrics.refusal_log).await
    {
        let Some(permit) = outbound.metrics.admit(&limit, Direction::Outbound, peer) else {
            continue;
        };
        let guard = connection_metrics.opened();
        let metrics = connection_metrics.clone();
        let outbound = outbound.clone();
        let server = server.clone();
        let watcher = connections.watcher();
        // The serving futures are boxed: hyper's connection state makes them kilobytes,
        // and unboxed they would make the task that large, copied several times over
        // as it is spawned and as it ends (~3k instructions per connection in callgrind).
        tokio::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            if let Arrival::Redirected(destination) = original_dst::arrival(&tcp) {
                Box::pin(intercepted::serve(
                    outbound,
                    server,
                    tcp,
                    destination,
                    watcher,
                    metrics,
                ))
                .await;
                return;
            }
            let detection = match first_bytes(&tcp, limits.header_read_timeout).await {
                Ok(detection) => detection,
                Err(reason) => {
                    tracing::debug!(%peer, reason, "closed an outbound connection that sent nothing");
                    return;
                }
            };
            let target = ConnectionTarget::named();
            Box::pin(serve_http(
                outbound,
                server,
                tcp,
                detection.known(),
                target,
                watcher,
                metrics,
            ))
            .await;
        });
    }
}

/// Accepts the connections of one `--tcp-upstream` listener until `stop` is cancelled,
/// and carries each as an opaque stream to `service`.
pub async fn serve_tcp_upstream(
    listener: TcpListener,
    outbound: Arc<Outbound>,
    service: Arc<str>,
    stop: CancellationToken,
    limits: ServerLimits,
) {
    let limit = ConnectionLimit::new(&limits);
    let connection_metrics = Arc::new(outbound.metrics.connection_metrics(Direction::Outbound));
    while let Some((tcp, peer)) = next_connection(
        &listener,
        &stop,
        "tcp-upstream",
        &outbound.metrics.refusal_log,
    )
    .await
    {
        let Some(permit) = outbound.metrics.admit(&limit, Direction::Outbound, peer) else {
            continue;
        };
        let guard = connection_metrics.opened();
        let metrics = connection_metrics.clone();
        let outbound = outbound.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            match outbound
                .directory
                .resolve(&service, FIRST_LOOKUP_WAIT)
                .await
            {
                Ok(Resolution::Found(found)) => {
                    let tcp = CountedIo::new(tcp, &metrics);
                    outbound.forwarder.forward(tcp, &found).await;
                }
                other => {
                    if outbound.metrics.refusal_log.admit("tcp_upstream_unknown") {
                        tracing::warn!(%service, resolution = ?other, "closed a --tcp-upstream connection: the service is not known");
                    }
                }
            }
        });
    }
}

/// Serves the app's HTTP on one connection; every request goes to the service `target`
/// names for it.
async fn serve_http(
    outbound: Arc<Outbound>,
    server: auto::Builder<SpawnBoxed>,
    tcp: TcpStream,
    protocol: Option<Protocol>,
    target: ConnectionTarget,
    watcher: Watcher,
    metrics: Arc<ConnectionMetrics>,
) {
    let target = Arc::new(target);
    let service = hyper::service::service_fn(move |request| {
        outbound
            .clone()
            .handle(request, target.clone())
            .map(Ok::<_, std::convert::Infallible>)
    });
    let server = speaking(server, protocol);
    let tcp = CountedIo::new(tcp, &metrics);
    let connection = server.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(error = %err, "outbound connection ended with an error");
    }
}
