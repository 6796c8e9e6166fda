//! What the stack learns about a request that the layers above it need: how many
//! retries were sent, and which endpoint the latest attempt went to (the one to avoid
//! next, and the one that answered when an answer came). The outbound keeps one `Notes`
//! in the request's `RouteChoice`; it survives an error as well as a response.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

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

    /// Records the endpoint an attempt goes to (a later attempt's replaces it: attempts
    /// follow one another).
    pub fn attempted(&self, upstream: Upstream) {
        *self.upstream.lock() = Some(upstream);
    }

    /// The endpoint of the latest attempt, if one was sent.
    pub fn last_attempted(&self) -> Option<SocketAddr> {
        self.upstream
            .lock()
            .as_ref()
            .map(|upstream| upstream.endpoint)
    }

    /// Takes the endpoint of the latest attempt: the one that answered, when the stack
    /// returned a response.
    pub fn take_upstream(&self) -> Option<Upstream> {
        self.upstream.lock().take()
    }
}
