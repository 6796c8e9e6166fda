//! What the stack learns about a request that the outbound's telemetry, above the
//! stack, needs once the request is over: how many retries were sent and which endpoint
//! answered. The outbound keeps one `Notes` and puts it in the request's `RouteChoice`;
//! it survives an error as well as a response.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::telemetry::Upstream;

#[derive(Debug, Default)]
pub struct Notes {
    retries: AtomicU32,
    upstream: Mutex<Option<Upstream>>,
}

impl Notes {
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Records the endpoint that answered an attempt (a later attempt's answer replaces
    /// it: the app gets the last one).
    pub fn answered_by(&self, upstream: Upstream) {
        *self.upstream.lock().expect("notes lock poisoned") = Some(upstream);
    }

    /// Takes the endpoint that answered last, if one did.
    pub fn take_upstream(&self) -> Option<Upstream> {
        self.upstream.lock().expect("notes lock poisoned").take()
    }
}
