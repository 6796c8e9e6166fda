//! The request-handling keys of a service or route in the mesh file (`timeout`,
//! `retries`, `circuit_breaker`, `max_concurrent_requests`, `load_balancer`, `routes`,
//! and `fault` and `mirror`, whose shapes are in `traffic`):
//! their YAML shape, and their reading into the model's [`Policy`] and [`RouteModel`].
//! A route starts from its service's policy and overrides only the keys it gives.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::{HeaderName, Method};
use seam_proto::defaults;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::traffic::{self, FaultSpec, MirrorSpec};
use crate::model::{BackendRef, LoadBalancer, PathMatch, Policy, RetryOn, RouteMatch, RouteModel};

/// A refusal and where in the file it points.
pub type Refusal = (Location, String);

/// The policy keys as written; absent keys keep the value they override.
#[derive(Default)]
pub struct PolicyFields {
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<RetriesSpec>>,
    pub circuit_breaker: Option<Spanned<BreakerSpec>>,
    pub max_concurrent_requests: Option<Spanned<u32>>,
    pub load_balancer: Option<Spanned<String>>,
    pub fault: Option<Spanned<FaultSpec>>,
    pub mirror: Option<Spanned<MirrorSpec>>,
}

/// The service whose keys are read, and every service of the file (which a mirror
/// must name).
pub struct Scope<'a> {
    pub service: &'a str,
    pub services: &'a HashSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    attempts: Option<Spanned<u32>>,
    per_try_timeout: Option<Spanned<String>>,
    on: Option<Vec<Spanned<String>>>,
    budget_percent: Option<Spanned<u32>>,
    non_idempotent: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    consecutive_failures: Option<Spanned<u32>>,
    base_ejection_time: Option<Spanned<String>>,
    max_ejection_percent: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(rename = "match", default)]
    route_match: Option<Spanned<MatchSpec>>,
    #[serde(default)]
    backends: Vec<Spanned<BackendSpec>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<RetriesSpec>>,
    circuit_breaker: Option<Spanned<BreakerSpec>>,
    max_concurrent_requests: Option<Spanned<u32>>,
    load_balancer: Option<Spanned<String>>,
    fault: Option<Spanned<FaultSpec>>,
    mirror: Option<Spanned<MirrorSpec>>,
    /// Who may call requests this route takes, in place of the service's `allow`.
    allow: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    path_prefix: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSpec {
    service: Spanned<String>,
    weight: Spanned<u32>,
}

/// `base` with the keys in `fields` applied; a `fault` or `mirror` given replaces the
/// base's whole.
pub fn apply(base: &Policy, fields: PolicyFields, scope: &Scope<'_>) -> Result<Policy, Refusal> {
    let mut policy = base.clone();
    if let Some(fault) = fields.fault {
        policy.fault = Some(traffic::fault(fault)?);
    }
    if let Some(mirror) = fields.mirror {
        policy.mirror = Some(traffic::mirror(scope.service, mirror, scope.services)?);
    }
    if let Some(timeout) = fields.timeout {
        policy.timeout = Some(duration(&timeout, "timeout")?);
    }
    if let Some(retries) = fields.retries {
        let spec = retries.value;
        let target = &mut policy.retries;
        if let Some(attempts) = spec.attempts {
            if attempts.value > defaults::MAX_RETRY_ATTEMPTS {
                return Err((
                    attempts.referenced,
                    format!(
                        "retries.attempts is {}; at most {} are allowed",
                        attempts.value,
                        defaults::MAX_RETRY_ATTEMPTS
                    ),
                ));
            }
            target.attempts = attempts.value;
        }
        if let Some(per_try) = spec.per_try_timeout {
            target.per_try_timeout = Some(duration(&per_try, "retries.per_try_timeout")?);
        }
        if let Some(on) = spec.on {
            let mut conditions = Vec::with_capacity(on.len());
            for condition in on {
                let parsed = RetryOn::parse(&condition.value).ok_or_else(|| {
                    (
                        condition.referenced,
                        format!(
                            "retries.on has {:?}; expected 5xx, connect-failure, reset or unavailable",
                            condition.value
                        ),
                    )
                })?;
                if !conditions.contains(&parsed) {
                    conditions.push(parsed);
                }
            }
            target.on = conditions;
        }
        if let Some(percent) = spec.budget_percent {
            target.budget_percent = percent_of(&percent, "retries.budget_percent")?;
        }
        if let Some(non_idempotent) = spec.non_idempotent {
            target.non_idempotent = non_idempotent;
        }
    }
    if let Some(breaker) = fields.circuit_breaker {
        let spec = breaker.value;
        let target = &mut policy.circuit_breaker;
        if let Some(failures) = spec.consecutive_failures {
            target.consecutive_failures =
                at_least_one(&failures, "circuit_breaker.consecutive_failures")?;
        }
        if let Some(time) = spec.base_ejection_time {
            target.base_ejection_time = duration(&time, "circuit_breaker.base_ejection_time")?;
        }
        if let Some(percent) = spec.max_ejection_percent {
            target.max_ejection_percent =
                percent_of(&percent, "circuit_breaker.max_ejection_percent")?;
        }
    }
    if let Some(limit) = fields.max_concurrent_requests {
        policy.max_concurrent_requests = at_least_one(&limit, "max_concurrent_requests")?;
    }
    if let Some(balancer) = fields.load_balancer {
        policy.load_balancer = match balancer.value.as_str() {
            "ewma" => LoadBalancer::Ewma,
            "round_robin" => LoadBalancer::RoundRobin,
            other => {
                return Err((
                    balancer.referenced,
                    format!("load_balancer is {other:?}; expected ewma or round_robin"),
                ));
            }
        };
    }
    Ok(policy)
}

/// Reads a route of `service` (whose policy is `base`); `services` are all the names in
/// the file, which weighted backends must come from.
pub fn route(
    service: &str,
    base: &Policy,
    spec: Spanned<RouteSpec>,
    services: &HashSet<String>,
    trust_domain: &str,
) -> Result<RouteModel, Refusal> {
    let at = spec.referenced;
    let spec = spec.value;
    let route_match = match spec.route_match {
        Some(route_match) => match_of(route_match)?,
        None => RouteMatch::default(),
    };
    let policy = apply(
        base,
        PolicyFields {
            timeout: spec.timeout,
            retries: spec.retries,
            circuit_breaker: spec.circuit_breaker,
            max_concurrent_requests: spec.max_concurrent_requests,
            load_balancer: spec.load_balancer,
            fault: spec.fault,
            mirror: spec.mirror,
        },
        &Scope { service, services },
    )?;
    let mut backends = Vec::with_capacity(spec.backends.len());
    for backend in spec.backends {
        let name = backend.value.service;
        if !services.contains(&name.value) {
            return Err((
                name.referenced,
                format!(
                    "a route of {service:?} sends traffic to {:?}, which is not a service in this file",
                    name.value
                ),
            ));
        }
        backends.push(BackendRef {
            service: name.value,
            weight: backend.value.weight.value,
        });
    }
    if !backends.is_empty() && backends.iter().all(|backend| backend.weight == 0) {
        return Err((
            at,
            format!("a route of {service:?} has backends whose weights are all 0"),
        ));
    }
    let allow = spec
        .allow
        .map(|entries| super::allow::resolve(service, &entries, services, trust_domain))
        .transpose()
        .map_err(|err| (err.location, err.reason))?;
    Ok(RouteModel {
        route_match,
        policy,
        backends,
        allow,
    })
}

fn match_of(spec: Spanned<MatchSpec>) -> Result<RouteMatch, Refusal> {
    let at = spec.referenced;
    let spec = spec.value;
    let path = match (spec.path_prefix, spec.path) {
        (Some(_), Some(_)) => {
            return Err((
                at,
                "a route match may give path_prefix or path, not both".into(),
            ));
        }
        (Some(prefix), None) => Some(PathMatch::Prefix(absolute_path(prefix, "path_prefix")?)),
        (None, Some(path)) => Some(PathMatch::Exact(absolute_path(path, "path")?)),
        (None, None) => None,
    };
    let method = match spec.method {
        Some(method) => {
            let parsed = Method::from_bytes(method.value.as_bytes()).map_err(|_| {
                (
                    method.referenced,
                    format!("match.method {:?} is not an HTTP method", method.value),
                )
            })?;
            Some(parsed.as_str().to_owned())
        }
        None => None,
    };
    let mut headers = BTreeMap::new();
    for (name, value) in spec.headers {
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            (
                value.referenced,
                format!("match.headers has {name:?}, which is not a header name"),
            )
        })?;
        headers.insert(parsed.as_str().to_owned(), value.value);
    }
    Ok(RouteMatch {
        path,
        method,
        headers,
    })
}

fn absolute_path(path: Spanned<String>, key: &str) -> Result<String, Refusal> {
    if path.value.starts_with('/') {
        Ok(path.value)
    } else {
        Err((
            path.referenced,
            format!("match.{key} {:?} must start with '/'", path.value),
        ))
    }
}

pub(super) fn duration(text: &Spanned<String>, key: &str) -> Result<Duration, Refusal> {
    match humantime::parse_duration(text.value.trim()) {
        Ok(value) if !value.is_zero() => Ok(value),
        Ok(_) => Err((text.referenced, format!("{key} must be more than 0"))),
        Err(err) => Err((
            text.referenced,
            format!(
                "{key} {:?} is not a duration like 500ms or 2s: {err}",
                text.value
            ),
        )),
    }
}

fn percent_of(value: &Spanned<u32>, key: &str) -> Result<u32, Refusal> {
    if value.value > 100 {
        Err((
            value.referenced,
            format!("{key} is {}; it must be 0 to 100", value.value),
        ))
    } else {
        Ok(value.value)
    }
}

fn at_least_one(value: &Spanned<u32>, key: &str) -> Result<u32, Refusal> {
    if value.value == 0 {
        Err((value.referenced, format!("{key} must be at least 1")))
    } else {
        Ok(value.value)
    }
}
