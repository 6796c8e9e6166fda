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
    fn as_str(self) -> &'static str {
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub service: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service: String,
    pub endpoint: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<DirectionLabel, Histogram>,
    open_connections: Family<DirectionLabel, Gauge>,
    connections: Family<DirectionLabel, Counter>,
    pub discovery_connected: Gauge,
    pub certificate_expiry: Gauge,
    retries: Family<RetryLabels, Counter>,
    retry_budget_exhausted: Family<ServiceLabel, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    load_shed: Family<ServiceLabel, Counter>,
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
            "Times the circuit breaker ejected an endpoint, by service and endpoint",
            Family::clone(&ejections),
        );
        let load_shed = Family::default();
        registry.register(
            "load_shed",
            "Outbound requests refused at once because every endpoint was at max_concurrent_requests",
            Family::clone(&load_shed),
        );
        Self {
            registry,
            requests,
            request_duration,
            open_connections,
            connections,
            discovery_connected,
            certificate_expiry,
            retries,
            retry_budget_exhausted,
            ejections,
            load_shed,
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

    pub fn ejected(&self, service: &str, endpoint: std::net::SocketAddr) {
        self.ejections
            .get_or_create(&EndpointLabels {
                service: service.to_owned(),
                endpoint: endpoint.to_string(),
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
