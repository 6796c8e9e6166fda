//! Who called this proxy's service and how: per caller identity and transport, how many
//! requests were let through and how many were refused. `/callers` shows it and
//! `seamctl verify` joins it across proxies into caller → callee edges; the same counts go
//! to Prometheus as `seam_inbound_requests_by_caller_total`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

/// One caller's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallerCount {
    pub caller: String,
    /// `mtls` or `plaintext`.
    pub transport: &'static str,
    pub allowed: u64,
    pub denied: u64,
}

/// One caller's running counts. A connection looks its caller's up once and counts
/// each request without a lock.
#[derive(Debug)]
pub struct CallerTally {
    transport: &'static str,
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl CallerTally {
    pub fn record(&self, allowed: bool) {
        let count = if allowed { &self.allowed } else { &self.denied };
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keyed by the caller alone: a caller's label already tells its transport (an identity
/// means mTLS).
#[derive(Debug, Default)]
pub struct CallerCounts(Mutex<BTreeMap<String, Arc<CallerTally>>>);

impl CallerCounts {
    /// The tally of `caller`, made on its first connection.
    pub fn tally(&self, caller: &str, transport: &'static str) -> Arc<CallerTally> {
        let mut counts = self.0.lock();
        if let Some(tally) = counts.get(caller) {
            return tally.clone();
        }
        let tally = Arc::new(CallerTally {
            transport,
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        });
        counts.insert(caller.to_owned(), tally.clone());
        tally
    }

    pub fn snapshot(&self) -> Vec<CallerCount> {
        let counts = self.0.lock();
        counts
            .iter()
            .map(|(caller, tally)| CallerCount {
                caller: caller.clone(),
                transport: tally.transport,
                allowed: tally.allowed.load(Ordering::Relaxed),
                denied: tally.denied.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_caller_and_transport() {
        let counts = CallerCounts::default();
        let web = "spiffe://seam.local/ns/default/sa/web";
        counts.tally(web, "mtls").record(true);
        // A second connection of the same caller adds to the same counts.
        counts.tally(web, "mtls").record(true);
        counts.tally(web, "mtls").record(false);
        counts.tally("plaintext", "plaintext").record(true);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].caller, "plaintext");
        assert_eq!((snapshot[1].allowed, snapshot[1].denied), (2, 1));
    }
}
