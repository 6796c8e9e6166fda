//! The proxy's Prometheus metrics: one registry, every name prefixed `seam_`, units in
//! the name (seconds, bytes) and counters ending in `_total`. Labels are bounded whatever
//! the app or its peers send: the direction, status codes and gRPC codes are fixed sets
//! ([`bounded`]); services, routes and peer identities are the mesh's own (a name the mesh
//! does not know is `unknown`, never the app's Host header; routes are named routes,
//! never raw paths; a peer is a certified SPIFFE id or `plaintext`); no label carries an
//! endpoint's port, and none the request's method or path.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

mod bounded;
mod series;

use crate::refusal_log::RefusalLog;

use bounded::{GrpcStatusLabel, StatusLabel};
use series::{Series, SeriesIndex};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// One request's labels. `peer` is the other side's mesh identity: the caller inbound,
/// the endpoint's expected identity outbound (empty when the request never left). The
/// strings are shared with the request path; a request finds its series through
/// `series`, which looks a label set up here only the first time it meets it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub service: Arc<str>,
    pub route: Arc<str>,
    pub status: StatusLabel,
    /// The gRPC status code, or empty for a response that is not gRPC.
    pub grpc_status: Option<GrpcStatusLabel>,
    pub tls: &'static str,
    pub peer: Option<Arc<str>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub direction: &'static str,
    pub service: Arc<str>,
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub service: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

/// A fault injected into a request to a service: `delay` or `abort`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub service: Arc<str>,
    pub kind: &'static str,
}

/// A mirrored copy by the service that got it, and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub service: Arc<str>,
    pub result: &'static str,
}

/// The peer label of an opaque stream or upgraded connection to an endpoint without an
/// identity (a plaintext endpoint), as inbound labels a plaintext caller.
pub static PLAINTEXT_PEER: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| "plaintext".into());

/// The peer label of an endpoint: its SPIFFE id, or [`PLAINTEXT_PEER`].
pub fn peer_label(identity: Option<&seam_proto::SpiffeId>) -> Arc<str> {
    identity.map_or_else(|| PLAINTEXT_PEER.clone(), seam_proto::SpiffeId::shared)
}

/// An opaque stream: its direction, service and peer identity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpaqueLabels {
    pub direction: &'static str,
    pub service: Arc<str>,
    pub peer: Arc<str>,
}

/// The bytes of an opaque stream one way: `sent` to the peer or `received` from it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpaqueBytesLabels {
    pub direction: &'static str,
    pub service: Arc<str>,
    pub peer: Arc<str>,
    pub flow: &'static str,
}

/// What one finished request is counted as.
#[derive(Clone, Debug)]
pub struct RequestRecord<'a> {
    pub direction: Direction,
    pub service: &'a Arc<str>,
    pub route: &'a Arc<str>,
    pub status: u16,
    /// Whether the response is gRPC; its status is then `grpc_status`, as read from its
    /// headers or trailers (`None`: missing or not a number).
    pub grpc: bool,
    pub grpc_status: Option<u32>,
    pub tls: bool,
    pub peer: Option<&'a Arc<str>>,
    pub elapsed: Duration,
}

impl RequestRecord<'_> {
    /// The status and gRPC status labels: fixed sets, whatever the upstream sent.
    fn bounded_codes(&self) -> (StatusLabel, Option<GrpcStatusLabel>) {
        (
            StatusLabel::of(self.status),
            self.grpc.then(|| GrpcStatusLabel::of(self.grpc_status)),
        )
    }
}

/// Why the proxy turned a connection away before any HTTP exchange.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub direction: &'static str,
    pub reason: &'static str,
}

/// A request the authorization policy refused: who called whom, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    pub service: String,
    pub caller: String,
    pub reason: &'static str,
}

/// An inbound request a rate limit refused: the service, the caller (as
/// [`CallerLabels`] names it) and the limit (`total`, `override` or `per_caller`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    pub service: Arc<str>,
    pub caller: Arc<str>,
    pub limit: &'static str,
}

/// An inbound request by caller identity and transport (`mtls` or `plaintext`); an
/// inbound connection looks its caller's counter up once.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    pub caller: Arc<str>,
    pub tls: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<LatencyLabels, Histogram>,
    /// Where a request's series in the two families above are.
    series: SeriesIndex,
    open_connections: Family<DirectionLabel, Gauge>,
    connections: Family<DirectionLabel, Counter>,
    read_bytes: Family<DirectionLabel, Counter>,
    written_bytes: Family<DirectionLabel, Counter>,
    pub discovery_connected: Gauge,
    pub discovery_acks: Counter,
    pub discovery_nacks: Counter,
    /// Requests and connections for a new authority refused because the proxy already
    /// tracked its most.
    pub authorities_refused: Counter,
    pub certificate_expiry: Gauge,
    retries: Family<RetryLabels, Counter>,
    retry_budget_exhausted: Family<ServiceLabel, Counter>,
    ejections: Family<ServiceLabel, Counter>,
    load_shed: Family<ServiceLabel, Counter>,
    pub access_log_dropped: Counter,
    /// TLS handshakes refused, by direction and reason (expired, unknown_ca, ...).
    tls_handshakes_refused: Family<RefusedLabels, Counter>,
    /// Connections closed before any exchange for reasons other than TLS.
    connections_refused: Family<RefusedLabels, Counter>,
    pub authorization_denied: Family<DeniedLabels, Counter>,
    pub inbound_callers: Family<CallerLabels, Counter>,
    pub rate_limited: Family<RateLimitedLabels, Counter>,
    /// Requests of callers a rate limit counted in its shared overflow bucket.
    pub rate_limit_overflow: Counter,
    /// Decides which of the refusals counted here are also logged.
    pub refusal_log: Arc<RefusalLog>,
    opaque_streams: Family<OpaqueLabels, Counter>,
    opaque_bytes: Family<OpaqueBytesLabels, Counter>,
    /// Connections for destinations the mesh does not know, passed through as plain TCP.
    pub tcp_passthrough: Counter,
    faults_injected: Family<FaultLabels, Counter>,
    mirror_requests: Family<MirrorLabels, Counter>,
    pub tap: crate::tap::TapMetrics,
    /// What went to plaintext endpoints, for `/callers` (not a Prometheus family: the
    /// request and stream families already carry `tls` and `peer`).
    pub plaintext_callees: crate::outbound::PlaintextCallees,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("seam");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests handled and their responses, by direction, service, route, status \
             code, gRPC status, TLS and peer identity",
            Family::clone(&requests),
        );
        let request_duration = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "request_duration",
            "Time from request to response headers (to the trailers for gRPC), by direction, \
             service and route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let open_connections = Family::default();
        registry.register(
            "open_connections",
            "TCP connections open now, by direction",
            Family::clone(&open_connections),
        );
        let connections = Family::default();
        registry.register(
            "connections",
            "TCP connections accepted, by direction",
            Family::clone(&connections),
        );
        let read_bytes = Family::default();
        registry.register_with_unit(
            "tcp_read",
            "Bytes read from accepted TCP connections, by direction",
            Unit::Bytes,
            Family::clone(&read_bytes),
        );
        let written_bytes = Family::default();
        registry.register_with_unit(
            "tcp_written",
            "Bytes written to accepted TCP connections, by direction",
            Unit::Bytes,
            Family::clone(&written_bytes),
        );
        let discovery_connected = Gauge::default();
        registry.register(
            "discovery_connected",
            "1 while the discovery stream to the control plane is up",
            discovery_connected.clone(),
        );
        let discovery_acks = Counter::default();
        registry.register(
            "discovery_acks",
            "Service updates from the control plane this proxy accepted",
            discovery_acks.clone(),
        );
        let discovery_nacks = Counter::default();
        registry.register(
            "discovery_nacks",
            "Service updates from the control plane this proxy refused",
            discovery_nacks.clone(),
        );
        let authorities_refused = Counter::default();
        registry.register(
            "authorities_refused",
            "Requests and connections for a new authority refused with 503 because the proxy \
             already tracks its limit of authorities (unused ones are forgotten after \
             --idle-unsubscribe-after)",
            authorities_refused.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the proxy's workload certificate expires (Unix time)",
            certificate_expiry.clone(),
        );
        let retries = Family::default();
        registry.register(
            "retries",
            "Outbound retries sent, by service and the failure they followed",
            Family::clone(&retries),
        );
        let retry_budget_exhausted = Family::default();
        registry.register(
            "retry_budget_exhausted",
            "Outbound retries not sent because the service's retry budget was spent",
            Family::clone(&retry_budget_exhausted),
        );
        let ejections = Family::default();
        registry.register(
            "endpoint_ejections",
            "Times the circuit breaker ejected an endpoint of the service",
            Family::clone(&ejections),
        );
        let load_shed = Family::default();
        registry.register(
            "load_shed",
            "Outbound requests refused at once because every endpoint was at max_concurrent_requests",
            Family::clone(&load_shed),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because stdout could not keep up",
            access_log_dropped.clone(),
        );
        let tls_handshakes_refused = Family::default();
        registry.register(
            "tls_handshakes_refused",
            "TLS handshakes refused, by direction and reason (expired, unknown_ca, ...)",
            Family::clone(&tls_handshakes_refused),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections closed before any exchange for reasons other than TLS, by direction and \
             reason (limit: --max-connections; plaintext; unknown_protocol; timeout and closed: \
             no first byte)",
            Family::clone(&connections_refused),
        );
        let authorization_denied = Family::default();
        registry.register(
            "authorization_denied",
            "Inbound requests refused with 403 by the service's allow list, by caller",
            Family::clone(&authorization_denied),
        );
        let inbound_callers = Family::default();
        registry.register(
            "inbound_requests_by_caller",
            "Inbound requests by caller identity and transport (mtls or plaintext)",
            Family::clone(&inbound_callers),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Inbound requests refused with 429 (gRPC: RESOURCE_EXHAUSTED) by the service's rate \
             limits, by service, caller and limit (total, override or per_caller)",
            Family::clone(&rate_limited),
        );
        let rate_limit_overflow = Counter::default();
        registry.register(
            "rate_limit_overflow",
            "Inbound requests of callers counted in a rate limit's shared overflow bucket, \
             because it already tracked its most callers one by one",
            rate_limit_overflow.clone(),
        );
        let opaque_streams = Family::default();
        registry.register(
            "opaque_streams",
            "Opaque TCP streams (not HTTP, opaque ports, CONNECT tunnels, upgraded \
             connections), by direction, service and peer identity",
            Family::clone(&opaque_streams),
        );
        let opaque_bytes = Family::default();
        registry.register_with_unit(
            "opaque",
            "Bytes of opaque TCP streams, by direction, service, peer identity and flow \
             (sent to the peer or received from it)",
            Unit::Bytes,
            Family::clone(&opaque_bytes),
        );
        let tcp_passthrough = Counter::default();
        registry.register(
            "tcp_passthrough",
            "Outbound connections for destinations the mesh does not know, passed through \
             as plain TCP",
            tcp_passthrough.clone(),
        );
        let faults_injected = Family::default();
        registry.register(
            "faults_injected",
            "Faults injected into outbound requests by the route's fault, by service and kind \
             (delay or abort; a request may get both)",
            Family::clone(&faults_injected),
        );
        let mirror_requests = Family::default();
        registry.register(
            "mirror_requests",
            "Copies of outbound requests for a route's mirror, by mirror service and result \
             (success: answered below 500; failure: 5xx, no connection or no endpoint; timeout; \
             dropped: too many copies in flight; too_large: body over 64 KiB)",
            Family::clone(&mirror_requests),
        );
        let tap = crate::tap::TapMetrics::register(&mut registry);
        Self {
            registry,
            requests,
            request_duration,
            series: SeriesIndex::default(),
            open_connections,
            connections,
            read_bytes,
            written_bytes,
            discovery_connected,
            discovery_acks,
            discovery_nacks,
            authorities_refused,
            certificate_expiry,
            retries,
            retry_budget_exhausted,
            ejections,
            load_shed,
            access_log_dropped,
            tls_handshakes_refused,
            connections_refused,
            authorization_denied,
            inbound_callers,
            rate_limited,
            rate_limit_overflow,
            refusal_log: Arc::default(),
            opaque_streams,
            opaque_bytes,
            tcp_passthrough,
            faults_injected,
            mirror_requests,
            tap,
            plaintext_callees: crate::outbound::PlaintextCallees::default(),
        }
    }

    /// Counts a fault injected into a request to `service`; `kind` is delay or abort.
    pub fn fault_injected(&self, service: &Arc<str>, kind: &'static str) {
        self.faults_injected
            .get_or_create(&FaultLabels {
                service: service.clone(),
                kind,
            })
            .inc();
    }

    /// Counts what became of a copy for the mirror `service`.
    pub fn mirrored(&self, service: &Arc<str>, result: &'static str) {
        self.mirror_requests
            .get_or_create(&MirrorLabels {
                service: service.clone(),
                result,
            })
            .inc();
    }

    /// Counts a new opaque stream; the counters of its bytes received from and sent to
    /// its peer.
    pub fn opaque_flow(&self, flow: &crate::opaque::Flow) -> (Counter, Counter) {
        let labels = OpaqueLabels {
            direction: flow.direction.as_str(),
            service: flow.service.clone(),
            peer: flow.peer.clone(),
        };
        self.opaque_streams.get_or_create(&labels).inc();
        let bytes = |way: &'static str| {
            self.opaque_bytes
                .get_or_create(&OpaqueBytesLabels {
                    direction: labels.direction,
                    service: labels.service.clone(),
                    peer: labels.peer.clone(),
                    flow: way,
                })
                .clone()
        };
        (bytes("received"), bytes("sent"))
    }

    pub fn record_request(&self, record: &RequestRecord<'_>) {
        let (status, grpc_status) = record.bounded_codes();
        self.series.count(record, || Series {
            requests: self
                .requests
                .get_or_create(&RequestLabels {
                    direction: record.direction.as_str(),
                    service: record.service.clone(),
                    route: record.route.clone(),
                    status,
                    grpc_status,
                    tls: if record.tls { "true" } else { "false" },
                    peer: record.peer.cloned(),
                })
                .clone(),
            latency: self
                .request_duration
                .get_or_create(&LatencyLabels {
                    direction: record.direction.as_str(),
                    service: record.service.clone(),
                    route: record.route.clone(),
                })
                .clone(),
        });
    }

    pub fn retried(&self, service: &str, reason: &'static str) {
        self.retries
            .get_or_create(&RetryLabels {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn retry_budget_exhausted(&self, service: &str) {
        self.retry_budget_exhausted
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc();
    }

    /// Counted per service only: endpoint addresses would make the label set grow with
    /// every rescheduled instance. `/config` names the endpoints ejected now.
    pub fn ejected(&self, service: &str) {
        self.ejections
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc();
    }

    pub fn load_shed(&self, service: &str) {
        self.load_shed
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc();
    }

    /// One direction's connection series, looked up once for a listener rather than per
    /// connection (each lookup hashes the label set).
    pub fn connection_metrics(&self, direction: Direction) -> ConnectionMetrics {
        let label = DirectionLabel {
            direction: direction.as_str(),
        };
        ConnectionMetrics {
            opened: self.connections.get_or_create(&label).clone(),
            open: self.open_connections.get_or_create(&label).clone(),
            read_bytes: self.read_bytes.get_or_create(&label).clone(),
            written_bytes: self.written_bytes.get_or_create(&label).clone(),
        }
    }

    /// A permit for a new connection on a listener, or `None` (counted and logged) when
    /// the listener is at its `--max-connections`.
    pub fn admit(
        &self,
        limit: &crate::server::ConnectionLimit,
        direction: Direction,
        peer: std::net::SocketAddr,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = limit.admit();
        if permit.is_none() && self.connection_refused(direction, "limit") {
            tracing::warn!(%peer, direction = direction.as_str(), "closed a connection: the listener is at --max-connections");
        }
        permit
    }

    /// Counts a connection closed before any exchange for a reason other than TLS (the
    /// listener's limit, plaintext where only mTLS is allowed, an unknown protocol, no
    /// first byte). Says whether it may also be logged, one by one (see `RefusalLog`).
    #[must_use = "the answer says whether to log the refusal"]
    pub fn connection_refused(&self, direction: Direction, reason: &'static str) -> bool {
        self.connections_refused
            .get_or_create(&RefusedLabels {
                direction: direction.as_str(),
                reason,
            })
            .inc();
        self.refusal_log.admit(reason)
    }

    /// Counts a refused TLS handshake; says whether it may also be logged.
    #[must_use = "the answer says whether to log the refusal"]
    pub fn tls_refused(&self, direction: Direction, reason: &'static str) -> bool {
        self.tls_handshakes_refused
            .get_or_create(&RefusedLabels {
                direction: direction.as_str(),
                reason,
            })
            .inc();
        self.refusal_log.admit(reason)
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The series every connection of one direction counts into.
pub struct ConnectionMetrics {
    opened: Counter,
    open: Gauge,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
}

impl ConnectionMetrics {
    /// Counts a connection as open until the guard is dropped.
    pub fn opened(&self) -> ConnectionGuard {
        self.opened.inc();
        self.open.inc();
        ConnectionGuard(self.open.clone())
    }
}

pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
