//! The load balancer: picks the endpoint of the chosen backend for each attempt. By
//! default it is power of two choices over peak-EWMA latency: two endpoints drawn at
//! random, the one with the lower latency × (in-flight + 1) wins, or either when the two
//! are close (so light traffic does not herd); `round_robin` takes them in turn. A pick
//! costs the same with 1,000 endpoints as with 2: it looks at the two it drew (or the
//! next in turn), and scans them all only when neither can take the request. Endpoints
//! the circuit breaker holds out and endpoints at `max_concurrent_requests` are skipped,
//! as is the endpoint the previous attempt failed on when there is another; an endpoint
//! whose ejection ended is sent its probe when next drawn. Nothing waits here: with no
//! endpoint to pick the answer is an immediate 503 (no endpoints, all ejected, or load
//! shed).

use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;
use tokio::time::Instant;
use tower::{Layer, layer::layer_fn};

use super::stack::{Attempt, Stack, ToBackend, ToEndpoint};
use crate::metrics::Metrics;
use crate::proxy_error::ProxyError;
use crate::state::endpoints::{Availability, EndpointState, EndpointStates};
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
    let siblings = target
        .endpoint_states
        .get_or_init(|| {
            let addresses: Vec<SocketAddr> = target
                .endpoints
                .iter()
                .map(|endpoint| endpoint.address)
                .collect();
            let in_use = || {
                directory
                    .endpoints()
                    .into_iter()
                    .map(|endpoint| endpoint.address)
                    .collect()
            };
            states.get_all(&addresses, in_use).into()
        })
        .clone();
    let now = Instant::now();
    let candidates = Candidates {
        siblings: &siblings,
        now,
        limit: policy.max_concurrent_requests,
        avoid: attempt.avoid,
    };
    let chosen = match policy.load_balancer {
        LoadBalancer::RoundRobin => candidates.in_turn(target.next_turn()),
        LoadBalancer::Ewma => candidates.power_of_two_choices(),
    };
    let Some(chosen) = chosen.or_else(|| candidates.scan()) else {
        return Err(candidates.none_left(&target.service));
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

/// A backend's endpoints as the balancer sees them for one attempt.
struct Candidates<'a> {
    siblings: &'a [Arc<EndpointState>],
    now: Instant,
    limit: u32,
    /// The endpoint the previous attempt failed on, taken only when nothing else is.
    avoid: Option<SocketAddr>,
}

impl Candidates<'_> {
    /// Whether endpoint `index` may take the attempt, and whether as its probe.
    fn usable(&self, index: usize) -> Option<Availability> {
        let state = &self.siblings[index];
        if state.in_flight() >= self.limit || self.avoid == Some(state.address) {
            return None;
        }
        match state.availability(self.now) {
            Availability::HeldOut => None,
            open_or_probe => Some(open_or_probe),
        }
    }

    /// The first usable endpoint from turn `turn` on: O(1) while most are usable.
    fn in_turn(&self, turn: usize) -> Option<usize> {
        let count = self.siblings.len();
        (0..count)
            .map(|step| (turn + step) % count)
            .find(|&index| self.usable(index).is_some())
    }

    /// Two distinct endpoints at random; the cheaper one, or either when their costs
    /// are close (see [`prefer_first`]). An endpoint whose ejection ended wins as its
    /// probe, however its old latency compares (otherwise it might never be tried
    /// again). Only when neither draw is usable does the caller scan them all.
    fn power_of_two_choices(&self) -> Option<usize> {
        let count = self.siblings.len();
        if count == 1 {
            return self.usable(0).map(|_| 0);
        }
        let mut rng = rand::rng();
        let first = rng.random_range(0..count);
        let mut second = rng.random_range(0..count - 1);
        if second >= first {
            second += 1;
        }
        match (self.usable(first), self.usable(second)) {
            (Some(Availability::ProbeDue), _) => Some(first),
            (_, Some(Availability::ProbeDue)) => Some(second),
            (Some(_), Some(_)) => Some(self.cheaper(first, second, &mut rng)),
            (Some(_), None) => Some(first),
            (None, Some(_)) => Some(second),
            (None, None) => None,
        }
    }

    /// The slow path, when the draws found nothing usable: every usable endpoint, then
    /// two of them compared as above (the endpoint to avoid only when it is the last).
    fn scan(&self) -> Option<usize> {
        let usable: Vec<usize> = (0..self.siblings.len())
            .filter(|&index| self.usable(index).is_some())
            .collect();
        match usable.as_slice() {
            [] => self.avoided_if_usable(),
            [only] => Some(*only),
            _ => {
                let mut rng = rand::rng();
                let first = usable[rng.random_range(0..usable.len())];
                let second = loop {
                    let drawn = usable[rng.random_range(0..usable.len())];
                    if drawn != first {
                        break drawn;
                    }
                };
                match (self.usable(first), self.usable(second)) {
                    (Some(Availability::ProbeDue), _) => Some(first),
                    (_, Some(Availability::ProbeDue)) => Some(second),
                    _ => Some(self.cheaper(first, second, &mut rng)),
                }
            }
        }
    }

    /// The endpoint to avoid, when it is usable: a retry goes back to it rather than
    /// nowhere.
    fn avoided_if_usable(&self) -> Option<usize> {
        let avoid = self.avoid?;
        let index = self
            .siblings
            .iter()
            .position(|state| state.address == avoid)?;
        let without_avoid = Candidates {
            avoid: None,
            ..*self
        };
        without_avoid.usable(index).map(|_| index)
    }

    /// Why no endpoint could take the attempt: all held out, or all at the limit.
    fn none_left(&self, service: &str) -> ProxyError {
        if self.siblings.iter().any(|state| state.available(self.now)) {
            ProxyError::LoadShed {
                service: service.to_owned(),
                limit: self.limit,
            }
        } else {
            ProxyError::AllEjected(service.to_owned())
        }
    }

    /// Of two usable endpoints, the one to send to: each one's latency (settled against
    /// the other's, see `PeakEwma::settle`) times the load it would join. The one with
    /// the fresher estimate settles first and the staler one drifts towards the result,
    /// so two estimates left alone converge rather than swap.
    fn cheaper(&self, first: usize, second: usize, rng: &mut impl Rng) -> usize {
        let (a, b) = (&self.siblings[first], &self.siblings[second]);
        // One lock at a time: two picks may draw the same pair in opposite orders.
        let look = |state: &EndpointState| {
            let latency = state.latency.lock();
            (latency.last(), latency.updated())
        };
        let ((a_last, a_updated), (b_last, b_updated)) = (look(a), look(b));
        let (a_estimate, b_estimate) = if a_updated >= b_updated {
            let a_estimate = a.latency.lock().settle(self.now, b_last);
            (a_estimate, b.latency.lock().settle(self.now, a_estimate))
        } else {
            let b_estimate = b.latency.lock().settle(self.now, a_last);
            (a.latency.lock().settle(self.now, b_estimate), b_estimate)
        };
        let cost = |estimate: Option<f64>, state: &EndpointState| {
            // Neither measured yet: only the load tells them apart.
            estimate.unwrap_or(1.0) * f64::from(state.in_flight() + 1)
        };
        if prefer_first(cost(a_estimate, a), cost(b_estimate, b), rng.random()) {
            first
        } else {
            second
        }
    }
}

/// Costs within this factor of each other are close: the dearer one still gets some
/// of the draws, more the closer they are. Further apart, the cheaper one always wins.
const CLOSE_COSTS: f64 = 2.0;

/// Whether to take the endpoint costing `first` over the one costing `second`, for a
/// uniform draw in `0..1`. Equal costs are a coin toss, and the dearer one's chance
/// falls linearly to nothing at [`CLOSE_COSTS`] times the cheaper one's. Without this,
/// light sequential traffic over endpoints of the same latency herds onto whichever
/// measured a hair faster, until the estimates cross and it all flips.
fn prefer_first(first: f64, second: f64, draw: f64) -> bool {
    let (cheaper, dearer) = (first.min(second), first.max(second));
    let ratio = if cheaper > 0.0 {
        dearer / cheaper
    } else if dearer > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    let dearer_chance = ((CLOSE_COSTS - ratio) / (2.0 * (CLOSE_COSTS - 1.0))).clamp(0.0, 0.5);
    let take_dearer = draw < dearer_chance;
    (first <= second) != take_dearer
}

#[cfg(test)]
mod tests;
