//! The whole-request timeout: from the request entering the path (retries and backoff
//! included) until response headers, as the route's `timeout` says. When it runs out the
//! attempt in flight is dropped and the app gets 504 `timeout after <timeout>`.

use http::Request;
use tower::{Layer, layer::layer_fn};

use super::Stack;
use super::route::RouteChoice;
use crate::body::ProxyBody;
use crate::proxy_error::ProxyError;

pub fn layer() -> impl Layer<Stack, Service = Stack> + Clone {
    layer_fn(|inner: Stack| {
        Stack::new(move |request: Request<ProxyBody>| {
            let limit = RouteChoice::of(&request).route.policy.timeout;
            let call = inner.send(request);
            async move {
                match limit {
                    Some(limit) => tokio::time::timeout(limit, call)
                        .await
                        .unwrap_or(Err(ProxyError::Timeout(limit))),
                    None => call.await,
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::outbound::fixtures;
    use crate::state::policy::Policy;

    #[tokio::test(start_paused = true)]
    async fn a_hanging_request_gets_504_naming_the_timeout_exactly_on_time() {
        let policy = Policy {
            timeout: Some(Duration::from_secs(2)),
            ..Policy::default()
        };
        let stack = layer().layer(fixtures::hang());
        let started = Instant::now();
        let error = stack
            .send(fixtures::routed("GET", "/", policy))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(error.status().as_u16(), 504);
        assert_eq!(error.to_string(), "timeout after 2s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let stack = layer().layer(fixtures::answer(200));
        let response = stack
            .send(fixtures::routed("GET", "/", Policy::default()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}
