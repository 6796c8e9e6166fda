//! How requests to a service are handled, as the model holds it: timeouts, retries,
//! circuit breaking, load shedding, balancing, and the routes that override them for some
//! requests and may split traffic across services, and the faults and mirrors they carry
//! (`traffic`). Every field has its default filled in
//! (from `seam_proto::defaults`), so what the proxy receives is complete.

use std::collections::BTreeMap;
use std::time::Duration;

use seam_proto::{SpiffeId, defaults};

use super::traffic::{Fault, MirrorRef};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `None`: no whole-request timeout.
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub circuit_breaker: CircuitBreaker,
    pub max_concurrent_requests: u32,
    pub load_balancer: LoadBalancer,
    /// `None`: no fault injected.
    pub fault: Option<Fault>,
    /// `None`: nothing mirrored.
    pub mirror: Option<MirrorRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: Vec<RetryOn>,
    pub budget_percent: u32,
    pub non_idempotent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ServerError,
    ConnectFailure,
    Reset,
    Unavailable,
}

impl RetryOn {
    /// Reads a mesh file spelling (`5xx`, `connect-failure`, `reset`, `unavailable`).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "5xx" => Self::ServerError,
            "connect-failure" => Self::ConnectFailure,
            "reset" => Self::Reset,
            "unavailable" => Self::Unavailable,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancer {
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
                on: defaults::RETRY_ON
                    .iter()
                    .filter_map(|on| RetryOn::parse(on))
                    .collect(),
                budget_percent: defaults::RETRY_BUDGET_PERCENT,
                non_idempotent: false,
            },
            circuit_breaker: CircuitBreaker {
                consecutive_failures: defaults::CONSECUTIVE_FAILURES,
                base_ejection_time: defaults::BASE_EJECTION_TIME,
                max_ejection_percent: defaults::MAX_EJECTION_PERCENT,
            },
            max_concurrent_requests: defaults::MAX_CONCURRENT_REQUESTS,
            load_balancer: LoadBalancer::Ewma,
            fault: None,
            mirror: None,
        }
    }
}

/// A route of a service, as written (backends by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteModel {
    pub route_match: RouteMatch,
    pub policy: Policy,
    /// Empty: the service's own endpoints.
    pub backends: Vec<BackendRef>,
    /// Who may call requests this route takes, in place of the service's `allow`.
    pub allow: Option<Vec<SpiffeId>>,
}

/// Every condition that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<String>,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    pub service: String,
    pub weight: u32,
}
