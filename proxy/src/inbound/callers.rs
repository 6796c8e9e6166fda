//! Who called this proxy's service and how: per caller identity and transport, how many
//! requests were let through and how many were refused. `/callers` shows it and
//! `seamctl verify` joins it across proxies into caller → callee edges; the same counts go
//! to Prometheus as `seam_inbound_requests_by_caller_total`.

use std::collections::BTreeMap;
use std::sync::Mutex;

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

#[derive(Debug, Default)]
/// Keyed by the caller alone: a caller's label already tells its transport (an identity
/// means mTLS), and a borrowed key finds a known caller without allocating per request.
pub struct CallerCounts(Mutex<BTreeMap<String, CallerCount>>);

impl CallerCounts {
    pub fn record(&self, caller: &str, transport: &'static str, allowed: bool) {
        let mut counts = self.0.lock().expect("caller counts lock poisoned");
        if !counts.contains_key(caller) {
            counts.insert(
                caller.to_owned(),
                CallerCount {
                    caller: caller.to_owned(),
                    transport,
                    ..CallerCount::default()
                },
            );
        }
        let count = counts
            .get_mut(caller)
            .expect("the caller was inserted just above");
        if allowed {
            count.allowed += 1;
        } else {
            count.denied += 1;
        }
    }

    pub fn snapshot(&self) -> Vec<CallerCount> {
        let counts = self.0.lock().expect("caller counts lock poisoned");
        counts.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_caller_and_transport() {
        let counts = CallerCounts::default();
        counts.record("spiffe://seam.local/ns/default/sa/web", "mtls", true);
        counts.record("spiffe://seam.local/ns/default/sa/web", "mtls", true);
        counts.record("spiffe://seam.local/ns/default/sa/web", "mtls", false);
        counts.record("plaintext", "plaintext", true);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].caller, "plaintext");
        assert_eq!((snapshot[1].allowed, snapshot[1].denied), (2, 1));
    }
}
