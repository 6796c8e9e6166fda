//! The mesh model as JSON, for the admin API: `/mesh` shows each service's endpoints,
//! rate limits and request-id setting ([`mesh_entry`]) and the dashboard's `/api/services/NAME` adds the routes, policy and
//! allow list the control plane pushes for it ([`pushed`]), defaults filled in, exactly
//! as the proxies receive them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::model::{
    AbortAnswer, Authorization, Fault, LoadBalancer, MilliRate, MirrorRef, PathMatch, Policy,
    RateLimit, RetryOn, RouteModel, ServiceModel,
};

/// A service's endpoints as `/mesh` lists them: resolved addresses, the `dns:` entries
/// as written, and the endpoints reached in plaintext (Kubernetes pods without a Seam
/// sidecar).
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
    let plaintext: Vec<String> = service
        .endpoints
        .iter()
        .filter(|endpoint| endpoint.identity.is_none())
        .map(|endpoint| endpoint.address.to_string())
        .collect();
    json!({
        "endpoints": endpoints,
        "dns_endpoints": by_name,
        "plaintext_endpoints": plaintext,
    })
}

/// A service as `/mesh` lists it: its endpoints, its rate limits (the service's and each
/// route's own), and whether its proxies give requests an `x-request-id`.
pub fn mesh_entry(service: &ServiceModel) -> Value {
    let mut entry = endpoints(service);
    let routes: Vec<Value> = service
        .routes
        .iter()
        .map(|route| {
            json!({
                "match": route_match(route),
                "rate_limit": route.policy.rate_limit.as_ref().map(rate_limit),
                "own_rate_limit": route.own_rate_limit,
            })
        })
        .collect();
    entry["rate_limit"] = json!(service.policy.rate_limit.as_ref().map(rate_limit));
    entry["routes"] = json!(routes);
    entry["request_id"] = json!(!service.request_id_off);
    entry
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
        "rate_limit": policy.rate_limit.as_ref().map(rate_limit),
        "fault": policy.fault.as_ref().map(fault),
        "mirror": policy.mirror.as_ref().map(mirror),
    })
}

/// A rate limit as the mesh file gives it: whole-service requests per second (each
/// instance enforces its share).
fn rate_limit(limit: &RateLimit) -> Value {
    let rate = |rate: MilliRate| rate.0 as f64 / 1000.0;
    json!({
        "requests_per_second": limit.total.map(rate),
        "per_caller": limit.per_caller.map(rate),
        "burst": limit.burst,
        "overrides": limit.overrides.iter().map(|entry| json!({
            "callers": entry.callers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "requests_per_second": rate(entry.rate),
            "burst": entry.burst,
        })).collect::<Vec<_>>(),
    })
}

fn fault(fault: &Fault) -> Value {
    json!({
        "delay": fault.delay.as_ref().map(|delay| json!({
            "fixed_ms": millis(delay.fixed),
            "percent": delay.percent.value(),
        })),
        "abort": fault.abort.as_ref().map(|abort| {
            let (key, status) = match abort.answer {
                AbortAnswer::Http(status) => ("status", u32::from(status)),
                AbortAnswer::Grpc(status) => ("grpc_status", status),
            };
            json!({ key: status, "percent": abort.percent.value() })
        }),
    })
}

fn mirror(mirror: &MirrorRef) -> Value {
    json!({ "service": mirror.service, "percent": mirror.percent.value() })
}

/// The mesh file's spelling.
fn retry_on(on: RetryOn) -> &'static str {
    match on {
        RetryOn::ServerError => "5xx",
        RetryOn::ConnectFailure => "connect-failure",
        RetryOn::Reset => "reset",
        RetryOn::Unavailable => "unavailable",
        RetryOn::RateLimited => "rate-limited",
    }
}

fn route_match(route: &RouteModel) -> Value {
    let path = match &route.route_match.path {
        Some(PathMatch::Prefix(prefix)) => json!({ "prefix": prefix }),
        Some(PathMatch::Exact(exact)) => json!({ "exact": exact }),
        None => Value::Null,
    };
    json!({
        "path": path,
        "method": route.route_match.method,
        "headers": route.route_match.headers,
    })
}

fn route(route: &RouteModel) -> Value {
    json!({
        "match": route_match(route),
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
