//! Route match: the first layer after the service is resolved. It picks the first route
//! of the service's snapshot that takes the request (path, method, headers; the last
//! route takes everything) and records it for the layers below, which read their
//! timeout, retry, breaker and balancing settings from it.

use std::sync::Arc;

use http::Request;
use tower::{Layer, layer::layer_fn};

use super::Stack;
use super::notes::Notes;
use crate::body::ProxyBody;
use crate::state::Backend;
use crate::state::policy::Route;

/// The service snapshot a request started with, the route it matched, and the notes
/// the outbound reads when the request is over (absent in unit tests of one layer).
#[derive(Clone, Debug)]
pub struct RouteChoice {
    pub service: Arc<Backend>,
    pub route: Arc<Route>,
    pub notes: Option<Arc<Notes>>,
}

impl RouteChoice {
    /// The choice the route layer recorded on `request`.
    pub fn of<B>(request: &Request<B>) -> &Self {
        request
            .extensions()
            .get::<Self>()
            .expect("the route layer runs above every layer that reads the route")
    }
}

/// Takes the request's `Arc<Backend>` and `Arc<Notes>` extensions (the outbound sets them
/// after resolving) into one `RouteChoice`, so each retry copies one extension.
pub fn layer() -> impl Layer<Stack, Service = Stack> + Clone {
    layer_fn(|inner: Stack| {
        Stack::from_fn(move |mut request: Request<ProxyBody>| {
            let service = request
                .extensions_mut()
                .remove::<Arc<Backend>>()
                .expect("the outbound sets the resolved service before the stack");
            let route = service.route_for(&request).clone();
            let notes = request.extensions_mut().remove::<Arc<Notes>>();
            if let Some(notes) = &notes {
                notes.took_route(&route);
            }
            request.extensions_mut().insert(RouteChoice {
                service,
                route,
                notes,
            });
            inner.send(request)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::fixtures;
    use crate::state::policy::Route;
    use crate::state::policy::{PathMatch, Policy, RouteMatch};

    #[tokio::test]
    async fn the_first_matching_route_decides_and_the_service_route_takes_the_rest() {
        let v2 = Policy {
            timeout: Some(std::time::Duration::from_secs(5)),
            ..Policy::default()
        };
        let service = Arc::new(Backend::with_routes(
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
        let stack = layer().layer(fixtures::answer_with_route_timeout());
        for (path, timeout) in [("/v2/x", v2.timeout), ("/v1", Policy::default().timeout)] {
            let mut request = fixtures::request("GET", path);
            request.extensions_mut().insert(service.clone());
            let response = stack.send(request).await.unwrap();
            assert_eq!(
                response.headers()["x-timeout"],
                format!("{timeout:?}"),
                "{path}"
            );
        }
    }
}
