//! The per-endpoint layer, just above the connection: it counts the attempt in flight
//! on its endpoint until the response body is done (the balancer's load and the
//! concurrency limit), bounds it (until response headers) by the
//! route's `per_try_timeout`, feeds the latency to the endpoint's peak-EWMA (from when
//! the connection was ready, when the attempt had to open one; not at all for a new
//! endpoint's very first answer, which is cold on both sides), and tells
//! the endpoint's circuit breaker how it went. A 5xx, a gRPC UNAVAILABLE in the
//! headers, a failed connect, a broken connection or a per-try timeout is a failure;
//! `consecutive_failures` of them in a row eject the endpoint for `base_ejection_time`
//! × the times it was ejected, unless that would hold out more than
//! `max_ejection_percent` of its backend's endpoints.

use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Layer, layer::layer_fn};

use super::balance::Picked;
use super::grpc;
use super::route::RouteChoice;
use super::stack::{Stack, ToEndpoint};
use crate::http1_pool::FreshConnection;
use crate::metrics::Metrics;
use crate::proxy_error::ProxyError;
use crate::state::endpoints::{FAILURE_PENALTY, Verdict};

pub fn layer(
    metrics: Arc<Metrics>,
) -> impl Layer<Stack<ToEndpoint>, Service = Stack<ToEndpoint>> + Clone {
    layer_fn(move |inner: Stack<ToEndpoint>| {
        let metrics = metrics.clone();
        Stack::new(move |attempt: ToEndpoint| {
            let choice = attempt.choice.clone();
            let picked = attempt.picked.clone();
            let in_flight = picked.state.start();
            let call = inner.send(attempt);
            let metrics = metrics.clone();
            async move {
                let policy = &choice.route.policy;
                let started = picked.at;
                let mut outcome = match policy.retries.per_try_timeout {
                    Some(limit) => tokio::time::timeout(limit, call)
                        .await
                        .unwrap_or(Err(ProxyError::PerTryTimeout(limit))),
                    None => call.await,
                };
                let now = Instant::now();
                let failed = match &outcome {
                    Ok(response) => {
                        response.status().is_server_error()
                            || grpc::unavailable_in_headers(response)
                    }
                    Err(_) => true,
                };
                let fresh = match &mut outcome {
                    Ok(response) => response.extensions_mut().remove::<FreshConnection>(),
                    Err(_) => None,
                };
                let latency = match (&outcome, fresh) {
                    (Err(ProxyError::PeerConnect { .. }), _) => FAILURE_PENALTY,
                    // Opening the connection is not the endpoint's latency.
                    (_, Some(fresh)) => now.saturating_duration_since(fresh.ready_at),
                    _ => now.saturating_duration_since(started),
                };
                {
                    let mut estimate = picked.state.latency.lock();
                    // A new endpoint's first answer is cold on both sides (an HTTP/2
                    // connection's set-up is in it too; the peer's TLS handshake ends
                    // with the request, its own connection to the app is new): it would
                    // keep the endpoint out for a while, so it is left out.
                    let cold = !estimate.measured() && outcome.is_ok();
                    if !cold {
                        estimate.observe(latency, now);
                    }
                }
                if failed {
                    record_failure(&picked, &choice, &metrics, now);
                } else {
                    picked.state.breaker.lock().succeeded();
                }
                // A response counts as in flight until its body is done (or dropped).
                outcome.map(|response| {
                    response.map(|body| {
                        body.map_frame(move |frame| {
                            let _counted = &in_flight;
                            frame
                        })
                        .boxed()
                    })
                })
            }
        })
    })
}

fn record_failure(picked: &Picked, choice: &RouteChoice, metrics: &Metrics, now: Instant) {
    let policy = &choice.route.policy.circuit_breaker;
    let ejected_now = picked
        .siblings
        .iter()
        .filter(|sibling| !Arc::ptr_eq(sibling, &picked.state) && sibling.is_ejected())
        .count();
    let allowed = picked.siblings.len() * policy.max_ejection_percent as usize / 100;
    let may_eject = ejected_now < allowed;
    let verdict = picked.state.breaker.lock().failed(now, policy, may_eject);
    if let Verdict::Ejected(time) = verdict {
        metrics.ejected(&choice.service.name);
        tracing::warn!(
            service = %choice.service.name,
            endpoint = %picked.endpoint.address,
            for_ = ?time,
            "circuit breaker ejected an endpoint"
        );
    }
}

#[cfg(test)]
mod tests;
