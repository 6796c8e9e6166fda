//! The control plane's Prometheus metrics: one registry, every name prefixed `seam_`,
//! units in the name and counters ending in `_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub mesh_reloads: Family<ResultLabel, Counter>,
    pub mesh_version: Gauge,
    pub certificate_requests: Family<ResultLabel, Counter>,
    pub connected_proxies: Gauge,
    pub discovery_updates: Counter,
    pub discovery_nacks: Counter,
    pub discovery_acks: Counter,
    pub discovery_stalled: Counter,
    pub discovery_push_duration: Histogram,
    pub handshakes_refused: Counter,
    pub dns_resolutions: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("seam");
        let mesh_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "mesh_reloads",
            "Mesh file reloads, by result (accepted or rejected)",
            mesh_reloads.clone(),
        );
        let mesh_version = Gauge::default();
        registry.register(
            "mesh_version",
            "Version of the mesh model in force",
            mesh_version.clone(),
        );
        let certificate_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "certificate_requests",
            "Certificate signing requests, by result (issued or rejected)",
            certificate_requests.clone(),
        );
        let connected_proxies = Gauge::default();
        registry.register(
            "connected_proxies",
            "Proxies with an open discovery stream",
            connected_proxies.clone(),
        );
        let discovery_updates = Counter::default();
        registry.register(
            "discovery_updates",
            "Service updates pushed to proxies",
            discovery_updates.clone(),
        );
        let discovery_nacks = Counter::default();
        registry.register(
            "discovery_nacks",
            "Service updates proxies refused",
            discovery_nacks.clone(),
        );
        let discovery_acks = Counter::default();
        registry.register(
            "discovery_acks",
            "Service updates proxies acknowledged",
            discovery_acks.clone(),
        );
        let discovery_stalled = Counter::default();
        registry.register(
            "discovery_stalled_streams",
            "Discovery streams ended because the proxy read no update for 30 s",
            discovery_stalled.clone(),
        );
        // 0.1 ms to ~3 s: resolving every watched authority once and marking its watchers.
        let discovery_push_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "discovery_push_duration",
            "Time to resolve one model change for every proxy (each watched authority once) \
             and mark the proxies whose subscriptions changed",
            Unit::Seconds,
            discovery_push_duration.clone(),
        );
        let handshakes_refused = Counter::default();
        registry.register(
            "grpc_handshakes_refused",
            "TLS handshakes on the gRPC listener that failed or timed out (each is logged at debug)",
            handshakes_refused.clone(),
        );
        let dns_resolutions = Family::<ResultLabel, Counter>::default();
        registry.register(
            "dns_resolutions",
            "Lookups of the mesh file's dns: endpoint names, by result (resolved, \
             no_addresses, failed)",
            dns_resolutions.clone(),
        );
        Self {
            registry,
            mesh_reloads,
            mesh_version,
            certificate_requests,
            connected_proxies,
            discovery_updates,
            discovery_nacks,
            discovery_acks,
            discovery_stalled,
            discovery_push_duration,
            handshakes_refused,
            dns_resolutions,
        }
    }

    /// The Prometheus text exposition of every metric.
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
