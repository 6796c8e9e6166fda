use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::outbound::fixtures::{self, Outcome};
use crate::state::policy::Policy;

fn policy(attempts: u32) -> Policy {
    let mut policy = Policy::default();
    policy.retries.attempts = attempts;
    policy
}

fn build(
    script: Vec<Outcome>,
) -> (
    Stack<Attempt>,
    Arc<Mutex<Vec<fixtures::Call>>>,
    Arc<Metrics>,
) {
    let (inner, calls) = fixtures::scripted(script);
    let metrics = Arc::new(Metrics::new());
    let stack = layer(Arc::new(Budgets::default()), metrics.clone()).layer(inner);
    (stack, calls, metrics)
}

fn request(method: &str, body: &'static [u8], policy: Policy) -> Attempt {
    fixtures::routed_to(
        fixtures::request_with_body(method, "/", Bytes::from_static(body)),
        fixtures::service(policy, Vec::new()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_retried_with_the_whole_body_until_an_answer() {
    let (stack, calls, metrics) = build(vec![
        Outcome::Status(503),
        Outcome::Reset,
        Outcome::Status(200),
    ]);
    let response = stack
        .send(request("PUT", b"payload", policy(2)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let calls = calls.lock();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|call| call.body == "payload"), "{calls:?}");
    let text = metrics.encode();
    assert!(
        text.contains("seam_retries_total{service=\"api\",reason=\"5xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("seam_retries_total{service=\"api\",reason=\"reset\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_run_out_and_the_last_answer_stands() {
    let (stack, calls, _) = build(vec![Outcome::Status(503)]);
    let response = stack.send(request("GET", b"", policy(2))).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(calls.lock().len(), 3, "the first try and 2 retries");
}

#[tokio::test(start_paused = true)]
async fn post_and_patch_are_tried_once_unless_the_app_never_saw_them() {
    for method in ["POST", "PATCH"] {
        let (stack, calls, _) = build(vec![Outcome::Status(503)]);
        let response = stack
            .send(request(method, b"pay", policy(2)))
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(calls.lock().len(), 1, "{method} is tried once");
    }

    let (stack, calls, _) = build(vec![Outcome::ConnectFailure, Outcome::Status(201)]);
    let response = stack
        .send(request("POST", b"pay", policy(2)))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "a failed connect never reached the app"
    );
    assert_eq!(calls.lock().len(), 2);

    let mut allowed = policy(2);
    allowed.retries.non_idempotent = true;
    let (stack, calls, _) = build(vec![Outcome::Status(503), Outcome::Status(200)]);
    let response = stack.send(request("POST", b"pay", allowed)).await.unwrap();
    assert_eq!(response.status(), 200, "non_idempotent: true allows it");
    assert_eq!(calls.lock().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn only_the_failures_named_in_on_are_retried() {
    let mut only_connect = policy(2);
    only_connect.retries.on = RetryOn {
        connect_failure: true,
        ..RetryOn::default()
    };
    for outcome in [Outcome::Status(502), Outcome::Reset, Outcome::Grpc(14)] {
        let (stack, calls, _) = build(vec![outcome.clone(), Outcome::Status(200)]);
        let _ = stack.send(request("GET", b"", only_connect.clone())).await;
        assert_eq!(calls.lock().len(), 1, "{outcome:?} is not retried");
    }
    let (stack, calls, _) = build(vec![Outcome::Grpc(14), Outcome::Grpc(0)]);
    let response = stack
        .send(request("POST", b"", {
            let mut p = policy(2);
            p.retries.non_idempotent = true;
            p
        }))
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    assert_eq!(calls.lock().len(), 2, "UNAVAILABLE is retried");
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_exponentially_with_jitter() {
    let (stack, calls, _) = build(vec![Outcome::Status(503)]);
    let _ = stack.send(request("GET", b"", policy(4))).await;
    let calls = calls.lock();
    assert_eq!(calls.len(), 5);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, ceiling_ms) in gaps.iter().zip([25u64, 50, 100, 200]) {
        let ceiling = Duration::from_millis(ceiling_ms);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "gap {gap:?} not within [{:?}, {ceiling:?}]: {gaps:?}",
            ceiling / 2
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_avoids_the_endpoint_that_failed() {
    let (inner, calls) = fixtures::scripted(vec![Outcome::Status(503), Outcome::Status(200)]);
    // Stands in for the balancer, which records where each attempt went.
    let recorder = Stack::from_fn(move |attempt: Attempt| {
        let endpoint = fixtures::endpoint(7);
        attempt.choice.notes.attempted(crate::telemetry::Upstream {
            endpoint: endpoint.address,
            identity: endpoint.identity,
        });
        inner.send(attempt)
    });
    let stack = layer(Arc::new(Budgets::default()), Arc::new(Metrics::new())).layer(recorder);
    let response = stack.send(request("GET", b"", policy(1))).await.unwrap();
    assert_eq!(response.status(), 200);
    let calls = calls.lock();
    assert_eq!(calls[0].avoid, None);
    assert_eq!(calls[1].avoid, Some(fixtures::endpoint(7).address));
}

#[tokio::test(start_paused = true)]
async fn a_body_over_64_kib_is_not_retried() {
    static BIG: [u8; MAX_REPLAY_BYTES + 1] = [7; MAX_REPLAY_BYTES + 1];
    let (stack, calls, _) = build(vec![Outcome::Status(503), Outcome::Status(200)]);
    let response = stack.send(request("PUT", &BIG, policy(2))).await.unwrap();
    assert_eq!(response.status(), 503);
    let calls = calls.lock();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].body.len(),
        MAX_REPLAY_BYTES + 1,
        "sent once, whole"
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_at_its_share_of_requests() {
    // Always failing, one retry allowed per request, 20 % budget: over 1 000 requests
    // (the clock stands still, so all fall in one window) retries stay near 20 % of
    // them plus the floor (5 per second over a 10 s window).
    let mut budgeted = policy(1);
    budgeted.retries.budget_percent = 20;
    let (stack, calls, metrics) = build(vec![Outcome::Status(503)]);
    let requests = 1_000;
    for _ in 0..requests {
        let _ = stack.send(request("GET", b"", budgeted.clone())).await;
    }
    let retries = calls.lock().len() - requests;
    assert!(
        (200..=260).contains(&retries),
        "{retries} retries for {requests} requests"
    );
    let text = metrics.encode();
    let exhausted = requests - retries;
    assert!(
        text.contains(&format!(
            "seam_retry_budget_exhausted_total{{service=\"api\"}} {exhausted}"
        )),
        "{text}"
    );
}

fn rate_limited_policy(timeout: Option<Duration>) -> Policy {
    let mut policy = policy(2);
    policy.timeout = timeout;
    policy.retries.on.rate_limited = true;
    policy
}

#[tokio::test(start_paused = true)]
async fn a_429_is_not_retried_by_default() {
    let (stack, calls, _) = build(vec![Outcome::RateLimited(Some("1")), Outcome::Status(200)]);
    let response = stack.send(request("GET", b"", policy(2))).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1", "as it came");
    assert_eq!(calls.lock().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn with_rate_limited_a_429_is_retried_after_its_retry_after() {
    let (stack, calls, metrics) =
        build(vec![Outcome::RateLimited(Some("2")), Outcome::Status(200)]);
    let policy = rate_limited_policy(Some(Duration::from_secs(10)));
    let response = stack.send(request("GET", b"", policy)).await.unwrap();
    assert_eq!(response.status(), 200);
    let calls = calls.lock();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].at - calls[0].at,
        Duration::from_secs(2),
        "retry-after, not the backoff"
    );
    assert!(
        metrics
            .encode()
            .contains("seam_retries_total{service=\"api\",reason=\"rate-limited\"} 1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_waits_the_backoff() {
    let (stack, calls, _) = build(vec![Outcome::RateLimited(None), Outcome::Status(200)]);
    let policy = rate_limited_policy(Some(Duration::from_secs(10)));
    let response = stack.send(request("GET", b"", policy)).await.unwrap();
    assert_eq!(response.status(), 200);
    let calls = calls.lock();
    assert!(calls[1].at - calls[0].at <= BACKOFF_MAX);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_time_left_returns_the_429_as_it_came() {
    let cases = [
        (Some(Duration::from_secs(10)), None, "10"),
        (Some(Duration::from_secs(10)), None, "60"),
        (None, Some(Duration::from_secs(1)), "2"),
        (None, None, "1"),
    ];
    for (timeout, per_try, retry_after) in cases {
        let (stack, calls, _) = build(vec![
            Outcome::RateLimited(Some(retry_after)),
            Outcome::Status(200),
        ]);
        let mut policy = rate_limited_policy(timeout);
        policy.retries.per_try_timeout = per_try;
        let response = stack.send(request("GET", b"", policy)).await.unwrap();
        assert_eq!(
            response.status(),
            429,
            "{timeout:?} {per_try:?} {retry_after}"
        );
        assert_eq!(response.headers()["retry-after"], retry_after);
        assert_eq!(calls.lock().len(), 1);
    }
    // Within the per-try timeout when there is no whole-request timeout.
    let (stack, calls, _) = build(vec![Outcome::RateLimited(Some("1")), Outcome::Status(200)]);
    let mut policy = rate_limited_policy(None);
    policy.retries.per_try_timeout = Some(Duration::from_secs(2));
    let response = stack.send(request("GET", b"", policy)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.lock().len(), 2);
}

#[test]
fn a_request_no_outcome_could_retry_is_not_copied() {
    let big = Bytes::from(vec![0u8; MAX_REPLAY_BYTES + 1]);
    let mut no_connect_retry = Policy::default().retries;
    no_connect_retry.on.connect_failure = false;
    let mut non_idempotent = no_connect_retry.clone();
    non_idempotent.non_idempotent = true;
    let mut off = Policy::default().retries;
    off.attempts = 0;
    let defaults = Policy::default().retries;
    // (policy, method, body, may retry)
    let table = [
        (&defaults, "GET", Bytes::new(), true),
        (&defaults, "POST", Bytes::new(), true),
        (&no_connect_retry, "POST", Bytes::new(), false),
        (&no_connect_retry, "PUT", Bytes::new(), true),
        (&non_idempotent, "POST", Bytes::new(), true),
        (&off, "GET", Bytes::new(), false),
        (&defaults, "PUT", big, false),
    ];
    for (policy, method, body, expected) in table {
        let request = fixtures::request_with_body(method, "/", body);
        assert_eq!(
            may_retry(policy, &request),
            expected,
            "{method} with {policy:?}"
        );
    }
}
