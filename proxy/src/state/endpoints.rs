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
use foldhash::HashMap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::state::policy::BreakerPolicy;

/// The latency assumed for an endpoint when none of its siblings was measured either.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the EWMA forgets: after this long a latency weighs about 37 %.
const DECAY: Duration = Duration::from_secs(10);
/// The least a new answer weighs, however soon it follows the last one, so under a high
/// request rate one slow answer (a cold connection's handshake, say) fades in a few
/// dozen answers rather than after seconds.
const MIN_SAMPLE_WEIGHT: f64 = 0.1;
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

/// Peak-EWMA latency: a slower answer counts at once, faster ones pull it down over
/// [`DECAY`] (each by at least [`MIN_SAMPLE_WEIGHT`]), and an endpoint left alone looks
/// cheaper as time passes (so one that was slow or failed once gets tried again).
#[derive(Debug)]
pub struct PeakEwma {
    nanos: f64,
    updated: Instant,
    measured: bool,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        Self {
            nanos: 0.0,
            updated: now,
            measured: false,
        }
    }

    /// The estimate now, in nanoseconds; `None` until the first answer.
    pub fn estimate(&self, now: Instant) -> Option<f64> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.measured
            .then(|| self.nanos * (-elapsed / DECAY.as_secs_f64()).exp())
    }

    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        // The first answer, or one slower than the estimate (a peak), is the estimate.
        if !self.measured || rtt > self.nanos {
            self.measured = true;
            self.nanos = rtt;
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

    /// The latency estimate now; `None` until the endpoint first answered.
    pub fn estimate(&self, now: Instant) -> Option<f64> {
        self.latency.lock().estimate(now)
    }

    /// The balancer's cost: latency times the load it would join. An endpoint not
    /// measured yet is taken to be as fast as `unmeasured` (the best of its siblings), so
    /// a new endpoint gets its share at once without being flooded.
    pub fn cost(&self, now: Instant, unmeasured: f64) -> f64 {
        self.estimate(now).unwrap_or(unmeasured) * f64::from(self.in_flight() + 1)
    }

    pub fn available(&self, now: Instant) -> bool {
        self.breaker.lock().available(now)
    }

    pub fn is_ejected(&self) -> bool {
        self.breaker.lock().is_ejected()
    }

    pub fn probe_due(&self, now: Instant) -> bool {
        self.breaker.lock().probe_due(now)
    }
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
        let _adding = self.adding.lock();
        let current = self.states.load();
        if let Some(state) = current.get(&address) {
            return state.clone();
        }
        let in_use = in_use();
        let mut next: HashMap<SocketAddr, Arc<EndpointState>> = current
            .iter()
            .filter(|(known, _)| in_use.contains(known))
            .map(|(known, state)| (*known, state.clone()))
            .collect();
        let state = Arc::new(EndpointState::new(address));
        next.insert(address, state.clone());
        self.states.store(Arc::new(next));
        state
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
