//! What the stack learns about a request that the outbound's telemetry, above the
//! stack, needs once the request is over: the route it took and how many retries were
//! sent. The outbound puts one `Notes` in the request's extensions; every attempt's
//! copy of the extensions shares it, and it survives an error as well as a response.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::state::policy::{DEFAULT_ROUTE, Route};

#[derive(Debug, Default)]
pub struct Notes {
    route: OnceLock<Arc<Route>>,
    retries: AtomicU32,
}

impl Notes {
    /// Notes on `extensions`, if the outbound set them (unit tests of one layer do not).
    pub fn of(extensions: &http::Extensions) -> Option<&Arc<Self>> {
        extensions.get::<Arc<Self>>()
    }

    pub fn took_route(&self, route: &Arc<Route>) {
        // A request matches one route; a second call would be the same route again.
        let _ = self.route.set(route.clone());
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The route's label (`default` until a route was matched).
    pub fn route_label(&self) -> &str {
        self.route.get().map_or(DEFAULT_ROUTE, |route| &route.label)
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }
}
