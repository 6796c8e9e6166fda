//! Route match, done once per request before the stack: the first route of the
//! service's snapshot that takes the request (path, method, headers; the last route
//! takes everything). The outbound reads its timeout; it travels with each attempt to
//! the layers below, which read their retry, breaker and balancing settings from it.

use std::sync::Arc;

use http::Request;

use super::notes::Notes;
use crate::state::Service;
use crate::state::policy::Route;

/// The service snapshot a request started with, the route it matched, and the notes
/// the outbound reads when the request is over.
#[derive(Clone, Debug)]
pub struct RouteChoice {
    pub service: Arc<Service>,
    pub route: Arc<Route>,
    pub notes: Arc<Notes>,
}

impl RouteChoice {
    /// Matches `request` against `service`'s routes.
    pub fn choose<B>(service: Arc<Service>, request: &Request<B>, notes: Arc<Notes>) -> Self {
        let route = service.route_for(request).clone();
        Self {
            service,
            route,
            notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::fixtures;
    use crate::state::policy::Route;
    use crate::state::policy::{PathMatch, Policy, RouteMatch};

    #[test]
    fn the_first_matching_route_decides_and_the_service_route_takes_the_rest() {
        let v2 = Policy {
            timeout: Some(std::time::Duration::from_secs(5)),
            ..Policy::default()
        };
        let service = Arc::new(Service::with_routes(
            "api".into(),
            Vec::new(),
            Policy::default(),
            vec![Route::new(
                RouteMatch {
                    path: Some(PathMatch::Prefix("/v2".into())),
                    ..RouteMatch::default()
                },
                v2.clone(),
                Vec::new(),
                None,
            )],
        ));
        for (path, timeout, label) in [
            ("/v2/x", v2.timeout, "/v2*"),
            ("/v1", Policy::default().timeout, "default"),
        ] {
            let request = fixtures::request("GET", path);
            let choice = RouteChoice::choose(service.clone(), &request, Arc::default());
            assert_eq!(choice.route.policy.timeout, timeout, "{path}");
            assert_eq!(&*choice.route.label, label, "{path}");
        }
    }
}
