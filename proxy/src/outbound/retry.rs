//! Retries, safe by default and always budgeted. A failed attempt is tried again (on
//! another endpoint when there is one) when the route's `retries.on` names the failure,
//! attempts are left, the request body could be replayed whole (up to 64 KiB), the method
//! allows it (POST and PATCH only with `non_idempotent`, or after a failed connect, which
//! never reached the app), and the service's budget has room: retries may add at most
//! `budget_percent` of recent requests plus a small floor per second. Between attempts
//! the layer waits an exponential backoff with jitter. A `429` is retried only when
//! `retries.on` says `rate-limited`, after the wait its `retry-after` asks for (else the
//! backoff), and only when that wait ends within what is left of the whole-request timeout
//! (with none, within the per-try timeout; with neither, never): otherwise the 429 goes
//! back as it came. Decisions are made on response
//! headers (and a gRPC status that comes before any message), so a retry never follows
//! bytes that already went to the app.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foldhash::HashMap;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, layer::layer_fn};

use super::grpc;
use super::replay::{MAX_REPLAY_BYTES, Replay};
use super::retry_after;
use super::route::RouteChoice;
use super::stack::{Attempt, Stack};
use crate::backoff::Backoff;
use crate::body::ProxyBody;
use crate::metrics::Metrics;
use crate::proxy_error::ProxyError;
use crate::state::policy::{Policy, RetryOn, RetryPolicy};
use crate::telemetry::grpc_status;

const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How far back the budget counts requests.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Retries always allowed per second, so a quiet service can still retry.
const BUDGET_FLOOR_PER_SECOND: u32 = 5;

/// Why an attempt is retried (the `reason` label of `seam_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    ServerError,
    ConnectFailure,
    Reset,
    Unavailable,
    PerTryTimeout,
    RateLimited,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::ServerError => "5xx",
            Self::ConnectFailure => "connect-failure",
            Self::Reset => "reset",
            Self::Unavailable => "unavailable",
            Self::PerTryTimeout => "per-try-timeout",
            Self::RateLimited => "rate-limited",
        }
    }
}

/// Each service's retry budget, kept across config updates (made anew only when its
/// `budget_percent` changes). A snapshot's route looks its budget up here once (see
/// `Route::retry_budget`), so requests never take this lock.
#[derive(Default)]
pub struct Budgets {
    budgets: Mutex<HashMap<Arc<str>, KeptBudget>>,
}

/// A service's budget and the `budget_percent` it was made for.
struct KeptBudget {
    percent: u32,
    budget: Arc<TpsBudget>,
}

impl Budgets {
    fn for_service(&self, service: &Arc<str>, percent: u32) -> Arc<TpsBudget> {
        let mut budgets = self.budgets.lock();
        match budgets.get(service) {
            Some(kept) if kept.percent == percent => kept.budget.clone(),
            _ => {
                let budget = Arc::new(TpsBudget::new(
                    BUDGET_WINDOW,
                    BUDGET_FLOOR_PER_SECOND,
                    percent as f32 / 100.0,
                ));
                let kept = KeptBudget {
                    percent,
                    budget: budget.clone(),
                };
                budgets.insert(service.clone(), kept);
                budget
            }
        }
    }
}

pub fn layer(
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
) -> impl Layer<Stack<Attempt>, Service = Stack<Attempt>> + Clone {
    layer_fn(move |inner: Stack<Attempt>| {
        let budgets = budgets.clone();
        let metrics = metrics.clone();
        Stack::from_fn(move |attempt: Attempt| {
            let route = &attempt.choice.route;
            let policy = &route.policy.retries;
            let budget = route.retry_budget.get_or_init(|| {
                budgets.for_service(&attempt.choice.service.name, policy.budget_percent)
            });
            budget.deposit();
            if !may_retry(policy, &attempt.request) {
                return inner.send(attempt);
            }
            let budget = budget.clone();
            let Attempt {
                request, choice, ..
            } = attempt;
            // Only a retry after `retry-after` needs to know how long the request has run.
            let started = choice
                .route
                .policy
                .retries
                .on
                .rate_limited
                .then(Instant::now);
            let (head, body) = request.into_parts();
            let (replay, first_body) = Replay::new(body, MAX_REPLAY_BYTES);
            let retrying = Retrying {
                inner: inner.clone(),
                budget,
                metrics: metrics.clone(),
                head,
                replay,
                choice,
                started,
            };
            Box::pin(retrying.run(first_body))
        })
    })
}

/// Whether any outcome could lead to a retry of `request`. When none could, the request
/// goes down as it is: no copy of its head is kept and its body is not teed.
fn may_retry(policy: &RetryPolicy, request: &Request<ProxyBody>) -> bool {
    policy.attempts > 0
        && (policy.on.connect_failure || policy.non_idempotent || idempotent(request.method()))
        && request.body().size_hint().lower() <= MAX_REPLAY_BYTES as u64
}

/// One request that may be tried more than once. The request is taken apart before its
/// future is made, so the future holds its head once (an `async fn`'s arguments are
/// kept twice in its future, which is moved and allocated per request).
struct Retrying {
    inner: Stack<Attempt>,
    budget: Arc<TpsBudget>,
    metrics: Arc<Metrics>,
    /// What every attempt's request is made from.
    head: Parts,
    replay: Replay,
    choice: RouteChoice,
    /// When the first attempt began (the whole-request timeout runs from about then);
    /// read only when `retries.on` has `rate-limited`.
    started: Option<Instant>,
}

impl Retrying {
    /// How long the request has run (zero when nothing asked to know).
    fn elapsed(&self) -> Duration {
        self.started
            .map(|started| started.elapsed())
            .unwrap_or_default()
    }

    /// Tries the request until an attempt's outcome is final.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep a second copy of `self` in the future"
    )]
    fn run(
        self,
        first_body: ProxyBody,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send {
        async move {
            let policy = &self.choice.route.policy.retries;
            let service = &self.choice.service.name;
            let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
            let mut avoid = None;
            let mut attempt = 0;
            let mut body = first_body;
            loop {
                let mut outcome = self.inner.send(self.attempt(body, avoid)).await;
                let more = attempt < policy.attempts;
                let mut grpc_status = None;
                if more && policy.on.unavailable {
                    outcome = match outcome {
                        // Boxed: only gRPC answers are peeked at, and the peek is larger than
                        // the rest of this future.
                        Ok(response) if grpc_status::is_grpc(response.headers()) => {
                            let (status, response) = Box::pin(grpc::peek_status(response)).await;
                            grpc_status = status;
                            Ok(response)
                        }
                        other => other,
                    };
                }
                let Some(reason) = retry_reason(&outcome, grpc_status, policy.on) else {
                    return outcome;
                };
                let method_allows = reason == Reason::ConnectFailure
                    || policy.non_idempotent
                    || idempotent(&self.head.method);
                if !more || !method_allows || !self.replay.replayable() {
                    return outcome;
                }
                let asked = match (&outcome, reason) {
                    (Ok(response), Reason::RateLimited) => {
                        retry_after::wait(response.headers(), SystemTime::now())
                    }
                    _ => None,
                };
                if let Some(wait) = asked
                    && !wait_fits(wait, &self.choice.route.policy, self.elapsed())
                {
                    return outcome;
                }
                if !self.budget.withdraw() {
                    self.metrics.retry_budget_exhausted(service);
                    return outcome;
                }
                // Made now, before the backoff: it stops the attempt that failed from
                // sending its body any further.
                let Some(next_body) = self.replay.retry_body() else {
                    return outcome;
                };
                body = next_body;
                self.metrics.retried(service, reason.as_str());
                self.choice.notes.retried();
                tracing::debug!(%service, reason = reason.as_str(), attempt, "retrying");
                avoid = self.choice.notes.last_attempted();
                drop(outcome);
                tokio::time::sleep(asked.unwrap_or_else(|| backoff.next_delay())).await;
                attempt += 1;
            }
        }
    }

    /// The next attempt: a copy of the request head, with `body`.
    fn attempt(&self, body: ProxyBody, avoid: Option<SocketAddr>) -> Attempt {
        Attempt {
            request: Request::from_parts(self.head.clone(), body),
            choice: self.choice.clone(),
            avoid,
        }
    }
}

fn retry_reason(
    outcome: &Result<Response<ProxyBody>, ProxyError>,
    grpc_status: Option<u32>,
    on: RetryOn,
) -> Option<Reason> {
    match outcome {
        Ok(response) if response.status().is_server_error() && on.server_error => {
            Some(Reason::ServerError)
        }
        Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS && on.rate_limited => {
            Some(Reason::RateLimited)
        }
        Ok(_) if grpc_status == Some(grpc::UNAVAILABLE) && on.unavailable => {
            Some(Reason::Unavailable)
        }
        Ok(_) => None,
        Err(ProxyError::PeerConnect { .. }) if on.connect_failure => Some(Reason::ConnectFailure),
        Err(ProxyError::Peer { .. }) if on.reset => Some(Reason::Reset),
        Err(ProxyError::PerTryTimeout(_)) => Some(Reason::PerTryTimeout),
        Err(_) => None,
    }
}

/// Whether waiting `wait` before the next attempt, `elapsed` into the request, ends
/// before the whole-request timeout (with none, within the per-try timeout; with neither
/// a wait is never taken, so a request cannot hang on a server's say-so).
fn wait_fits(wait: Duration, policy: &Policy, elapsed: Duration) -> bool {
    match (policy.timeout, policy.retries.per_try_timeout) {
        (Some(timeout), _) => wait < timeout.saturating_sub(elapsed),
        (None, Some(per_try)) => wait <= per_try,
        (None, None) => false,
    }
}

/// POST and PATCH may change something each time; CONNECT opens a tunnel.
fn idempotent(method: &Method) -> bool {
    !matches!(*method, Method::POST | Method::PATCH | Method::CONNECT)
}

#[cfg(test)]
mod tests;
