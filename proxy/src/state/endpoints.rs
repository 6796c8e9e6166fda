//! What the proxy remembers about each endpoint across config updates, keyed by its
//! address: the circuit breaker (consecutive failures, ejection with a growing time,
//! then a single probe), the peak-EWMA latency the balancer compares, and the requests
//! in flight (the balancer's load and the `max_concurrent_requests` limit). Snapshots
//! come and go; this state stays while some service still lists the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashSet};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::state::policy::BreakerPolicy;

/// How fast the EWMA forgets: after this long a latency weighs about 37 %.
const DECAY: Duration = Duration::from_secs(10);
/// How fast an endpoint without answers drifts towards the sibling it is compared with:
/// after this long its own estimate weighs about 37 %. Short, so that a latency spike
/// (or a failure's penalty) keeps an endpoint out for about a second, not for the many
/// seconds during which light traffic would all herd onto its sibling; a clearly slower
/// endpoint still gets only the odd request that finds it slow again.
pub const IDLE_DRIFT: Duration = Duration::from_millis(500);
/// The least a new answer weighs, however soon it follows the last one, so under a high
/// request rate one slow answer (a cold connection's handshake, say) fades in a few
/// dozen answers rather than after seconds.
const MIN_SAMPLE_WEIGHT: f64 = 0.1;
/// How much of the way to an answer slower than the estimate the estimate moves at once.
const PEAK_WEIGHT: f64 = 0.5;
/// What a failed connect counts as in the EWMA, so the balancer avoids it at once.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// The longest a single ejection lasts, however often the endpoint was ejected.
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// Circuit breaker of one endpoint.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive_failures: u32,
    times_ejected: u32,
    state: BreakerState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    #[default]
    Closed,
    Ejected {
        until: Instant,
    },
    /// The ejection ended and one request is finding out whether the endpoint is back.
    Probing,
}

/// What the breaker did with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Kept,
    Ejected(Duration),
}

impl Breaker {
    /// Whether a request may go to the endpoint now: closed, or an ejection that has
    /// ended and whose probe is not taken yet.
    pub fn available(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Ejected { until } => now >= until,
            BreakerState::Probing => false,
        }
    }

    /// Whether the ejection has ended and its probe is still to be sent.
    pub fn probe_due(&self, now: Instant) -> bool {
        matches!(self.state, BreakerState::Ejected { until } if now >= until)
    }

    /// Counts towards `max_ejection_percent` until a probe succeeds.
    pub fn is_ejected(&self) -> bool {
        !matches!(self.state, BreakerState::Closed)
    }

    /// A request is being sent: an ended ejection turns into the one probe.
    pub fn begin(&mut self, now: Instant) {
        if let BreakerState::Ejected { until } = self.state
            && now >= until
        {
            self.state = BreakerState::Probing;
        }
    }

    pub fn succeeded(&mut self) {
        self.consecutive_failures = 0;
        if self.state == BreakerState::Probing {
            self.state = BreakerState::Closed;
            self.times_ejected = 0;
        }
    }

    /// Records a failure; `may_eject` says whether `max_ejection_percent` leaves room.
    pub fn failed(&mut self, now: Instant, policy: &BreakerPolicy, may_eject: bool) -> Verdict {
        match self.state {
            BreakerState::Probing => self.eject(now, policy),
            BreakerState::Ejected { .. } => Verdict::Kept,
            BreakerState::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= policy.consecutive_failures && may_eject {
                    self.eject(now, policy)
                } else {
                    Verdict::Kept
                }
            }
        }
    }

    fn eject(&mut self, now: Instant, policy: &BreakerPolicy) -> Verdict {
        self.times_ejected = self.times_ejected.saturating_add(1);
        self.consecutive_failures = 0;
        let time = policy
            .base_ejection_time
            .saturating_mul(self.times_ejected)
            .min(MAX_EJECTION_TIME.max(policy.base_ejection_time));
        self.state = BreakerState::Ejected { until: now + time };
        Verdict::Ejected(time)
    }
}

/// Peak-EWMA latency: a slower answer counts at once (half of it), faster ones pull it
/// down over
/// [`DECAY`] (each by at least [`MIN_SAMPLE_WEIGHT`]). Compared with a sibling's, an
/// endpoint that has had no answer for a while drifts towards that sibling's estimate
/// over [`IDLE_DRIFT`] (so one that was slow or failed once gets tried again, and a
/// spike does not keep it out for long), and one not measured yet counts as that
/// sibling (a fair start: neither free nor as slow as its cold first answer).
#[derive(Debug)]
pub struct PeakEwma {
    nanos: f64,
    updated: Instant,
    /// Whether the endpoint answered at least once.
    measured: bool,
    /// Whether `nanos` holds a sibling's estimate the endpoint was given before its
    /// first answer (its first answer then only counts half).
    adopted: bool,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        Self {
            nanos: 0.0,
            updated: now,
            measured: false,
            adopted: false,
        }
    }

    /// The estimate as last settled, in nanoseconds; `None` before any answer or
    /// adopted estimate.
    pub fn last(&self) -> Option<f64> {
        (self.measured || self.adopted).then_some(self.nanos)
    }

    /// When the estimate last changed.
    pub fn updated(&self) -> Instant {
        self.updated
    }

    /// The estimate now, compared with a sibling whose last estimate is `reference`:
    /// without an estimate of its own it takes `reference`; otherwise it has drifted
    /// towards `reference` for as long as it went without an answer. The result is
    /// kept, so drift accumulates correctly over successive comparisons. `None` when
    /// neither has an estimate.
    pub fn settle(&mut self, now: Instant, reference: Option<f64>) -> Option<f64> {
        match (self.last(), reference) {
            (None, None) => None,
            (None, Some(reference)) => {
                self.nanos = reference;
                self.adopted = true;
                self.updated = now;
                Some(reference)
            }
            (Some(own), None) => Some(own),
            (Some(own), Some(reference)) => {
                let idle = now.saturating_duration_since(self.updated).as_secs_f64();
                let kept = (-idle / IDLE_DRIFT.as_secs_f64()).exp();
                self.nanos = reference + (own - reference) * kept;
                self.updated = now;
                Some(self.nanos)
            }
        }
    }

    /// Whether the endpoint answered at least once.
    pub fn measured(&self) -> bool {
        self.measured
    }

    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if !self.measured {
            self.measured = true;
            // A first answer often pays for something cold (a new connection upstream,
            // a cache): next to an adopted estimate it counts half.
            self.nanos = if self.adopted {
                (self.nanos + rtt) / 2.0
            } else {
                rtt
            };
        } else if rtt > self.nanos {
            // A peak counts at once, with half its weight: a truly slower endpoint is
            // found out within two or three answers, while one stall of the machine
            // does not make an endpoint look as slow as that stall for a while.
            self.nanos += (rtt - self.nanos) * PEAK_WEIGHT;
        } else {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            let weight = (1.0 - (-elapsed / DECAY.as_secs_f64()).exp()).max(MIN_SAMPLE_WEIGHT);
            self.nanos = self.nanos * (1.0 - weight) + rtt * weight;
        }
        self.updated = now;
    }

    #[cfg(test)]
    pub fn nanos(&self) -> f64 {
        self.nanos
    }
}

/// Everything kept about one endpoint.
#[derive(Debug)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub breaker: Mutex<Breaker>,
    pub latency: Mutex<PeakEwma>,
    in_flight: AtomicU32,
}

impl EndpointState {
    fn new(address: SocketAddr) -> Self {
        Self {
            address,
            breaker: Mutex::new(Breaker::default()),
            latency: Mutex::new(PeakEwma::new(Instant::now())),
            in_flight: AtomicU32::new(0),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// What the balancer may do with the endpoint now (one look at its breaker).
    pub fn availability(&self, now: Instant) -> Availability {
        let breaker = self.breaker.lock();
        if breaker.probe_due(now) {
            Availability::ProbeDue
        } else if breaker.available(now) {
            Availability::Open
        } else {
            Availability::HeldOut
        }
    }

    pub fn available(&self, now: Instant) -> bool {
        self.breaker.lock().available(now)
    }

    pub fn is_ejected(&self) -> bool {
        self.breaker.lock().is_ejected()
    }
}

/// Whether the breaker lets a request go to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Closed: requests go.
    Open,
    /// Its ejection ended: the next request is its probe.
    ProbeDue,
    /// Ejected, or its probe is out.
    HeldOut,
}

pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An ejected endpoint as `/config` shows it.
#[derive(Debug, Serialize)]
pub struct EjectedEndpoint {
    pub address: SocketAddr,
    pub times_ejected: u32,
    /// Milliseconds until a probe may go; 0 once it may (or while it is out).
    pub remaining_ms: u64,
    pub probing: bool,
}

/// Every endpoint's state, published whole like the other snapshots.
#[derive(Default)]
pub struct EndpointStates {
    states: ArcSwap<HashMap<SocketAddr, Arc<EndpointState>>>,
    adding: Mutex<()>,
}

impl EndpointStates {
    /// The state of `address`, made on first use. `in_use` lists the addresses some
    /// service still has: state of endpoints gone from all of them is dropped then.
    pub fn get(
        &self,
        address: SocketAddr,
        in_use: impl FnOnce() -> Vec<SocketAddr>,
    ) -> Arc<EndpointState> {
        if let Some(state) = self.states.load().get(&address) {
            return state.clone();
        }
        self.get_all(&[address], in_use).remove(0)
    }

    /// The states of `addresses`, in order, those not known yet made at once: one new
    /// map for a whole service's new endpoints, not one per endpoint.
    pub fn get_all(
        &self,
        addresses: &[SocketAddr],
        in_use: impl FnOnce() -> Vec<SocketAddr>,
    ) -> Vec<Arc<EndpointState>> {
        let known = |map: &HashMap<SocketAddr, Arc<EndpointState>>| {
            addresses
                .iter()
                .map(|address| map.get(address).cloned())
                .collect::<Option<Vec<_>>>()
        };
        if let Some(all) = known(&self.states.load()) {
            return all;
        }
        let _adding = self.adding.lock();
        let current = self.states.load();
        if let Some(all) = known(&current) {
            return all;
        }
        let in_use: HashSet<SocketAddr> = in_use().into_iter().collect();
        let mut next: HashMap<SocketAddr, Arc<EndpointState>> = current
            .iter()
            .filter(|(known, _)| in_use.contains(known))
            .map(|(known, state)| (*known, state.clone()))
            .collect();
        let all = addresses
            .iter()
            .map(|&address| {
                next.entry(address)
                    .or_insert_with(|| Arc::new(EndpointState::new(address)))
                    .clone()
            })
            .collect();
        self.states.store(Arc::new(next));
        all
    }

    /// The endpoints the breaker holds out now.
    pub fn ejected(&self) -> Vec<EjectedEndpoint> {
        let now = Instant::now();
        let mut ejected: Vec<EjectedEndpoint> = self
            .states
            .load()
            .values()
            .filter_map(|state| {
                let breaker = state.breaker.lock();
                let (remaining, probing) = match breaker.state {
                    BreakerState::Closed => return None,
                    BreakerState::Ejected { until } => {
                        (until.saturating_duration_since(now), false)
                    }
                    BreakerState::Probing => (Duration::ZERO, true),
                };
                Some(EjectedEndpoint {
                    address: state.address,
                    times_ejected: breaker.times_ejected,
                    remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                    probing,
                })
            })
            .collect();
        ejected.sort_by_key(|endpoint| endpoint.address);
        ejected
    }
}

#[cfg(test)]
mod tests;
