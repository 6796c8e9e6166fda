//! Retries, safe by default and always budgeted. A failed attempt is tried again (on
//! another endpoint when there is one) when the route's `retries.on` names the failure,
//! attempts are left, the request body could be replayed whole (up to 64 KiB), the method
//! allows it (POST and PATCH only with `non_idempotent`, or after a failed connect, which
//! never reached the app), and the service's budget has room: retries may add at most
//! `budget_percent` of recent requests plus a small floor per second. Between attempts
//! the layer waits an exponential backoff with jitter. Decisions are made on response
//! headers (and a gRPC status that comes before any message), so a retry never follows
//! bytes that already went to the app.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashMap;
use http::{Method, Request, Response};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, layer::layer_fn};

use super::grpc;
use super::replay::{MAX_REPLAY_BYTES, Replay};
use super::{Attempt, Stack};
use crate::backoff::Backoff;
use crate::body::ProxyBody;
use crate::metrics::Metrics;
use crate::proxy_error::ProxyError;
use crate::state::policy::RetryOn;
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
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::ServerError => "5xx",
            Self::ConnectFailure => "connect-failure",
            Self::Reset => "reset",
            Self::Unavailable => "unavailable",
            Self::PerTryTimeout => "per-try-timeout",
        }
    }
}

/// Each service's retry budget, kept across config updates (made anew only when its
/// `budget_percent` changes).
#[derive(Default)]
pub struct Budgets {
    budgets: Mutex<HashMap<String, (u32, Arc<TpsBudget>)>>,
}

impl Budgets {
    fn for_service(&self, service: &str, percent: u32) -> Arc<TpsBudget> {
        let mut budgets = self.budgets.lock().expect("budget lock poisoned");
        match budgets.get(service) {
            Some((kept, budget)) if *kept == percent => budget.clone(),
            _ => {
                let budget = Arc::new(TpsBudget::new(
                    BUDGET_WINDOW,
                    BUDGET_FLOOR_PER_SECOND,
                    percent as f32 / 100.0,
                ));
                budgets.insert(service.to_owned(), (percent, budget.clone()));
                budget
            }
        }
    }
}

pub fn layer(
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
) -> impl Layer<Stack, Service = Stack> + Clone {
    layer_fn(move |inner: Stack| {
        let budgets = budgets.clone();
        let metrics = metrics.clone();
        Stack::new(move |attempt: Attempt| {
            retrying(inner.clone(), budgets.clone(), metrics.clone(), attempt)
        })
    })
}

async fn retrying(
    inner: Stack,
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
    first: Attempt,
) -> Result<Response<ProxyBody>, ProxyError> {
    let policy = &first.choice.route.policy.retries;
    let budget = budgets.for_service(&first.choice.service.name, policy.budget_percent);
    budget.deposit();
    if policy.attempts == 0 {
        return inner.send(first).await;
    }
    let Attempt {
        request, choice, ..
    } = first;
    let policy = &choice.route.policy.retries;
    let service = &choice.service.name;
    let (parts, body) = request.into_parts();
    let replay = Replay::new(body, MAX_REPLAY_BYTES);
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    let mut avoid = None;
    let mut attempt = 0;
    loop {
        let mut request = Request::new(replay.attempt());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        *request.extensions_mut() = parts.extensions.clone();
        let mut outcome = inner
            .send(Attempt {
                avoid,
                ..Attempt::new(request, choice.clone())
            })
            .await;
        let more = attempt < policy.attempts;
        let mut grpc_status = None;
        if more && policy.on.unavailable {
            outcome = match outcome {
                Ok(response) if grpc_status::is_grpc(response.headers()) => {
                    let (status, response) = grpc::peek_status(response).await;
                    grpc_status = status;
                    Ok(response)
                }
                other => other,
            };
        }
        let Some(reason) = retry_reason(&outcome, grpc_status, policy.on) else {
            return outcome;
        };
        let method_allows =
            reason == Reason::ConnectFailure || policy.non_idempotent || idempotent(&parts.method);
        if !more || !method_allows || !replay.replayable() {
            return outcome;
        }
        if !budget.withdraw() {
            metrics.retry_budget_exhausted(service);
            return outcome;
        }
        metrics.retried(service, reason.as_str());
        choice.notes.retried();
        tracing::debug!(%service, reason = reason.as_str(), attempt, "retrying");
        avoid = choice.notes.last_attempted();
        drop(outcome);
        tokio::time::sleep(backoff.next_delay()).await;
        attempt += 1;
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

/// POST and PATCH may change something each time; CONNECT opens a tunnel.
fn idempotent(method: &Method) -> bool {
    !matches!(*method, Method::POST | Method::PATCH | Method::CONNECT)
}

#[cfg(test)]
mod tests;
