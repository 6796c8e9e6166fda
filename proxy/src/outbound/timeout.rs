//! The whole-request timeout: from the request entering the path (retries and backoff
//! included) until response headers, as the route's `timeout` says. When it runs out the
//! attempt in flight is dropped and the app gets 504 `timeout after <timeout>`.

use std::time::Duration;

use http::Response;

use super::stack::StackFuture;
use crate::body::ProxyBody;
use crate::proxy_error::ProxyError;

/// `call`'s outcome, or 504 once `limit` has passed.
pub async fn within(
    limit: Option<Duration>,
    call: StackFuture,
) -> Result<Response<ProxyBody>, ProxyError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(ProxyError::Timeout(limit))),
        None => call.await,
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::outbound::fixtures;
    use crate::state::policy::Policy;

    #[tokio::test(start_paused = true)]
    async fn a_hanging_request_gets_504_naming_the_timeout_exactly_on_time() {
        let started = Instant::now();
        let call = fixtures::hang().send(fixtures::routed("GET", "/", Policy::default()));
        let error = within(Some(Duration::from_secs(2)), call)
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(error.status().as_u16(), 504);
        assert_eq!(error.to_string(), "timeout after 2s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let call = fixtures::answer(200).send(fixtures::routed("GET", "/", Policy::default()));
        let response = within(Some(Duration::from_secs(2)), call).await.unwrap();
        assert_eq!(response.status(), 200);
    }
}
