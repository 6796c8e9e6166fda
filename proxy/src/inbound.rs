//! The inbound listener: mTLS from other proxies (a client certificate from the mesh CA is
//! required at the handshake; plaintext only when the service's policy allows it), then
//! the service's allow list decides (403 with the reason if the caller is not on it), and
//! the request goes to the local app in the HTTP version it arrived in, carrying
//! `x-seam-client-id: <the caller's SPIFFE id>` (any such header that came from outside is
//! removed first). Refused handshakes are counted by reason.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, TryFutureExt};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use seam_proto::SpiffeId;
use seam_proto::report::error_chain;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::body::{self, ProxyBody};
use crate::detect::{Detection, Protocol};
use crate::http1_pool::{Dial, Http1Pool};
use crate::metrics::{CallerLabels, DeniedLabels, Direction, Metrics};
use crate::proxy_error::{ProxyError, proxy_response};
use crate::server::{
    CLIENT_ID_HEADER, ConnectionLimit, ServerLimits, first_bytes, http_server, next_connection,
    peer_http_server, speaking, strip_hop_by_hop,
};
use crate::state::authz::{self, Caller};
use crate::state::policy::DEFAULT_ROUTE_LABEL;
use crate::state::{Directory, Resolution, Service};
use crate::telemetry::{CountedIo, Handled, Telemetry};
use crate::tls::{ALPN_H2, ALPN_HTTP11, TlsState, refusal};

mod callers;

pub use callers::CallerCounts;
use callers::CallerTally;

/// A peer has this long to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for this service's policy on the proxy's first requests.
const POLICY_WAIT: Duration = Duration::from_secs(3);
/// How callers without an identity are labelled in metrics and `/callers`.
const PLAINTEXT_CALLER: &str = "plaintext";
/// [`PLAINTEXT_CALLER`] as the shared string metric labels hold.
static PLAINTEXT_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| PLAINTEXT_CALLER.into());

/// How long a connection to the app may sit idle in the pool.
const APP_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Inbound {
    service: Arc<str>,
    app: SocketAddr,
    /// `app` as a URI authority, made once rather than per request.
    app_authority: Authority,
    http1: Http1Pool<AppConnector, Incoming>,
    /// HTTP/2 to the app (one multiplexed connection); hyper-util's pool is fine there.
    http2: Client<AppConnector, Incoming>,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
    directory: Arc<Directory>,
    limits: ServerLimits,
    callers: CallerCounts,
}

impl Inbound {
    pub fn new(
        service: String,
        app: SocketAddr,
        tls: Arc<TlsState>,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
        directory: Arc<Directory>,
        limits: ServerLimits,
    ) -> Self {
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(APP_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(AppConnector(app));
        let http1 = Http1Pool::new(AppConnector(app), APP_IDLE_TIMEOUT);
        Self {
            service: service.into(),
            app,
            app_authority: Authority::try_from(app.to_string())
                .expect("a socket address is a valid authority"),
            http1,
            http2,
            tls,
            metrics,
            telemetry,
            directory,
            limits,
            callers: CallerCounts::default(),
        }
    }

    /// Who called this proxy's service and how, for `/callers`.
    pub fn callers(&self) -> &CallerCounts {
        &self.callers
    }

    /// This service's authorization policy as the control plane last sent it.
    async fn policy(&self) -> Result<Arc<Service>, Response<ProxyBody>> {
        match self.directory.resolve(&self.service, POLICY_WAIT).await {
            Ok(Resolution::Found(service)) => Ok(service),
            Ok(Resolution::NotFound) => Err(proxy_response(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is not in the mesh: no caller is allowed\n",
                    self.service
                ),
            )),
            Ok(Resolution::Pending) | Err(_) => Err(proxy_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the authorization policy of {} is not known yet\n",
                    self.service
                ),
            )),
        }
    }

    /// Answers one request from a caller. Not an `async fn`, which would keep the
    /// request twice in a future moved per request (see the outbound's `handle`).
    fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        caller: Arc<CountedCaller>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        let call = self.telemetry.begin(
            Direction::Inbound,
            &mut request,
            caller.caller.identity.as_ref(),
        );
        async move {
            let response = match self.authorized(&request, &caller).await {
                Ok(()) => self.forward(request, &caller.caller).await,
                Err(refused) => refused,
            };
            let handled = Handled {
                service: self.service.clone(),
                route: DEFAULT_ROUTE_LABEL.clone(),
                retries: 0,
                upstream: None,
            };
            self.telemetry.finish(call, handled, response)
        }
    }

    /// Applies the allow list of the route the request matches (else the service's); a
    /// refusal is counted, logged with both identities, and answered with a 403 that
    /// says why.
    async fn authorized<B>(
        &self,
        request: &Request<B>,
        counted: &CountedCaller,
    ) -> Result<(), Response<ProxyBody>> {
        let caller = &counted.caller;
        let service = self.policy().await?;
        let route_allow = service.route_for(request).allow.as_deref();
        let decision = authz::authorize(
            caller.as_caller(),
            &self.service,
            &service.authorization,
            route_allow,
        );
        let label = caller.label();
        counted.requests.inc();
        counted.tally.record(decision.is_ok());
        decision.map_err(|denied| {
            self.metrics
                .authorization_denied
                .get_or_create(&DeniedLabels {
                    service: self.service.to_string(),
                    caller: label.to_owned(),
                    reason: denied.reason_label(),
                })
                .inc();
            if self.metrics.refusal_log.admit(denied.reason_label()) {
                let callee = self
                    .tls
                    .certificate()
                    .map(|c| c.spiffe_id.to_string())
                    .unwrap_or_default();
                tracing::warn!(caller = label, callee, service = %self.service, reason = %denied, "refused a request: not allowed");
            }
            proxy_response(StatusCode::FORBIDDEN, format!("{denied}\n"))
        })
    }

    /// Sends the request to the app. The future is made here and borrows nothing, so
    /// the request is held once, inside it.
    fn forward(
        &self,
        request: Request<Incoming>,
        caller: &InboundCaller,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
        let request = self.to_app_request(request, caller);
        let sent = if request.version() == Version::HTTP_2 {
            Either::Left(self.http2.request(request).map_err(|err| error_chain(&err)))
        } else {
            Either::Right(self.http1.send(request).map_err(|err| error_chain(&err)))
        };
        let app = self.app;
        sent.map(move |sent| match sent {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body::streamed(body))
            }
            Err(cause) => ProxyError::App { app, cause }.into_response(),
        })
    }

    fn to_app_request(
        &self,
        request: Request<Incoming>,
        caller: &InboundCaller,
    ) -> Request<Incoming> {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // An insert replaces every value the caller sent under the name.
        match &caller.header {
            Some(header) => parts.headers.insert(CLIENT_ID_HEADER, header.clone()),
            None => parts.headers.remove(CLIENT_ID_HEADER),
        };
        // HTTP/1 requests go as they came (origin form, their Host header); hyper-util's
        // HTTP/2 pool needs an absolute URI, and keeps the :authority the caller used.
        if parts.version == Version::HTTP_2 && parts.uri.authority().is_none() {
            let mut uri = parts.uri.into_parts();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(self.app_authority.clone());
            if uri.path_and_query.is_none() {
                uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
        }
        Request::from_parts(parts, body)
    }
}

/// Who is on the other end of an inbound connection.
struct InboundCaller {
    /// `None` for a plaintext caller.
    identity: Option<SpiffeId>,
    /// `x-seam-client-id` for the app, when there is an identity.
    header: Option<HeaderValue>,
}

/// A connection's caller with the counters its requests add to, looked up once for the
/// connection rather than per request.
struct CountedCaller {
    caller: InboundCaller,
    /// `seam_inbound_requests_by_caller_total` for this caller.
    requests: Counter,
    /// This caller's line of `/callers`.
    tally: Arc<CallerTally>,
}

impl CountedCaller {
    fn new(caller: InboundCaller, inbound: &Inbound) -> Self {
        let requests = inbound
            .metrics
            .inbound_callers
            .get_or_create(&CallerLabels {
                caller: caller.shared_label(),
                tls: caller.transport(),
            })
            .clone();
        let tally = inbound.callers.tally(caller.label(), caller.transport());
        Self {
            caller,
            requests,
            tally,
        }
    }
}

impl InboundCaller {
    fn as_caller(&self) -> Caller<'_> {
        self.identity
            .as_ref()
            .map_or(Caller::Plaintext, Caller::Mesh)
    }

    /// [`Self::label`] as a shared string (no copy of the identity).
    fn shared_label(&self) -> Arc<str> {
        self.identity
            .as_ref()
            .map_or_else(|| PLAINTEXT_LABEL.clone(), SpiffeId::shared)
    }

    fn label(&self) -> &str {
        self.identity
            .as_ref()
            .map_or(PLAINTEXT_CALLER, SpiffeId::as_str)
    }

    fn transport(&self) -> &'static str {
        if self.identity.is_some() {
            "mtls"
        } else {
            "plaintext"
        }
    }
}

/// Accepts peers' connections until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    connections: Arc<GracefulShutdown>,
    stop: CancellationToken,
) {
    let limit = ConnectionLimit::new(&inbound.limits);
    let connection_metrics = Arc::new(inbound.metrics.connection_metrics(Direction::Inbound));
    while let Some((tcp, peer)) =
        next_connection(&listener, &stop, "inbound", &inbound.metrics.refusal_log).await
    {
        let Some(permit) = inbound.metrics.admit(&limit, Direction::Inbound, peer) else {
            continue;
        };
        let inbound = inbound.clone();
        let metrics = connection_metrics.clone();
        // A watcher per connection: the drain waits for it, handshake included.
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = metrics.opened();
            match first_bytes(&tcp, inbound.limits.header_read_timeout).await {
                Ok(Detection::Known(Protocol::Tls)) => {
                    let Some((tls, caller)) = handshake(&inbound, tcp, peer).await else {
                        return;
                    };
                    let protocol = match tls.get_ref().1.alpn_protocol() {
                        Some(ALPN_H2) => Some(Protocol::Http2),
                        Some(ALPN_HTTP11) => Some(Protocol::Http1),
                        _ => None,
                    };
                    let io = TokioIo::new(CountedIo::new(tls, &metrics));
                    serve_http(inbound, io, protocol, caller, watcher, peer).await;
                }
                Ok(Detection::Known(Protocol::Unknown)) => {
                    if inbound
                        .metrics
                        .connection_refused(Direction::Inbound, "unknown_protocol")
                    {
                        tracing::info!(%peer, "refused a connection that speaks neither TLS nor HTTP");
                    }
                }
                // HTTP, or bytes that may still become HTTP: hyper reads on from here.
                Ok(
                    detection @ (Detection::Known(Protocol::Http1 | Protocol::Http2)
                    | Detection::NeedMore),
                ) => {
                    if !inbound.plaintext_allowed().await {
                        if inbound
                            .metrics
                            .connection_refused(Direction::Inbound, "plaintext")
                        {
                            tracing::info!(%peer, "refused a plaintext connection: the service accepts only mTLS");
                        }
                        return;
                    }
                    let caller = InboundCaller {
                        identity: None,
                        header: None,
                    };
                    let io = TokioIo::new(CountedIo::new(tcp, &metrics));
                    serve_http(inbound, io, detection.known(), caller, watcher, peer).await;
                }
                Err(reason) => {
                    if inbound
                        .metrics
                        .connection_refused(Direction::Inbound, reason)
                    {
                        tracing::info!(%peer, reason, "closed an inbound connection before any byte");
                    }
                }
            }
        });
    }
}

impl Inbound {
    async fn plaintext_allowed(&self) -> bool {
        matches!(
            self.directory.resolve(&self.service, POLICY_WAIT).await,
            Ok(Resolution::Found(service)) if service.authorization.allow_plaintext
        )
    }
}

/// Serves HTTP on an accepted (and, for mTLS, authenticated) connection.
async fn serve_http<I>(
    inbound: Arc<Inbound>,
    io: I,
    protocol: Option<Protocol>,
    caller: InboundCaller,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let server = if caller.identity.is_some() {
        peer_http_server(&inbound.limits)
    } else {
        http_server(&inbound.limits)
    };
    let server = speaking(server, protocol);
    let caller = Arc::new(CountedCaller::new(caller, &inbound));
    let service = hyper::service::service_fn(move |request| {
        inbound
            .clone()
            .handle(request, caller.clone())
            .map(Ok::<_, std::convert::Infallible>)
    });
    let connection = server.serve_connection(io, service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %err, "inbound connection ended with an error");
    }
}

/// Completes the mTLS handshake and reads the caller's SPIFFE id; refusals are counted
/// by reason and logged (a few per window, see `RefusalLog`).
async fn handshake(
    inbound: &Inbound,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, InboundCaller)> {
    let refuse = |reason: &'static str| inbound.metrics.tls_refused(Direction::Inbound, reason);
    let Some(config) = inbound.tls.inbound_config() else {
        if refuse("no_certificate_yet") {
            tracing::info!(%peer, "refused a connection: this proxy has no certificate yet");
        }
        return None;
    };
    let stream = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(tcp),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let reason = refusal::reason(&err);
            if refuse(reason) {
                tracing::info!(%peer, reason, error = %err, "refused an inbound TLS handshake");
            }
            return None;
        }
        Err(_) => {
            if refuse("timeout") {
                tracing::info!(%peer, "inbound TLS handshake timed out");
            }
            return None;
        }
    };
    let own_trust_domain = inbound
        .tls
        .certificate()
        .map(|c| c.spiffe_id.trust_domain().to_owned());
    let caller = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| SpiffeId::from_certificate_der(leaf).ok())
        .filter(|id| own_trust_domain.as_deref() == Some(id.trust_domain()));
    let Some(caller) = caller else {
        if refuse("bad_identity") {
            tracing::info!(%peer, "refused a peer whose certificate names no SPIFFE id of this trust domain");
        }
        return None;
    };
    let header = HeaderValue::from_str(caller.as_str()).ok()?;
    Some((
        stream,
        InboundCaller {
            identity: Some(caller),
            header: Some(header),
        },
    ))
}

/// Dials the local app (both pools; hyper-util's asks with the request's URI, which
/// names the app anyway).
#[derive(Clone, Copy)]
struct AppConnector(SocketAddr);

impl AppConnector {
    async fn connect(self) -> std::io::Result<TokioIo<TcpStream>> {
        let tcp = TcpStream::connect(self.0).await?;
        tcp.set_nodelay(true)?;
        Ok(TokioIo::new(tcp))
    }
}

impl Dial for AppConnector {
    type Io = TokioIo<TcpStream>;

    fn dial(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send {
        self.connect()
    }
}

impl tower::Service<Uri> for AppConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.connect())
    }
}
