//! Rate limiting on the inbound: after the allow list has let a request in and before
//! anything reaches the app, the request takes a cell of its route's limits (the route's
//! own, else the service's; see `state::rate_limit`). A refused request never reaches the
//! app: it gets `429 Too Many Requests` with `retry-after` and a short body naming the
//! limit, or, for gRPC, a trailers-only `RESOURCE_EXHAUSTED` (8) with `retry-after`, and
//! is counted in `seam_rate_limited_total`. A service without limits pays a branch on its
//! snapshot.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};

use super::InboundCaller;
use crate::body::{self, ProxyBody};
use crate::metrics::{Metrics, RateLimitedLabels};
use crate::proxy_error::{PROXY_ERROR_HEADER, proxy_response};
use crate::state::Service;
use crate::state::policy::Route;
use crate::state::rate_limit::{Limiter, Limiters, Refused};

/// gRPC's RESOURCE_EXHAUSTED.
const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// The limiters of this proxy's own service, kept across its snapshots.
#[derive(Debug, Default)]
pub struct RateLimits {
    limiters: Limiters,
}

impl RateLimits {
    /// Takes a cell for `request` (which takes `route` of `service`) from `caller`'s
    /// buckets; `Some` is the answer to a refused request.
    pub fn refusal<B>(
        &self,
        service: &Service,
        route: &Arc<Route>,
        caller: &InboundCaller,
        request: &Request<B>,
        metrics: &Metrics,
    ) -> Option<Response<ProxyBody>> {
        let limited = service.rate_limited_route(route)?;
        let limiter = self.limiter(service, limited, metrics);
        let label = caller.shared_label();
        let refused = limiter.check(caller.identity.as_ref(), &label).err()?;
        metrics
            .rate_limited
            .get_or_create(&RateLimitedLabels {
                service: service.name.clone(),
                caller: label.clone(),
                limit: refused.kind.as_str(),
            })
            .inc();
        let reason = refused.describe(&service.name, &label);
        // The share is the service's limit over its instances: say how many there were.
        tracing::debug!(
            caller = %label, service = %service.name, instances = limiter.limit().instances,
            "{reason}"
        );
        Some(answer(request, &refused, reason))
    }

    /// The limiter of `route` on this snapshot, looked up once per snapshot.
    fn limiter<'a>(
        &self,
        service: &Service,
        route: &'a Arc<Route>,
        metrics: &Metrics,
    ) -> &'a Arc<Limiter> {
        route.rate_limiter.get_or_init(|| {
            let limit = route
                .policy
                .rate_limit
                .as_ref()
                .expect("a rate-limited route has a rate limit");
            self.limiters.get(
                service.limiter_key(route),
                limit,
                &metrics.rate_limit_overflow,
            )
        })
    }
}

/// The answer to a refused request: 429 with the reason, or a trailers-only gRPC
/// RESOURCE_EXHAUSTED for a gRPC request; `retry-after` either way.
fn answer<B>(request: &Request<B>, refused: &Refused, reason: String) -> Response<ProxyBody> {
    let retry_after = HeaderValue::from(refused.retry_after_seconds());
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        let mut response = proxy_response(StatusCode::TOO_MANY_REQUESTS, format!("{reason}\n"));
        response.headers_mut().insert(RETRY_AFTER, retry_after);
        return response;
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/grpc")
        .header("grpc-status", GRPC_RESOURCE_EXHAUSTED)
        .header("grpc-message", grpc_message(&reason))
        .header(RETRY_AFTER, retry_after)
        .header(PROXY_ERROR_HEADER, "true")
        .body(body::empty())
        .expect("status and headers are valid")
}

/// `text` percent-encoded as `grpc-message` wants: printable ASCII but `%` as is.
fn grpc_message(text: &str) -> HeaderValue {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::try_from(encoded).expect("percent-encoded text is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(
            grpc_message("rate limit: 100% used\n"),
            "rate limit: 100%25 used%0A"
        );
    }
}
