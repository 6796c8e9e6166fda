//! The mesh model as JSON, for the admin API: `/mesh` shows each service's endpoints
//! ([`endpoints`]) and the dashboard's `/api/services/NAME` adds the routes, policy and
//! allow list the control plane pushes for it ([`pushed`]), defaults filled in, exactly
//! as the proxies receive them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::model::{
    Authorization, LoadBalancer, PathMatch, Policy, RetryOn, RouteModel, ServiceModel,
};

/// A service's endpoints as `/mesh` lists them: resolved addresses, and the `dns:`
/// entries as written.
pub fn endpoints(service: &ServiceModel) -> Value {
    let endpoints: Vec<String> = service
        .endpoints
        .iter()
        .map(|endpoint| endpoint.address.to_string())
        .collect();
    let by_name: Vec<String> = service
        .named_endpoints
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({ "endpoints": endpoints, "dns_endpoints": by_name })
}

/// What the control plane pushes for a service besides its endpoints.
pub fn pushed(service: &ServiceModel) -> Value {
    json!({
        "policy": policy(&service.policy),
        "routes": service.routes.iter().map(route).collect::<Vec<_>>(),
        "authorization": authorization(&service.authorization),
        "opaque_ports": service.opaque_ports,
        "addresses": service.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn policy(policy: &Policy) -> Value {
    json!({
        "timeout_ms": policy.timeout.map(millis),
        "retries": {
            "attempts": policy.retries.attempts,
            "per_try_timeout_ms": policy.retries.per_try_timeout.map(millis),
            "on": policy.retries.on.iter().map(|on| retry_on(*on)).collect::<Vec<_>>(),
            "budget_percent": policy.retries.budget_percent,
            "non_idempotent": policy.retries.non_idempotent,
        },
        "circuit_breaker": {
            "consecutive_failures": policy.circuit_breaker.consecutive_failures,
            "base_ejection_time_ms": millis(policy.circuit_breaker.base_ejection_time),
            "max_ejection_percent": policy.circuit_breaker.max_ejection_percent,
        },
        "max_concurrent_requests": policy.max_concurrent_requests,
        "load_balancer": match policy.load_balancer {
            LoadBalancer::Ewma => "ewma",
            LoadBalancer::RoundRobin => "round_robin",
        },
    })
}

/// The mesh file's spelling.
fn retry_on(on: RetryOn) -> &'static str {
    match on {
        RetryOn::ServerError => "5xx",
        RetryOn::ConnectFailure => "connect-failure",
        RetryOn::Reset => "reset",
        RetryOn::Unavailable => "unavailable",
    }
}

fn route(route: &RouteModel) -> Value {
    let path = match &route.route_match.path {
        Some(PathMatch::Prefix(prefix)) => json!({ "prefix": prefix }),
        Some(PathMatch::Exact(exact)) => json!({ "exact": exact }),
        None => Value::Null,
    };
    json!({
        "match": {
            "path": path,
            "method": route.route_match.method,
            "headers": route.route_match.headers,
        },
        "policy": policy(&route.policy),
        "backends": route
            .backends
            .iter()
            .map(|backend| json!({ "service": backend.service, "weight": backend.weight }))
            .collect::<Vec<_>>(),
        "allow": route.allow.as_ref().map(|ids| ids.iter().map(ToString::to_string).collect::<Vec<_>>()),
    })
}

fn authorization(authorization: &Authorization) -> Value {
    json!({
        "allow": authorization
            .allow
            .as_ref()
            .map(|ids| ids.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "allow_plaintext": authorization.allow_plaintext,
    })
}
