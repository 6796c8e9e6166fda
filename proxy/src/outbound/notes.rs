//! What the stack learns about a request that the outbound's telemetry, above the
//! stack, needs once the request is over: the route it took and how many retries were
//! sent, and which endpoint answered. The outbound keeps one `Notes` and puts it in the
//! request's `RouteChoice`; it survives an error as well as a response.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::state::policy::{DEFAULT_ROUTE_LABEL, Route};
use crate::telemetry::Upstream;

#[derive(Debug, Default)]
pub struct Notes {
    route: OnceLock<Arc<Route>>,
    retries: AtomicU32,
    upstream: Mutex<Option<Upstream>>,
}

impl Notes {
    pub fn took_route(&self, route: &Arc<Route>) {
        // A request matches one route; a second call would be the same route again.
        let _ = self.route.set(route.clone());
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The route's label (`default` until a route was matched).
    pub fn route_label(&self) -> Arc<str> {
        self.route
            .get()
            .map_or_else(|| DEFAULT_ROUTE_LABEL.clone(), |route| route.label.clone())
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Records the endpoint that answered an attempt (a later attempt's answer replaces
    /// it: the app gets the last one).
    pub fn answered_by(&self, upstream: Upstream) {
        *self.upstream.lock().expect("notes lock poisoned") = Some(upstream);
    }

    /// The endpoint that answered last, if one did.
    pub fn upstream(&self) -> Option<Upstream> {
        self.upstream.lock().expect("notes lock poisoned").clone()
    }
}
