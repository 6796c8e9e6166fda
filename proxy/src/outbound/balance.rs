//! The load balancer: picks the endpoint of the chosen backend for each attempt. By
//! default it is power of two choices over peak-EWMA latency: two endpoints drawn at
//! random, the one with the lower latency × (in-flight + 1) wins; `round_robin` takes
//! them in turn. Endpoints the circuit breaker holds out and endpoints at
//! `max_concurrent_requests` are skipped, as is the endpoint the previous attempt
//! failed on when there is another; an endpoint whose ejection just ended gets the next
//! request as its probe. Nothing waits here: with no endpoint to pick the
//! answer is an immediate 503 (no endpoints, all ejected, or load shed).

use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;
use tokio::time::Instant;
use tower::{Layer, layer::layer_fn};

use super::stack::{Attempt, Stack, ToBackend, ToEndpoint};
use crate::metrics::Metrics;
use crate::proxy_error::ProxyError;
use crate::state::endpoints::{DEFAULT_RTT, EndpointState, EndpointStates};
use crate::state::policy::{LoadBalancer, Target};
use crate::state::{Directory, Endpoint};
use crate::telemetry::Upstream;

/// The endpoint picked for an attempt, with the state of its backend's endpoints (the
/// breaker needs them for `max_ejection_percent`) and the backend itself.
#[derive(Clone, Debug)]
pub struct Picked {
    pub endpoint: Endpoint,
    pub state: Arc<EndpointState>,
    pub siblings: Arc<[Arc<EndpointState>]>,
    pub target: Arc<Target>,
    /// When it was picked: where the breaker's latency sample starts (one clock read
    /// less per attempt).
    pub at: Instant,
}

pub fn layer(
    states: Arc<EndpointStates>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
) -> impl Layer<Stack<ToEndpoint>, Service = Stack<ToBackend>> + Clone {
    layer_fn(move |inner: Stack<ToEndpoint>| {
        let states = states.clone();
        let directory = directory.clone();
        let metrics = metrics.clone();
        Stack::from_fn(move |ToBackend { attempt, target }: ToBackend| {
            match pick(&states, &directory, &attempt, target) {
                Ok(picked) => {
                    attempt.choice.notes.attempted(Upstream {
                        endpoint: picked.endpoint.address,
                        identity: picked.endpoint.identity.clone(),
                    });
                    inner.send(ToEndpoint {
                        request: attempt.request,
                        choice: attempt.choice,
                        picked,
                    })
                }
                Err(error) => {
                    if let ProxyError::LoadShed { service, .. } = &error {
                        metrics.load_shed(service);
                    }
                    Box::pin(std::future::ready(Err(error)))
                }
            }
        })
    })
}

fn pick(
    states: &EndpointStates,
    directory: &Directory,
    attempt: &Attempt,
    target: Arc<Target>,
) -> Result<Picked, ProxyError> {
    let policy = &attempt.choice.route.policy;
    if target.endpoints.is_empty() {
        return Err(ProxyError::NoEndpoints(target.service.to_string()));
    }
    let in_use = || -> Vec<SocketAddr> {
        directory
            .endpoints()
            .into_iter()
            .map(|endpoint| endpoint.address)
            .collect()
    };
    let siblings = target
        .endpoint_states
        .get_or_init(|| {
            target
                .endpoints
                .iter()
                .map(|endpoint| states.get(endpoint.address, in_use))
                .collect()
        })
        .clone();
    let now = Instant::now();
    let limit = policy.max_concurrent_requests;
    let mut eligible: Vec<usize> = (0..siblings.len())
        .filter(|&i| siblings[i].available(now) && siblings[i].in_flight() < limit)
        .collect();
    if eligible.is_empty() {
        return Err(if siblings.iter().any(|state| state.available(now)) {
            ProxyError::LoadShed {
                service: target.service.to_string(),
                limit,
            }
        } else {
            ProxyError::AllEjected(target.service.to_string())
        });
    }
    if let Some(address) = attempt.avoid
        && eligible.len() > 1
    {
        eligible.retain(|&i| siblings[i].address != address);
    }
    // An endpoint whose ejection has ended gets its probe before anything else, however
    // its old latency compares: otherwise the balancer might never try it again.
    let probe = eligible
        .iter()
        .copied()
        .find(|&i| siblings[i].probe_due(now));
    let chosen = match (probe, policy.load_balancer) {
        (Some(probe), _) => probe,
        (None, LoadBalancer::RoundRobin) => eligible[target.next_turn() % eligible.len()],
        (None, LoadBalancer::Ewma) => power_of_two_choices(&eligible, &siblings, now),
    };
    let state = siblings[chosen].clone();
    state.breaker.lock().begin(now);
    Ok(Picked {
        endpoint: target.endpoints[chosen].clone(),
        state,
        siblings,
        target,
        at: now,
    })
}

/// Two distinct endpoints at random; the cheaper one.
fn power_of_two_choices(eligible: &[usize], states: &[Arc<EndpointState>], now: Instant) -> usize {
    if eligible.len() == 1 {
        return eligible[0];
    }
    let unmeasured = eligible
        .iter()
        .filter_map(|&i| states[i].estimate(now))
        .reduce(f64::min)
        .unwrap_or(DEFAULT_RTT.as_nanos() as f64);
    let mut rng = rand::rng();
    let first = rng.random_range(0..eligible.len());
    let mut second = rng.random_range(0..eligible.len() - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (eligible[first], eligible[second]);
    if states[b].cost(now, unmeasured) < states[a].cost(now, unmeasured) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests;
