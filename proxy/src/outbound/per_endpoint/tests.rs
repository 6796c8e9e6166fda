use std::net::SocketAddr;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::outbound::balance;
use crate::outbound::fixtures;
use crate::outbound::stack::ToBackend;
use crate::state::Service;
use crate::state::endpoints::EndpointStates;
use crate::state::policy::Policy;

struct Setup {
    service: Arc<Service>,
    stack: Stack<ToBackend>,
    states: Arc<EndpointStates>,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    metrics: Arc<Metrics>,
}

async fn setup(policy: Policy, ports: &[u16], failing: &[u16], hanging: &[u16]) -> Setup {
    let address = |p: &u16| fixtures::endpoint(*p).address;
    let service = fixtures::service(
        policy,
        ports.iter().map(|&p| fixtures::endpoint(p)).collect(),
    );
    let directory = fixtures::directory_with(service.clone()).await;
    let states = Arc::new(EndpointStates::default());
    let metrics = Arc::new(Metrics::new());
    let (inner, seen) = fixtures::by_endpoint(
        Arc::new(Mutex::new(failing.iter().map(address).collect())),
        hanging.iter().map(address).collect(),
    );
    let stack = balance::layer(states.clone(), directory, metrics.clone())
        .layer(layer(metrics.clone()).layer(inner));
    Setup {
        service,
        stack,
        states,
        seen,
        metrics,
    }
}

impl Setup {
    async fn send(&self) -> Result<u16, ProxyError> {
        let request = fixtures::to_backend(fixtures::request("GET", "/"), self.service.clone());
        self.stack
            .send(request)
            .await
            .map(|response| response.status().as_u16())
    }

    fn sent_to(&self, port: u16) -> usize {
        self.seen.lock().iter().filter(|a| a.port() == port).count()
    }
}

fn breaker_policy() -> Policy {
    let mut policy = Policy::default();
    policy.circuit_breaker.consecutive_failures = 3;
    policy.circuit_breaker.base_ejection_time = Duration::from_secs(10);
    policy
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_then_probed_after_a_growing_time() {
    let setup = setup(breaker_policy(), &[1, 2], &[1], &[]).await;
    let mut sent = 0;
    while setup.sent_to(1) < 3 {
        let _ = setup.send().await;
        sent += 1;
        assert!(sent < 1_000, "endpoint 1 never picked");
    }
    let ejected = setup.states.ejected();
    assert_eq!(ejected.len(), 1, "{ejected:?}");
    assert_eq!(ejected[0].address.port(), 1);
    assert_eq!(ejected[0].remaining_ms, 10_000);
    assert!(
        setup
            .metrics
            .encode()
            .contains("seam_endpoint_ejections_total{service=\"api\"} 1"),
        "{}",
        setup.metrics.encode()
    );
    for _ in 0..50 {
        assert_eq!(
            setup.send().await.unwrap(),
            200,
            "only the good endpoint now"
        );
    }
    assert_eq!(setup.sent_to(1), 3);

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        setup.send().await.unwrap(),
        503,
        "the first request after the ejection is the probe, whatever the latencies say"
    );
    assert_eq!(setup.sent_to(1), 4);
    let ejected = setup.states.ejected();
    assert_eq!(
        ejected[0].remaining_ms, 20_000,
        "one probe failed: ejected again for twice as long"
    );
    assert_eq!(ejected[0].times_ejected, 2);
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_ejection_percent_of_the_endpoints() {
    let setup = setup(breaker_policy(), &[1, 2], &[1, 2], &[]).await;
    for _ in 0..40 {
        let _ = setup.send().await;
    }
    assert_eq!(setup.states.ejected().len(), 1, "50 % of 2 endpoints is 1");
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_answers_504_and_counts_as_a_failure() {
    let mut policy = breaker_policy();
    policy.retries.per_try_timeout = Some(Duration::from_millis(500));
    let setup = setup(policy, &[1], &[], &[1]).await;
    let started = Instant::now();
    let error = setup.send().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert_eq!(error.to_string(), "per-try timeout after 500ms");
    assert_eq!(error.status(), 504);
    let state = setup.states.get(fixtures::endpoint(1).address, Vec::new);
    assert_eq!(
        state.in_flight(),
        0,
        "the timed-out attempt no longer counts"
    );
    assert!(
        state.latency.lock().nanos() >= 500e6,
        "its latency counts in the EWMA"
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_counts_in_flight_until_its_body_is_done() {
    let setup = setup(breaker_policy(), &[1], &[], &[]).await;
    let request = fixtures::to_backend(fixtures::request("GET", "/"), setup.service.clone());
    let response = setup.stack.send(request).await.unwrap();
    let state = setup.states.get(fixtures::endpoint(1).address, Vec::new);
    assert_eq!(
        state.in_flight(),
        1,
        "headers arrived, the body is still to come"
    );
    drop(response);
    assert_eq!(state.in_flight(), 0);
}
