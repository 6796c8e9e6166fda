//! The inbound listener: mTLS from other proxies (a client certificate from the mesh CA is
//! required at the handshake; plaintext only when the service's policy allows it, or for
//! the app's probe paths, `probes`), then
//! the service's allow list decides (403 with the reason if the caller is not on it), and
//! the request goes to the local app in the HTTP version it arrived in, carrying
//! `x-seam-client-id: <the caller's SPIFFE id>` (any such header that came from outside is
//! removed first). A connection addressed to the listener goes to `--app`; one iptables
//! redirected goes to the port it was meant for (`app_pools`). How a connection opens —
//! TLS or not, HTTP or an opaque stream — is `connection`'s business; refusals are counted
//! by reason.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, TryFutureExt};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use seam_proto::SpiffeId;
use seam_proto::report::error_chain;

use crate::body::{self, ProxyBody};
use crate::metrics::{CallerLabels, DeniedLabels, Direction, Metrics};
use crate::opaque::Flow;
use crate::proxy_error::{ProxyError, proxy_response};
use crate::request_id;
use crate::server::{CLIENT_ID_HEADER, ServerLimits, strip_hop_by_hop};
use crate::state::authz::{self, Caller};
use crate::state::policy::DEFAULT_ROUTE_LABEL;
use crate::state::{Directory, Resolution, Service};
use crate::telemetry::{Handled, Telemetry};
use crate::tls::TlsState;
use crate::upgrade::{self, Upgrade};

mod app_pools;
mod callers;
mod connection;
mod probes;
mod rate_limit;

use app_pools::AppPools;
pub use callers::CallerCounts;
use callers::CallerTally;
pub use connection::serve;
pub use probes::{ProbePath, ProbePaths};
use rate_limit::RateLimits;

/// A peer has this long to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for this service's policy on the proxy's first requests.
const POLICY_WAIT: Duration = Duration::from_secs(3);
/// How callers without an identity are labelled in metrics and `/callers`.
const PLAINTEXT_CALLER: &str = "plaintext";
/// [`PLAINTEXT_CALLER`] as the shared string metric labels hold.
static PLAINTEXT_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| PLAINTEXT_CALLER.into());

pub struct Inbound {
    service: Arc<str>,
    /// The authority whose policy applies here (`--inbound-policy`).
    policy_authority: Arc<str>,
    apps: AppPools,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
    directory: Arc<Directory>,
    limits: ServerLimits,
    /// How long a redirected plaintext connection may take to show its protocol.
    detect_timeout: Duration,
    callers: CallerCounts,
    rate_limits: RateLimits,
    /// What plaintext may reach although the service accepts only mTLS.
    probe_paths: ProbePaths,
}

/// What the inbound side is given.
pub struct InboundSettings {
    pub service: String,
    /// The authority to resolve for this proxy's inbound policy: the service (file mode)
    /// or, in Kubernetes, the pod's IP, which the control plane maps to its Service.
    pub policy_authority: String,
    pub app: SocketAddr,
    pub limits: ServerLimits,
    pub detect_timeout: Duration,
    /// The app's probe paths (`--probe-paths`).
    pub probe_paths: ProbePaths,
}

impl Inbound {
    pub fn new(
        settings: InboundSettings,
        tls: Arc<TlsState>,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            service: settings.service.into(),
            policy_authority: settings.policy_authority.into(),
            apps: AppPools::new(settings.app),
            tls,
            metrics,
            telemetry,
            directory,
            limits: settings.limits,
            detect_timeout: settings.detect_timeout,
            callers: CallerCounts::default(),
            rate_limits: RateLimits::default(),
            probe_paths: settings.probe_paths,
        }
    }

    /// The authority whose policy applies here (`--inbound-policy`, else `--service`).
    pub fn policy_authority(&self) -> &str {
        &self.policy_authority
    }

    /// Who called this proxy's service and how, for `/callers`.
    pub fn callers(&self) -> &CallerCounts {
        &self.callers
    }

    /// This service's authorization policy as the control plane last sent it.
    async fn policy(&self) -> Result<Arc<Service>, Response<ProxyBody>> {
        match self
            .directory
            .resolve(&self.policy_authority, POLICY_WAIT)
            .await
        {
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
        app: SocketAddr,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        let call = self.telemetry.begin(
            Direction::Inbound,
            &mut request,
            caller.caller.identity.as_ref(),
        );
        // Boxed: upgrades are rare, and every request's future would carry one.
        let upgrade = upgrade::take(&mut request).map(Box::new);
        async move {
            let (response, request_id) = match self.admitted(&request, &caller).await {
                Ok(service) => {
                    // The first meshed hop of an unmeshed caller's request; a meshed
                    // caller's outbound has seen to it.
                    if caller.caller.identity.is_none() && !service.request_id_off {
                        request_id::ensure(request.headers_mut());
                    }
                    drop(service);
                    let request_id = self.telemetry.request_id_of(request.headers());
                    let mut response = self
                        .forward(request, &caller.caller, app, upgrade.as_deref())
                        .await;
                    if let Some(upgrade) = upgrade {
                        let flow = Flow {
                            direction: Direction::Inbound,
                            service: self.service.clone(),
                            peer: caller.caller.shared_label(),
                        };
                        upgrade.splice(&mut response, flow, self.metrics.clone());
                    }
                    (response, request_id)
                }
                Err(refused) => (refused, self.telemetry.request_id_of(request.headers())),
            };
            let handled = Handled {
                service: self.service.clone(),
                route: DEFAULT_ROUTE_LABEL.clone(),
                retries: 0,
                upstream: None,
                request_id,
            };
            self.telemetry.finish(call, handled, response)
        }
    }

    /// Applies the allow list of the route the request matches (else the service's); a
    /// refusal is counted, logged with both identities, and answered with a 403 that
    /// says why. Then the rate limits (`rate_limit`), which a denied caller never uses.
    async fn admitted<B>(
        &self,
        request: &Request<B>,
        counted: &CountedCaller,
    ) -> Result<Arc<Service>, Response<ProxyBody>> {
        let caller = &counted.caller;
        let service = self.policy().await?;
        let route = service.route_for(request);
        let route_allow = route.allow.as_deref();
        // A probe-only caller's requests were let in by `--probe-paths` before they got
        // here (the service itself refuses plaintext); each is one of the app's probes.
        let decision = if caller.probes_only_on.is_some() {
            Ok(())
        } else {
            authz::authorize(
                caller.as_caller(),
                &self.service,
                &service.authorization,
                route_allow,
            )
        };
        let label = caller.label();
        counted.requests.inc();
        counted.tally.record(decision.is_ok());
        let denied = match decision {
            Ok(()) => {
                return match self.rate_limits.refusal(
                    &service,
                    route,
                    caller,
                    request,
                    &self.metrics,
                ) {
                    Some(refused) => Err(refused),
                    None => Ok(service),
                };
            }
            Err(denied) => denied,
        };
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
        Err(proxy_response(StatusCode::FORBIDDEN, format!("{denied}\n")))
    }

    /// Sends the request to the app. The future is made here and borrows nothing, so
    /// the request is held once, inside it.
    fn forward(
        &self,
        request: Request<Incoming>,
        caller: &InboundCaller,
        app: SocketAddr,
        upgrade: Option<&Upgrade>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
        let pool = self.apps.get(app);
        let mut request = to_app_request(request, caller, &pool.authority);
        if let Some(upgrade) = upgrade {
            upgrade.ask_next_hop(request.headers_mut());
        }
        let sent = if request.version() == Version::HTTP_2 {
            Either::Left(pool.http2.send(request).map_err(|err| error_chain(&err)))
        } else {
            Either::Right(pool.http1.send(request).map_err(|err| error_chain(&err)))
        };
        sent.map(move |sent| match sent {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body::streamed(body))
            }
            Err(cause) => ProxyError::App { app, cause }.into_response(),
        })
    }
}

/// The request as it goes to the app (at `authority`): no hop-by-hop headers, and
/// `x-seam-client-id` naming the caller (or none, for a plaintext caller).
fn to_app_request(
    request: Request<Incoming>,
    caller: &InboundCaller,
    authority: &Authority,
) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // An insert replaces every value the caller sent under the name.
    match &caller.header {
        Some(header) => parts.headers.insert(CLIENT_ID_HEADER, header.clone()),
        None => parts.headers.remove(CLIENT_ID_HEADER),
    };
    // HTTP/1 requests go as they came (origin form, their Host header); HTTP/2 needs an
    // absolute URI (hyper sends it as :scheme and :authority), and keeps the :authority
    // the caller used.
    if parts.version == Version::HTTP_2 && parts.uri.authority().is_none() {
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    }
    Request::from_parts(parts, body)
}

/// Who is on the other end of an inbound connection.
struct InboundCaller {
    /// `None` for a plaintext caller.
    identity: Option<SpiffeId>,
    /// `x-seam-client-id` for the app, when there is an identity.
    header: Option<HeaderValue>,
    /// A plaintext caller let in only for the app's probe paths on this port, as the
    /// service accepts only mTLS (`--probe-paths`).
    probes_only_on: Option<u16>,
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
    /// A caller without TLS, and so without an identity.
    fn plaintext() -> Self {
        Self {
            identity: None,
            header: None,
            probes_only_on: None,
        }
    }

    /// A plaintext caller of a service that accepts only mTLS, let in for the app's
    /// probe paths on `port` and for nothing else.
    fn probes_only(port: u16) -> Self {
        Self {
            probes_only_on: Some(port),
            ..Self::plaintext()
        }
    }

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
