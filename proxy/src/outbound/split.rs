//! Traffic split: sends each request (each attempt, so a retry may land on another
//! backend) to one of the route's backends, drawn at random in proportion to their
//! weights. A route without backends of its own has the service's own endpoints as its
//! one backend.

use std::sync::Arc;

use rand::Rng;
use tower::{Layer, layer::layer_fn};

use super::stack::{Attempt, Stack, ToBackend};
use crate::state::policy::Target;

pub fn layer() -> impl Layer<Stack<ToBackend>, Service = Stack<Attempt>> + Clone {
    layer_fn(|inner: Stack<ToBackend>| {
        Stack::from_fn(move |attempt: Attempt| {
            let route = &attempt.choice.route;
            let target: Arc<Target> = match route.backends.as_slice() {
                [only] => only.target.clone(),
                _ => {
                    let draw = rand::rng().random_range(0..route.total_weight().max(1));
                    route.backend_at(draw).clone()
                }
            };
            inner.send(ToBackend { attempt, target })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::fixtures;
    use crate::outbound::route::RouteChoice;
    use crate::state::Service;
    use crate::state::policy::{Policy, Route, RouteMatch, WeightedBackend};

    #[tokio::test]
    async fn requests_land_on_backends_in_proportion_to_their_weights() {
        let backend = |name: &str, weight| WeightedBackend {
            weight,
            target: Arc::new(Target::new(name.into(), Vec::new())),
        };
        let service = Arc::new(Service::with_routes(
            "api".into(),
            Vec::new(),
            Policy::default(),
            vec![Route::new(
                RouteMatch::default(),
                Policy::default(),
                vec![backend("api-v2", 10), backend("api", 90)],
                None,
            )],
        ));
        let stack = layer().layer(fixtures::answer_with_target());
        let mut v2 = 0;
        let total = 10_000;
        for _ in 0..total {
            let request = fixtures::request("GET", "/");
            let choice = RouteChoice::choose(service.clone(), &request, Arc::default());
            let response = stack.send(Attempt::new(request, choice)).await.unwrap();
            if response.headers()["x-target"] == "api-v2" {
                v2 += 1;
            }
        }
        // 10 % of 10 000 with a standard deviation of 30: 5 sigma either side.
        assert!((850..=1150).contains(&v2), "{v2} of {total} went to api-v2");
    }
}
