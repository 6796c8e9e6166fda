//! What this proxy sent without mTLS: per service, the requests and opaque streams that
//! went to endpoints published without an identity (pods with no Seam proxy). A callee
//! without a proxy cannot count its callers, so `/callers` shows these on the caller's
//! side and `seamctl verify` lists each as a plaintext edge. Only the plaintext path
//! counts here; requests over mTLS never touch it.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// One service this proxy reached in plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaintextCallee {
    pub service: String,
    /// HTTP requests sent (attempts, retries included).
    pub requests: u64,
    /// Opaque TCP streams opened.
    pub streams: u64,
}

#[derive(Debug, Default)]
pub struct PlaintextCallees(Mutex<BTreeMap<Arc<str>, (u64, u64)>>);

impl PlaintextCallees {
    /// Counts one HTTP request sent to a plaintext endpoint of `service`.
    pub fn request(&self, service: &Arc<str>) {
        self.0.lock().entry(service.clone()).or_default().0 += 1;
    }

    /// Counts one opaque stream opened to a plaintext endpoint of `service`.
    pub fn stream(&self, service: &Arc<str>) {
        self.0.lock().entry(service.clone()).or_default().1 += 1;
    }

    pub fn snapshot(&self) -> Vec<PlaintextCallee> {
        self.0
            .lock()
            .iter()
            .map(|(service, &(requests, streams))| PlaintextCallee {
                service: service.to_string(),
                requests,
                streams,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_and_streams_per_service() {
        let callees = PlaintextCallees::default();
        let legacy: Arc<str> = "legacy.shop".into();
        callees.request(&legacy);
        callees.request(&legacy);
        callees.stream(&legacy);
        callees.stream(&"db.shop".into());
        assert_eq!(
            callees.snapshot(),
            vec![
                PlaintextCallee {
                    service: "db.shop".into(),
                    requests: 0,
                    streams: 1
                },
                PlaintextCallee {
                    service: "legacy.shop".into(),
                    requests: 2,
                    streams: 1
                },
            ]
        );
    }
}
