//! How requests to a service are handled, in the proxy's own validated types: the
//! policy (timeouts, retries, circuit breaking, load shedding, balancing, and the faults
//! and mirrors of `traffic`), the routes
//! that pick a policy and a weighted set of backends for a request, and the targets
//! (one service's endpoints) the balancer chooses among, with the balancer's per-snapshot
//! cache of their state. Data and matching; no I/O.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Request};
use seam_proto::{SpiffeId, defaults};
use tower::retry::budget::TpsBudget;

use super::Endpoint;
use super::endpoints::EndpointState;
use super::rate_limit::{Limiter, RateLimit};
use super::traffic::{Fault, Mirror};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The whole request, retries included, until response headers.
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub circuit_breaker: BreakerPolicy,
    /// Per endpoint.
    pub max_concurrent_requests: u32,
    pub load_balancer: LoadBalancer,
    /// Delays and aborts injected into a share of requests (`None`: none).
    pub fault: Option<Fault>,
    /// Where a share of requests is copied (`None`: nowhere).
    pub mirror: Option<Mirror>,
    /// This instance's share of the rate limits (enforced by the inbound). On a route:
    /// only the route's own; `None` there means the service's applies.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub budget_percent: u32,
    pub non_idempotent: bool,
}

/// Which failures a retry may follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub server_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub unavailable: bool,
    /// A 429, retried after its `retry-after` when that fits.
    pub rate_limited: bool,
}

impl RetryOn {
    /// The conditions `seam_proto::defaults::RETRY_ON` names, so the proxy's default is
    /// the control plane's.
    pub fn defaults() -> Self {
        let mut on = Self::default();
        for name in defaults::RETRY_ON {
            match name {
                "5xx" => on.server_error = true,
                "connect-failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "unavailable" => on.unavailable = true,
                "rate-limited" => on.rate_limited = true,
                other => tracing::error!(condition = other, "unknown default retry condition"),
            }
        }
        on
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency.
    Ewma,
    RoundRobin,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Some(defaults::TIMEOUT),
            retries: RetryPolicy {
                attempts: defaults::RETRY_ATTEMPTS,
                per_try_timeout: None,
                on: RetryOn::defaults(),
                budget_percent: defaults::RETRY_BUDGET_PERCENT,
                non_idempotent: false,
            },
            circuit_breaker: BreakerPolicy {
                consecutive_failures: defaults::CONSECUTIVE_FAILURES,
                base_ejection_time: defaults::BASE_EJECTION_TIME,
                max_ejection_percent: defaults::MAX_EJECTION_PERCENT,
            },
            max_concurrent_requests: defaults::MAX_CONCURRENT_REQUESTS,
            load_balancer: LoadBalancer::Ewma,
            fault: None,
            mirror: None,
            rate_limit: None,
        }
    }
}

/// One service's endpoints as a place to send a request, with its round-robin cursor.
#[derive(Debug)]
pub struct Target {
    pub service: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    cursor: AtomicUsize,
    /// The balancer's state of each endpoint (kept by address across snapshots, see
    /// `endpoints::EndpointStates`), looked up on this snapshot's first request rather
    /// than on every one.
    pub endpoint_states: OnceLock<Arc<[Arc<EndpointState>]>>,
}

impl Target {
    pub fn new(service: Arc<str>, endpoints: Vec<Endpoint>) -> Self {
        Self {
            service,
            endpoints,
            cursor: AtomicUsize::new(0),
            endpoint_states: OnceLock::new(),
        }
    }

    /// The next position in round-robin order (callers take it modulo their list).
    pub fn next_turn(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct WeightedBackend {
    pub weight: u32,
    pub target: Arc<Target>,
}

/// A route: which requests it takes, how they are handled, where they go.
#[derive(Debug)]
pub struct Route {
    /// How metrics and logs name the route (see [`RouteMatch::label`]).
    pub label: Arc<str>,
    pub route_match: RouteMatch,
    pub policy: Policy,
    /// Never empty, and the weights never sum to 0 (conversion makes sure).
    pub backends: Vec<WeightedBackend>,
    /// Who may call requests this route takes, replacing the service's allow list
    /// (enforced by the service's own proxies on inbound requests).
    pub allow: Option<Vec<SpiffeId>>,
    /// The buckets of `policy.rate_limit`, looked up (and kept across snapshots, see
    /// `rate_limit::Limiters`) on this snapshot's first limited request.
    pub rate_limiter: OnceLock<Arc<Limiter>>,
    /// The service's retry budget (kept across snapshots, see `outbound::retry::Budgets`),
    /// looked up on this snapshot's first request rather than on every one.
    pub retry_budget: OnceLock<Arc<TpsBudget>>,
}

impl Route {
    /// A route as configured; empty `backends` mean the service's own endpoints, which
    /// [`super::Service::with_routes`] fills in.
    pub fn new(
        route_match: RouteMatch,
        policy: Policy,
        backends: Vec<WeightedBackend>,
        allow: Option<Vec<SpiffeId>>,
    ) -> Self {
        Self {
            label: route_match.label().into(),
            route_match,
            policy,
            backends,
            allow,
            rate_limiter: OnceLock::new(),
            retry_budget: OnceLock::new(),
        }
    }

    /// The backend for a draw in `0..total_weight()`.
    pub fn backend_at(&self, draw: u64) -> &Arc<Target> {
        let mut left = draw;
        for backend in &self.backends {
            let weight = u64::from(backend.weight);
            if left < weight {
                return &backend.target;
            }
            left -= weight;
        }
        // Unreachable for draws below the total; the last backend is a safe answer.
        &self.backends[self.backends.len() - 1].target
    }

    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }
}

/// Every condition that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

/// The label of the route that takes every request the others leave.
pub const DEFAULT_ROUTE: &str = "default";

/// [`DEFAULT_ROUTE`] as the shared string request labels hold.
pub static DEFAULT_ROUTE_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| DEFAULT_ROUTE.into());

impl RouteMatch {
    /// A short, stable name for metrics and logs, made from the conditions: `GET /v2*`
    /// (a prefix), `/health` (exact), `[x-canary]` (header names only; their values may
    /// be anything). Routes come from the mesh file, so the set of labels stays small.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(method) = &self.method {
            parts.push(method.to_string());
        }
        match &self.path {
            Some(PathMatch::Prefix(prefix)) => parts.push(format!("{prefix}*")),
            Some(PathMatch::Exact(exact)) => parts.push(exact.clone()),
            None => {}
        }
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
            parts.push(format!("[{}]", names.join(",")));
        }
        if parts.is_empty() {
            DEFAULT_ROUTE.to_owned()
        } else {
            parts.join(" ")
        }
    }

    pub fn matches<B>(&self, request: &Request<B>) -> bool {
        let path = request.uri().path();
        let path_holds = match &self.path {
            None => true,
            Some(PathMatch::Exact(exact)) => path == exact,
            Some(PathMatch::Prefix(prefix)) => prefix_matches(prefix, path),
        };
        path_holds
            && self
                .method
                .as_ref()
                .is_none_or(|method| method == request.method())
            && self
                .headers
                .iter()
                .all(|(name, value)| request.headers().get_all(name).iter().any(|v| v == value))
    }
}

/// `/v2` takes `/v2`, `/v2/` and `/v2/x`, but not `/v20`; a prefix ending in `/` takes
/// everything under it.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_retry_condition_is_one_the_proxy_knows() {
        let on = RetryOn::defaults();
        let set = [
            on.server_error,
            on.connect_failure,
            on.reset,
            on.unavailable,
            on.rate_limited,
        ];
        assert_eq!(
            set.iter().filter(|flag| **flag).count(),
            defaults::RETRY_ON.len(),
            "{on:?} from {:?}",
            defaults::RETRY_ON
        );
    }

    #[test]
    fn labels_name_the_conditions_and_never_header_values() {
        let header = |name: &str| {
            (
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("secret"),
            )
        };
        let cases = [
            (RouteMatch::default(), "default"),
            (
                RouteMatch {
                    path: Some(PathMatch::Prefix("/v2".into())),
                    method: Some(Method::GET),
                    headers: vec![header("x-canary")],
                },
                "GET /v2* [x-canary]",
            ),
            (
                RouteMatch {
                    path: Some(PathMatch::Exact("/health".into())),
                    ..RouteMatch::default()
                },
                "/health",
            ),
            (
                RouteMatch {
                    headers: vec![header("x-a"), header("x-b")],
                    ..RouteMatch::default()
                },
                "[x-a,x-b]",
            ),
        ];
        for (route_match, label) in cases {
            assert_eq!(route_match.label(), label);
        }
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn every_given_condition_must_hold() {
        let canary = RouteMatch {
            path: Some(PathMatch::Prefix("/v2".into())),
            method: Some(Method::GET),
            headers: vec![(
                HeaderName::from_static("x-canary"),
                HeaderValue::from_static("1"),
            )],
        };
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("GET", "/v2/items", &[("x-canary", "1")], true),
            ("GET", "/v2", &[("x-canary", "1")], true),
            ("GET", "/v2?q=1", &[("x-canary", "1")], true),
            ("GET", "/v20", &[("x-canary", "1")], false),
            ("POST", "/v2/items", &[("x-canary", "1")], false),
            ("GET", "/v2/items", &[("x-canary", "0")], false),
            ("GET", "/v2/items", &[], false),
            ("GET", "/v1/items", &[("x-canary", "1")], false),
        ];
        for (method, path, headers, expected) in cases {
            assert_eq!(
                canary.matches(&request(method, path, headers)),
                *expected,
                "{method} {path} {headers:?}"
            );
        }
        let exact = RouteMatch {
            path: Some(PathMatch::Exact("/health".into())),
            ..RouteMatch::default()
        };
        assert!(exact.matches(&request("POST", "/health", &[])));
        assert!(!exact.matches(&request("GET", "/health/x", &[])));
        assert!(RouteMatch::default().matches(&request("PATCH", "/anything", &[])));
        assert!(prefix_matches("/", "/x") && prefix_matches("/a/", "/a/b"));
    }

    #[test]
    fn weighted_draws_map_onto_backends_in_proportion() {
        let target = |name: &str| Arc::new(Target::new(name.into(), Vec::new()));
        let route = Route::new(
            RouteMatch::default(),
            Policy::default(),
            vec![
                WeightedBackend {
                    weight: 10,
                    target: target("v2"),
                },
                WeightedBackend {
                    weight: 0,
                    target: target("never"),
                },
                WeightedBackend {
                    weight: 90,
                    target: target("v1"),
                },
            ],
            None,
        );
        assert_eq!(route.total_weight(), 100);
        let mut counts = std::collections::BTreeMap::new();
        for draw in 0..route.total_weight() {
            *counts
                .entry(route.backend_at(draw).service.as_ref())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.get("v2"), Some(&10));
        assert_eq!(counts.get("v1"), Some(&90));
        assert_eq!(counts.get("never"), None);
    }
}
