//! Fault injection, on the caller's side, per route: a drawn delay holds the request
//! before it leaves, a drawn abort answers it here, and the app sees exactly what is
//! configured. It runs outside the retry layer and outside the whole-request timeout
//! (as Envoy's fault filter runs before its router): an aborted request never reaches an
//! endpoint and is never retried, and a delay does not count against `timeout`. A
//! request drawn for neither takes the ordinary path untouched; a route without a fault
//! costs one branch. Every faulted answer carries `x-seam-fault` (`delay`, `abort`, or
//! `delay, abort`).

use std::future::Future;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::body::{self, ProxyBody};
use crate::metrics::Metrics;
use crate::proxy_error::ProxyError;
use crate::state::traffic::{AbortAnswer, Drawn};

/// Marks an answer whose request was faulted on purpose.
pub const FAULT_HEADER: HeaderName = HeaderName::from_static("x-seam-fault");
/// The body of an aborted HTTP answer (a gRPC one is trailers-only).
const ABORT_BODY: &str = "fault injected: abort\n";

/// Counts what `drawn` injects into a request to `service`.
pub fn count(drawn: &Drawn, service: &Arc<str>, metrics: &Metrics) {
    if drawn.delay.is_some() {
        metrics.fault_injected(service, "delay");
    }
    if drawn.abort.is_some() {
        metrics.fault_injected(service, "abort");
    }
}

/// Waits out the drawn delay, then answers the drawn abort or sends the request
/// (`send`, the ordinary path with its timeout and retries). Failures of the ordinary
/// path are answered here, so they too carry the header.
pub async fn inject<F>(
    drawn: Drawn,
    send: impl FnOnce() -> F,
) -> Result<Response<ProxyBody>, ProxyError>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    if let Some(delay) = drawn.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = match drawn.abort {
        Some(answer) => aborted(answer),
        None => send().await.unwrap_or_else(|error| {
            tracing::debug!(%error, "outbound request failed after an injected delay");
            error.into_response()
        }),
    };
    response
        .headers_mut()
        .insert(FAULT_HEADER, header_value(&drawn));
    Ok(response)
}

fn header_value(drawn: &Drawn) -> HeaderValue {
    HeaderValue::from_static(match (drawn.delay.is_some(), drawn.abort.is_some()) {
        (true, true) => "delay, abort",
        (false, true) => "abort",
        _ => "delay",
    })
}

/// The answer to an aborted request: the status with a short body, or for gRPC HTTP 200
/// trailers-only with the status.
fn aborted(answer: AbortAnswer) -> Response<ProxyBody> {
    let builder = match answer {
        AbortAnswer::Http(status) => {
            return Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(body::text(ABORT_BODY.to_owned()))
                .expect("a status and a fixed header make a response");
        }
        AbortAnswer::Grpc(code) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", code)
            .header("grpc-message", "fault injected: abort"),
    };
    builder
        .body(body::empty())
        .expect("fixed headers make a response")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper::body::Body;
    use tokio::time::Instant;

    use super::*;

    async fn answered_200() -> Result<Response<ProxyBody>, ProxyError> {
        Ok(Response::new(body::text("from upstream".into())))
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_the_request_then_sends_it() {
        let started = Instant::now();
        let sent_at = Arc::new(parking_lot::Mutex::new(None));
        let seen = sent_at.clone();
        let drawn = Drawn {
            delay: Some(Duration::from_millis(200)),
            abort: None,
        };
        let response = inject(drawn, move || {
            *seen.lock() = Some(Instant::now());
            answered_200()
        })
        .await
        .unwrap();
        assert_eq!(
            sent_at.lock().map(|at| at - started),
            Some(Duration::from_millis(200))
        );
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[FAULT_HEADER], "delay");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "from upstream");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_answers_at_once_and_never_sends() {
        let sent = Arc::new(AtomicBool::new(false));
        let flag = sent.clone();
        let started = Instant::now();
        let drawn = Drawn {
            delay: None,
            abort: Some(AbortAnswer::Http(StatusCode::SERVICE_UNAVAILABLE)),
        };
        let response = inject(drawn, move || {
            flag.store(true, Ordering::SeqCst);
            answered_200()
        })
        .await
        .unwrap();
        assert!(!sent.load(Ordering::SeqCst));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[FAULT_HEADER], "abort");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, ABORT_BODY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grpc_abort_is_trailers_only_after_the_delay() {
        let started = Instant::now();
        let drawn = Drawn {
            delay: Some(Duration::from_millis(20)),
            abort: Some(AbortAnswer::Grpc(14)),
        };
        let response = inject(drawn, answered_200).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(20));
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()[FAULT_HEADER], "delay, abort");
        assert!(response.body().is_end_stream(), "trailers-only: no body");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_after_a_delay_is_answered_with_the_header() {
        let drawn = Drawn {
            delay: Some(Duration::from_millis(5)),
            abort: None,
        };
        let response = inject(drawn, || async {
            Err(ProxyError::NoEndpoints("api".into()))
        })
        .await
        .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[FAULT_HEADER], "delay");
    }
}
