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
pub struct CallerCounts(Mutex<BTreeMap<(String, &'static str), CallerCount>>);

impl CallerCounts {
    pub fn record(&self, caller: &str, transport: &'static str, allowed: bool) {
        let mut counts = self.0.lock().expect("caller counts lock poisoned");
        let count = counts
            .entry((caller.to_owned(), transport))
            .or_insert_with(|| CallerCount {
                caller: caller.to_owned(),
                transport,
                ..CallerCount::default()
            });
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
