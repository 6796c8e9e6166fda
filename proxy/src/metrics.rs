//! The proxy's Prometheus metrics: one registry, every name prefixed `seam_`. Labels are
//! bounded: directions and status codes are fixed sets, services are the ones in the mesh.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub service: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
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

/// An inbound request by caller identity and transport (`mtls` or `plaintext`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    pub caller: String,
    pub tls: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<DirectionLabel, Histogram>,
    open_connections: Family<DirectionLabel, Gauge>,
    connections: Family<DirectionLabel, Counter>,
    pub discovery_connected: Gauge,
    pub certificate_expiry: Gauge,
    /// TLS handshakes refused, by direction and reason (expired, unknown_ca, ...).
    pub tls_refused: Family<RefusedLabels, Counter>,
    /// Connections closed at once because a listener was at its limit.
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub authorization_denied: Family<DeniedLabels, Counter>,
    pub inbound_callers: Family<CallerLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("seam");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests handled, by direction, service and status code",
            Family::clone(&requests),
        );
        let request_duration = Family::<DirectionLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by direction",
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
        let discovery_connected = Gauge::default();
        registry.register(
            "discovery_connected",
            "1 while the discovery stream to the control plane is up",
            discovery_connected.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the proxy's workload certificate expires (Unix time)",
            certificate_expiry.clone(),
        );
        let tls_refused = Family::default();
        registry.register(
            "tls_handshakes_refused",
            "TLS handshakes refused, by direction and reason",
            Family::clone(&tls_refused),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections closed on accept, by direction and reason (limit: --max-connections)",
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
        Self {
            registry,
            requests,
            request_duration,
            open_connections,
            connections,
            discovery_connected,
            certificate_expiry,
            tls_refused,
            connections_refused,
            authorization_denied,
            inbound_callers,
        }
    }

    pub fn record_request(
        &self,
        direction: Direction,
        service: &str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                direction: direction.as_str(),
                service: service.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&DirectionLabel {
                direction: direction.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection_opened(&self, direction: Direction) -> ConnectionGuard {
        let label = DirectionLabel {
            direction: direction.as_str(),
        };
        self.connections.get_or_create(&label).inc();
        let gauge = self.open_connections.get_or_create(&label).clone();
        gauge.inc();
        ConnectionGuard(gauge)
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
        if permit.is_none() {
            self.connections_refused
                .get_or_create(&RefusedLabels {
                    direction: direction.as_str(),
                    reason: "limit",
                })
                .inc();
            tracing::warn!(%peer, direction = direction.as_str(), "closed a connection: the listener is at --max-connections");
        }
        permit
    }

    /// Counts a refused TLS handshake.
    pub fn count_tls_refusal(&self, direction: Direction, reason: &'static str) {
        self.tls_refused
            .get_or_create(&RefusedLabels {
                direction: direction.as_str(),
                reason,
            })
            .inc();
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

pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
