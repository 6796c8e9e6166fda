//! Turning the `seam.v1` policy and routes of a service update into the proxy's own
//! [`Policy`] and routes, refusing anything out of range with a reason for the NACK.
//! An update with no policy (an older control plane) gets every default.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use seam_proto::defaults;
use seam_proto::v1;

use super::convert::InvalidUpdate;
use super::traffic::{fault_from_proto, mirror_from_proto};
use crate::state::policy::{
    BreakerPolicy, LoadBalancer, PathMatch, Policy, RetryOn, RetryPolicy, RouteMatch,
};

pub fn policy_from_proto(policy: Option<v1::Policy>) -> Result<Policy, InvalidUpdate> {
    let Some(policy) = policy else {
        return Ok(Policy::default());
    };
    let invalid = |reason: String| InvalidUpdate::Policy(reason);
    let defaults = Policy::default();
    let retries = match policy.retries {
        None => defaults.retries,
        Some(retries) => {
            if retries.attempts > defaults::MAX_RETRY_ATTEMPTS {
                return Err(invalid(format!(
                    "retries.attempts {} is over {}",
                    retries.attempts,
                    defaults::MAX_RETRY_ATTEMPTS
                )));
            }
            let mut on = RetryOn::default();
            for condition in retries.on {
                match v1::RetryOn::try_from(condition) {
                    Ok(v1::RetryOn::RetryOn5xx) => on.server_error = true,
                    Ok(v1::RetryOn::ConnectFailure) => on.connect_failure = true,
                    Ok(v1::RetryOn::Reset) => on.reset = true,
                    Ok(v1::RetryOn::Unavailable) => on.unavailable = true,
                    _ => return Err(invalid(format!("unknown retries.on value {condition}"))),
                }
            }
            RetryPolicy {
                attempts: retries.attempts,
                per_try_timeout: optional_millis(retries.per_try_timeout_ms),
                on,
                budget_percent: percent(retries.budget_percent, "retries.budget_percent")?,
                non_idempotent: retries.non_idempotent,
            }
        }
    };
    let circuit_breaker = match policy.circuit_breaker {
        None => defaults.circuit_breaker,
        Some(breaker) => {
            if breaker.consecutive_failures == 0 {
                return Err(invalid(
                    "circuit_breaker.consecutive_failures must be at least 1".into(),
                ));
            }
            BreakerPolicy {
                consecutive_failures: breaker.consecutive_failures,
                base_ejection_time: optional_millis(breaker.base_ejection_time_ms).ok_or_else(
                    || invalid("circuit_breaker.base_ejection_time must be more than 0".into()),
                )?,
                max_ejection_percent: percent(
                    breaker.max_ejection_percent,
                    "circuit_breaker.max_ejection_percent",
                )?,
            }
        }
    };
    if policy.max_concurrent_requests == 0 {
        return Err(invalid("max_concurrent_requests must be at least 1".into()));
    }
    let load_balancer = match v1::LoadBalancer::try_from(policy.load_balancer) {
        Ok(v1::LoadBalancer::Ewma | v1::LoadBalancer::Unspecified) => LoadBalancer::Ewma,
        Ok(v1::LoadBalancer::RoundRobin) => LoadBalancer::RoundRobin,
        Err(_) => {
            return Err(invalid(format!(
                "unknown load_balancer {}",
                policy.load_balancer
            )));
        }
    };
    Ok(Policy {
        timeout: optional_millis(policy.timeout_ms),
        retries,
        circuit_breaker,
        max_concurrent_requests: policy.max_concurrent_requests,
        load_balancer,
        fault: policy.fault.map(fault_from_proto).transpose()?,
        mirror: policy.mirror.map(mirror_from_proto).transpose()?,
    })
}

pub fn match_from_proto(route_match: Option<v1::RouteMatch>) -> Result<RouteMatch, InvalidUpdate> {
    let Some(route_match) = route_match else {
        return Ok(RouteMatch::default());
    };
    let invalid = |reason: String| InvalidUpdate::Route(reason);
    let path = match (
        route_match.path_prefix.is_empty(),
        route_match.path.is_empty(),
    ) {
        (true, true) => None,
        (false, true) => Some(PathMatch::Prefix(route_match.path_prefix)),
        (true, false) => Some(PathMatch::Exact(route_match.path)),
        (false, false) => return Err(invalid("both path_prefix and path are set".into())),
    };
    if let Some(PathMatch::Prefix(path) | PathMatch::Exact(path)) = &path
        && !path.starts_with('/')
    {
        return Err(invalid(format!("path {path:?} does not start with '/'")));
    }
    let method = if route_match.method.is_empty() {
        None
    } else {
        Some(
            Method::from_bytes(route_match.method.as_bytes())
                .map_err(|_| invalid(format!("{:?} is not a method", route_match.method)))?,
        )
    };
    let headers = route_match
        .headers
        .into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| invalid(format!("header {name} has an invalid value")))?;
            Ok((header, value))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteMatch {
        path,
        method,
        headers,
    })
}

fn optional_millis(millis: u64) -> Option<Duration> {
    (millis > 0).then(|| Duration::from_millis(millis))
}

fn percent(value: u32, key: &str) -> Result<u32, InvalidUpdate> {
    if value > 100 {
        Err(InvalidUpdate::Policy(format!("{key} {value} is over 100")))
    } else {
        Ok(value)
    }
}
