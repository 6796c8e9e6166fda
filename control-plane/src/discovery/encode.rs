//! Turning a resolution into the `ServiceUpdate` a proxy is sent: the model's types to
//! the wire's, one way, with each instance's share of a rate limit worked out here.

use std::time::Duration;

use seam_proto::v1::{self, ServiceUpdate, service_update};

use crate::model::{
    AbortAnswer, Authorization, Endpoint, Fault, LoadBalancer, MilliRate, PathMatch, Policy,
    RateLimit, Resolution, ResolvedMirror, ResolvedRoute, RetryOn,
};

fn authorization_to_proto(authorization: &Authorization) -> v1::Authorization {
    v1::Authorization {
        restricted: authorization.allow.is_some(),
        allowed_identities: authorization
            .allow
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect(),
        allow_plaintext: authorization.allow_plaintext,
    }
}

pub fn to_proto(authority: &str, version: u64, resolution: &Resolution) -> ServiceUpdate {
    let state = match resolution {
        Resolution::Service(service) => service_update::State::Service(v1::Service {
            name: service.name.clone(),
            endpoints: endpoints_to_proto(&service.endpoints),
            policy: Some(policy_to_proto(
                &service.policy,
                service.mirror.as_ref(),
                Some(service.instances),
            )),
            routes: service
                .routes
                .iter()
                .map(|route| route_to_proto(route, service.instances))
                .collect(),
            authorization: Some(authorization_to_proto(&service.authorization)),
            opaque_ports: service
                .opaque_ports
                .iter()
                .copied()
                .map(u32::from)
                .collect(),
            request_id_off: service.request_id_off,
        }),
        Resolution::NotFound => service_update::State::NotFound(v1::NotFound {}),
    };
    ServiceUpdate {
        authority: authority.to_owned(),
        version,
        state: Some(state),
    }
}

fn endpoints_to_proto(endpoints: &[Endpoint]) -> Vec<v1::Endpoint> {
    endpoints
        .iter()
        .map(|endpoint| v1::Endpoint {
            address: endpoint.address.to_string(),
            identity: endpoint
                .identity
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            plaintext: endpoint.identity.is_none(),
        })
        .collect()
}

fn millis(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `policy` as pushed: its mirror is `mirror`, the policy's own resolved; its rate limit is
/// divided among `instances` when given (`None`: leave the rate limit out, as a route that
/// shares its service's does).
fn policy_to_proto(
    policy: &Policy,
    mirror: Option<&ResolvedMirror>,
    instances: Option<usize>,
) -> v1::Policy {
    let retries = &policy.retries;
    let breaker = &policy.circuit_breaker;
    v1::Policy {
        timeout_ms: millis(policy.timeout),
        retries: Some(v1::RetryPolicy {
            attempts: retries.attempts,
            per_try_timeout_ms: millis(retries.per_try_timeout),
            on: retries
                .on
                .iter()
                .map(|on| {
                    let on = match on {
                        RetryOn::ServerError => v1::RetryOn::RetryOn5xx,
                        RetryOn::ConnectFailure => v1::RetryOn::ConnectFailure,
                        RetryOn::Reset => v1::RetryOn::Reset,
                        RetryOn::Unavailable => v1::RetryOn::Unavailable,
                        RetryOn::RateLimited => v1::RetryOn::RateLimited,
                    };
                    on as i32
                })
                .collect(),
            budget_percent: retries.budget_percent,
            non_idempotent: retries.non_idempotent,
        }),
        circuit_breaker: Some(v1::CircuitBreaker {
            consecutive_failures: breaker.consecutive_failures,
            base_ejection_time_ms: millis(Some(breaker.base_ejection_time)),
            max_ejection_percent: breaker.max_ejection_percent,
        }),
        max_concurrent_requests: policy.max_concurrent_requests,
        load_balancer: match policy.load_balancer {
            LoadBalancer::Ewma => v1::LoadBalancer::Ewma,
            LoadBalancer::RoundRobin => v1::LoadBalancer::RoundRobin,
        } as i32,
        fault: policy.fault.as_ref().map(fault_to_proto),
        mirror: mirror.map(|mirror| v1::Mirror {
            service: mirror.service.clone(),
            percent: mirror.percent.value(),
            endpoints: endpoints_to_proto(&mirror.endpoints),
        }),
        rate_limit: instances.and_then(|instances| {
            policy
                .rate_limit
                .as_ref()
                .map(|limit| rate_limit_share(limit, instances))
        }),
    }
}

fn fault_to_proto(fault: &Fault) -> v1::Fault {
    v1::Fault {
        delay: fault.delay.as_ref().map(|delay| v1::FaultDelay {
            fixed_ms: millis(Some(delay.fixed)),
            percent: delay.percent.value(),
        }),
        abort: fault.abort.as_ref().map(|abort| v1::FaultAbort {
            answer: Some(match abort.answer {
                AbortAnswer::Http(status) => v1::fault_abort::Answer::HttpStatus(status.into()),
                AbortAnswer::Grpc(status) => v1::fault_abort::Answer::GrpcStatus(status),
            }),
            percent: abort.percent.value(),
        }),
    }
}

/// One instance's share of a service's rate limits when `instances` share them: each
/// rate divided (at least 0.001 requests per second), the burst divided and rounded up
/// (at least 1); with no burst given, one second of the instance's rate.
fn rate_limit_share(limit: &RateLimit, instances: usize) -> v1::RateLimit {
    let instances = instances.max(1);
    let rule = |rate: MilliRate, burst: Option<u32>| {
        let share = rate.share(instances);
        let burst = match burst {
            Some(burst) => u64::from(burst).div_ceil(instances as u64),
            None => share.div_ceil(1000),
        };
        v1::RateLimitRule {
            millirequests_per_second: share,
            burst: u32::try_from(burst.max(1)).unwrap_or(u32::MAX),
        }
    };
    v1::RateLimit {
        total: limit.total.map(|rate| rule(rate, limit.burst)),
        per_caller: limit.per_caller.map(|rate| rule(rate, limit.burst)),
        overrides: limit
            .overrides
            .iter()
            .map(|entry| v1::RateLimitOverride {
                callers: entry.callers.iter().map(ToString::to_string).collect(),
                limit: Some(rule(entry.rate, entry.burst.or(limit.burst))),
            })
            .collect(),
        instances: u32::try_from(instances).unwrap_or(u32::MAX),
    }
}

fn route_to_proto(route: &ResolvedRoute, instances: usize) -> v1::Route {
    let (path_prefix, path) = match &route.route_match.path {
        Some(PathMatch::Prefix(prefix)) => (prefix.clone(), String::new()),
        Some(PathMatch::Exact(path)) => (String::new(), path.clone()),
        None => (String::new(), String::new()),
    };
    v1::Route {
        r#match: Some(v1::RouteMatch {
            path_prefix,
            path,
            method: route.route_match.method.clone().unwrap_or_default(),
            headers: route.route_match.headers.clone().into_iter().collect(),
        }),
        policy: Some(policy_to_proto(
            &route.policy,
            route.mirror.as_ref(),
            route.own_rate_limit.then_some(instances),
        )),
        backends: route
            .backends
            .iter()
            .map(|backend| v1::WeightedBackend {
                service: backend.service.clone(),
                weight: backend.weight,
                endpoints: endpoints_to_proto(&backend.endpoints),
            })
            .collect(),
        authorization: route.allow.as_ref().map(|allow| {
            authorization_to_proto(&Authorization {
                allow: Some(allow.clone()),
                allow_plaintext: false,
            })
        }),
    }
}

#[cfg(test)]
mod tests;
