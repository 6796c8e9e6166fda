//! An instance's rate limits ([`RateLimit`], this proxy's share of its service's, as the
//! control plane pushed it) and the GCRA buckets that enforce them ([`Limiter`], over
//! `governor`). A request is checked against the total, then against the limit of its
//! caller: an override's when one names the caller, else the per-caller limit. A later
//! limit is only asked once the earlier ones let the request through, so a request the
//! total refuses costs its caller nothing, while one the caller's limit refuses has used
//! a cell of the total (governor's GCRA has no give-back, and the total is checked first
//! as Linkerd does). Callers are keyed by their SPIFFE id (every plaintext caller shares
//! one key); each keyed map holds at most [`MAX_CALLERS`] keys, beyond which new callers
//! share one overflow bucket (counted), and idle keys are pruned when the cap is met.
//! Buckets outlive snapshots through [`Limiters`], which keeps a route's limiter for as
//! long as its limits are unchanged.

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use foldhash::HashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use seam_proto::SpiffeId;

/// The most callers one keyed limit tracks one by one.
pub const MAX_CALLERS: usize = 10_000;
/// How often at most a full caller map is swept for idle keys.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// The key every caller beyond [`MAX_CALLERS`] shares (no SPIFFE id or label looks so).
static OVERFLOW_KEY: LazyLock<Arc<str>> = LazyLock::new(|| "(overflow)".into());

/// This instance's share of a service's (or route's) rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub total: Option<Rule>,
    pub per_caller: Option<Rule>,
    /// Callers named here get the override's rule in place of `per_caller`.
    pub overrides: Vec<Override>,
    /// How many instances share the service's limits.
    pub instances: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Thousandths of a request per second; at least 1.
    pub millirequests_per_second: u64,
    pub burst: NonZeroU32,
}

impl Rule {
    fn quota(self) -> Quota {
        // One cell every 10^9 ns per request, so 10^12 ns per millirequest.
        let period =
            Duration::from_nanos((1_000_000_000_000 / self.millirequests_per_second).max(1));
        Quota::with_period(period)
            .expect("a period of at least 1ns is not zero")
            .allow_burst(self.burst)
    }
}

/// Requests per second, as "10" or "0.5".
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, thousandths) = (
            self.millirequests_per_second / 1000,
            self.millirequests_per_second % 1000,
        );
        if thousandths == 0 {
            write!(f, "{whole}")
        } else {
            let text = format!("{whole}.{thousandths:03}");
            f.write_str(text.trim_end_matches('0'))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub callers: Vec<SpiffeId>,
    pub rule: Rule,
}

/// Which limit refused a request (the `limit` label of `seam_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Total,
    Override,
    PerCaller,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Override => "override",
            Self::PerCaller => "per_caller",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Override => "override",
            Self::PerCaller => "per-caller",
        }
    }
}

/// A refused request: which limit, its rule, and when a cell is free again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub kind: LimitKind,
    pub rule: Rule,
    pub retry_after: Duration,
}

impl Refused {
    /// `retry-after` in whole seconds, rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        let seconds = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        seconds.max(1)
    }

    /// What the caller is told: the limit, its value on this instance, and who hit it.
    pub fn describe(&self, service: &str, caller: &str) -> String {
        let who = match self.kind {
            LimitKind::Total => String::new(),
            LimitKind::Override | LimitKind::PerCaller => format!(" by {caller}"),
        };
        format!(
            "rate limit: {} limit of service {service} ({} requests/s for this instance) exceeded{who}",
            self.kind.describe(),
            self.rule
        )
    }
}

type Keyed<C> = RateLimiter<Arc<str>, CappedStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A keyed limit's buckets, and the signal its map sends when it is full.
struct CallerBuckets<C: Clock> {
    buckets: Keyed<C>,
    cap: Arc<CapSignal>,
    /// When the buckets were made, on their clock.
    start: C::Instant,
}

impl<C: Clock> CallerBuckets<C> {
    fn new(rule: Rule, overflow: &Counter, clock: C) -> Self {
        let cap = Arc::new(CapSignal::new());
        let store = CappedStore {
            buckets: DashMapStateStore::default(),
            overflow: overflow.clone(),
            cap: cap.clone(),
        };
        Self {
            start: clock.now(),
            buckets: RateLimiter::new(rule.quota(), store, clock),
            cap,
        }
    }

    fn check(&self, key: &Arc<str>) -> Result<(), governor::NotUntil<C::Instant>> {
        let checked = self.buckets.check_key(key);
        if self.cap.full.load(Ordering::Relaxed)
            && self.cap.wants_pruning(Duration::from(
                self.buckets.clock().now().duration_since(self.start),
            ))
        {
            self.buckets.retain_recent();
        }
        checked
    }
}
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The buckets of one [`RateLimit`].
pub struct Limiter<C: Clock = DefaultClock> {
    limit: RateLimit,
    clock: C,
    total: Option<Direct<C>>,
    per_caller: Option<CallerBuckets<C>>,
    /// In the order of `limit.overrides`.
    overrides: Vec<CallerBuckets<C>>,
}

impl<C: Clock> fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .finish()
    }
}

impl Limiter {
    /// Fresh buckets for `limit`; callers past the cap are counted in `overflow`.
    pub fn new(limit: RateLimit, overflow: Counter) -> Self {
        Self::with_clock(limit, overflow, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn with_clock(limit: RateLimit, overflow: Counter, clock: C) -> Self {
        let keyed = |rule: Rule| CallerBuckets::new(rule, &overflow, clock.clone());
        Self {
            total: limit
                .total
                .map(|rule| RateLimiter::direct_with_clock(rule.quota(), clock.clone())),
            per_caller: limit.per_caller.map(keyed),
            overrides: limit
                .overrides
                .iter()
                .map(|entry| keyed(entry.rule))
                .collect(),
            clock: clock.clone(),
            limit,
        }
    }

    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Takes a cell for one request of `caller` (its identity, `None` for plaintext;
    /// `key` is its label), or says which limit refused it.
    pub fn check(&self, caller: Option<&SpiffeId>, key: &Arc<str>) -> Result<(), Refused> {
        let refused = |kind, rule, not_until: governor::NotUntil<C::Instant>| Refused {
            kind,
            rule,
            retry_after: not_until.wait_time_from(self.clock.now()),
        };
        if let (Some(bucket), Some(rule)) = (&self.total, self.limit.total) {
            bucket
                .check()
                .map_err(|not_until| refused(LimitKind::Total, rule, not_until))?;
        }
        let named = caller.and_then(|id| {
            self.limit
                .overrides
                .iter()
                .position(|entry| entry.callers.contains(id))
        });
        let (kind, rule, buckets) = match named {
            Some(index) => (
                LimitKind::Override,
                self.limit.overrides[index].rule,
                &self.overrides[index],
            ),
            None => match (&self.per_caller, self.limit.per_caller) {
                (Some(buckets), Some(rule)) => (LimitKind::PerCaller, rule, buckets),
                _ => return Ok(()),
            },
        };
        buckets
            .check(key)
            .map_err(|not_until| refused(kind, rule, not_until))
    }

    /// How many callers the per-caller and override limits track one by one.
    #[cfg(test)]
    fn tracked_callers(&self) -> usize {
        self.per_caller
            .iter()
            .chain(&self.overrides)
            .map(|keyed| keyed.buckets.len())
            .sum()
    }
}

/// governor's concurrent map of caller buckets, holding at most [`MAX_CALLERS`] keys: a
/// caller it does not know yet while full takes the shared overflow bucket.
struct CappedStore {
    buckets: DashMapStateStore<Arc<str>>,
    overflow: Counter,
    cap: Arc<CapSignal>,
}

/// Whether a caller map met its cap, and when it was last pruned.
struct CapSignal {
    /// Set when a new caller met the cap; the limiter then prunes idle keys.
    full: AtomicBool,
    /// Milliseconds after the buckets were made of the last pruning (0: never).
    pruned_at_ms: AtomicU64,
}

impl CapSignal {
    fn new() -> Self {
        Self {
            full: AtomicBool::new(false),
            pruned_at_ms: AtomicU64::new(0),
        }
    }

    /// Whether the map, full since the last pruning, is due one now (`elapsed` after the
    /// buckets were made): at most once per [`PRUNE_INTERVAL`], as a sweep visits every key.
    fn wants_pruning(&self, elapsed: Duration) -> bool {
        let now_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let last = self.pruned_at_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(PRUNE_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now_ms.saturating_sub(last) >= interval;
        due && self
            .pruned_at_ms
            .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && self.full.swap(false, Ordering::Relaxed)
    }
}

impl StateStore for CappedStore {
    type Key = Arc<str>;

    fn measure_and_replace<T, F, E>(&self, key: &Arc<str>, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.buckets.contains_key(key) || self.buckets.len() < MAX_CALLERS {
            return self.buckets.measure_and_replace(key, f);
        }
        self.cap.full.store(true, Ordering::Relaxed);
        self.overflow.inc();
        self.buckets.measure_and_replace(&OVERFLOW_KEY, f)
    }
}

impl ShrinkableKeyedStateStore<Arc<str>> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.buckets, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.buckets);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.buckets)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&self.buckets)
    }
}

/// Which limiter a request uses: the service's (every route without its own limit) or
/// one route's, by position and label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimiterKey {
    Service,
    Route { position: usize, label: Arc<str> },
}

/// The limiters of one service's routes, kept across snapshots: a key's limiter is kept
/// while its limits are unchanged and replaced when they change.
#[derive(Default)]
pub struct Limiters {
    by_key: Mutex<HashMap<LimiterKey, Arc<Limiter>>>,
}

impl Limiters {
    /// The limiter for `key` enforcing `limit`, kept or made afresh.
    pub fn get(&self, key: LimiterKey, limit: &RateLimit, overflow: &Counter) -> Arc<Limiter> {
        let mut by_key = self.by_key.lock();
        match by_key.get(&key) {
            Some(kept) if kept.limit() == limit => kept.clone(),
            _ => {
                let fresh = Arc::new(Limiter::new(limit.clone(), overflow.clone()));
                by_key.insert(key, fresh.clone());
                fresh
            }
        }
    }
}

impl fmt::Debug for Limiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiters").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
