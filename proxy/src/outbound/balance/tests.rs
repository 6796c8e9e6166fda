use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::outbound::fixtures;
use crate::outbound::stack::ToBackend;
use crate::state::Service;
use crate::state::endpoints::IDLE_DRIFT;
use crate::state::policy::Policy;

struct Setup {
    service: Arc<Service>,
    states: Arc<EndpointStates>,
    stack: Stack<ToBackend>,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
}

async fn setup(policy: Policy, ports: &[u16]) -> Setup {
    let service = fixtures::service(
        policy,
        ports.iter().map(|&p| fixtures::endpoint(p)).collect(),
    );
    let directory = fixtures::directory_with(service.clone()).await;
    let states = Arc::new(EndpointStates::default());
    let (inner, seen) = fixtures::by_endpoint(Default::default(), Vec::new());
    let stack = layer(states.clone(), directory, Arc::new(Metrics::new())).layer(inner);
    Setup {
        service,
        states,
        stack,
        seen,
    }
}

impl Setup {
    async fn send(&self, count: usize) -> BTreeMap<u16, usize> {
        self.seen.lock().clear();
        for _ in 0..count {
            let request = fixtures::to_backend(fixtures::request("GET", "/"), self.service.clone());
            self.stack.send(request).await.unwrap();
        }
        let mut counts = BTreeMap::new();
        for address in self.seen.lock().iter() {
            *counts.entry(address.port()).or_insert(0) += 1;
        }
        counts
    }

    fn state(&self, port: u16) -> Arc<EndpointState> {
        let listed = || self.service.endpoints.iter().map(|e| e.address).collect();
        self.states.get(fixtures::endpoint(port).address, listed)
    }

    /// Records an answer of `millis` from the endpoint on `port`, as if it came now.
    fn observe(&self, port: u16, millis: u64) {
        self.state(port)
            .latency
            .lock()
            .observe(Duration::from_millis(millis), Instant::now());
    }

    async fn error(&self) -> ProxyError {
        let request = fixtures::to_backend(fixtures::request("GET", "/"), self.service.clone());
        self.stack.send(request).await.unwrap_err()
    }
}

#[tokio::test(start_paused = true)]
async fn p2c_never_picks_the_slowest_of_three_and_counts_load() {
    let setup = setup(Policy::default(), &[1, 2, 3]).await;
    for (port, millis) in [(1, 10), (2, 10), (3, 500)] {
        setup.observe(port, millis);
    }
    let counts = setup.send(300).await;
    assert_eq!(
        counts.get(&3),
        None,
        "the slow endpoint loses every comparison: {counts:?}"
    );
    assert!(counts[&1] > 50 && counts[&2] > 50, "{counts:?}");

    // Load counts too: with 40 requests in flight on 1, 2 wins whenever drawn with it.
    let guards: Vec<_> = (0..40).map(|_| setup.state(1).start()).collect();
    let counts = setup.send(100).await;
    assert!(
        counts.get(&2).copied().unwrap_or(0) > counts.get(&1).copied().unwrap_or(0),
        "{counts:?}"
    );
    drop(guards);
}

#[tokio::test(start_paused = true)]
async fn round_robin_takes_endpoints_in_turn() {
    let policy = Policy {
        load_balancer: LoadBalancer::RoundRobin,
        ..Policy::default()
    };
    let setup = setup(policy, &[1, 2, 3]).await;
    let counts = setup.send(9).await;
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
}

#[tokio::test(start_paused = true)]
async fn ejected_and_full_endpoints_are_skipped_and_none_left_is_a_fast_503() {
    let policy = Policy {
        max_concurrent_requests: 2,
        ..Policy::default()
    };
    let setup = setup(policy.clone(), &[1, 2]).await;
    let breaker = &policy.circuit_breaker;
    for _ in 0..breaker.consecutive_failures {
        setup
            .state(1)
            .breaker
            .lock()
            .failed(Instant::now(), breaker, true);
    }
    assert_eq!(
        setup.send(20).await.keys().copied().collect::<Vec<_>>(),
        [2]
    );

    let full: Vec<_> = (0..2).map(|_| setup.state(2).start()).collect();
    let error = setup.error().await;
    assert!(
        matches!(error, ProxyError::LoadShed { limit: 2, .. }),
        "{error}"
    );
    assert_eq!(error.status(), 503);
    drop(full);

    for _ in 0..breaker.consecutive_failures {
        setup
            .state(2)
            .breaker
            .lock()
            .failed(Instant::now(), breaker, true);
    }
    assert!(matches!(setup.error().await, ProxyError::AllEjected(_)));

    let empty = super::super::fixtures::service(Policy::default(), Vec::new());
    let request = fixtures::to_backend(fixtures::request("GET", "/"), empty);
    let error = setup.stack.send(request).await.unwrap_err();
    assert!(matches!(error, ProxyError::NoEndpoints(_)), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_elsewhere_when_it_can() {
    let setup = setup(Policy::default(), &[1, 2]).await;
    for _ in 0..20 {
        let mut attempt =
            fixtures::to_backend(fixtures::request("GET", "/"), setup.service.clone());
        attempt.attempt.avoid = Some(fixtures::endpoint(1).address);
        setup.stack.send(attempt).await.unwrap();
    }
    assert!(setup.seen.lock().iter().all(|a| a.port() == 2));

    let single = setup_single().await;
    let mut attempt = fixtures::to_backend(fixtures::request("GET", "/"), single.service.clone());
    attempt.attempt.avoid = Some(fixtures::endpoint(1).address);
    single.stack.send(attempt).await.unwrap();
    assert_eq!(
        single.seen.lock().len(),
        1,
        "the only endpoint is still used"
    );
}

async fn setup_single() -> Setup {
    setup(Policy::default(), &[1]).await
}

#[tokio::test(start_paused = true)]
async fn endpoint_state_outlives_a_config_update() {
    let setup = setup(Policy::default(), &[1, 2]).await;
    let policy = Policy::default();
    for _ in 0..policy.circuit_breaker.consecutive_failures {
        setup
            .state(1)
            .breaker
            .lock()
            .failed(Instant::now(), &policy.circuit_breaker, true);
    }
    // A new snapshot of the service (say, a changed timeout) with the same endpoints.
    let updated = fixtures::service(
        Policy {
            timeout: Some(Duration::from_secs(1)),
            ..Policy::default()
        },
        vec![fixtures::endpoint(1), fixtures::endpoint(2)],
    );
    for _ in 0..10 {
        let request = fixtures::to_backend(fixtures::request("GET", "/"), updated.clone());
        setup.stack.send(request).await.unwrap();
    }
    assert!(
        setup.seen.lock().iter().all(|a| a.port() == 2),
        "endpoint 1 stays ejected across the update"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_gets_its_share_at_once() {
    let setup = setup(Policy::default(), &[1, 2]).await;
    setup.observe(1, 1);
    let counts = setup.send(200).await;
    assert!(
        counts.get(&2).copied().unwrap_or(0) > 0,
        "the unmeasured endpoint counts as fast as the best: {counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_many_endpoints_picks_spread_evenly() {
    let ports: Vec<u16> = (1..=100).collect();
    let setup = setup(Policy::default(), &ports).await;
    let counts = setup.send(20_000).await;
    assert_eq!(counts.len(), 100, "every endpoint was picked");
    // 200 each on average; a binomial's standard deviation here is 14.
    assert!(
        counts.values().all(|&count| (120..=280).contains(&count)),
        "{counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_both_draws_are_held_out_a_scan_finds_the_one_left() {
    let ports: Vec<u16> = (1..=1000).collect();
    let setup = setup(Policy::default(), &ports).await;
    let breaker = Policy::default().circuit_breaker;
    for &port in &ports[1..] {
        for _ in 0..breaker.consecutive_failures {
            setup
                .state(port)
                .breaker
                .lock()
                .failed(Instant::now(), &breaker, true);
        }
    }
    let counts = setup.send(50).await;
    assert_eq!(counts, BTreeMap::from([(1, 50)]));
}

#[tokio::test(start_paused = true)]
async fn close_latencies_share_the_traffic_and_a_clearly_slower_one_gets_none() {
    let setup = setup(Policy::default(), &[1, 2]).await;
    setup.observe(1, 10);
    setup.observe(2, 13);
    let counts = setup.send(200).await;
    // 1.3 times dearer: 35 % of the draws (a little more as the two estimates, left
    // without answers here, drift together).
    assert!((40..=105).contains(&counts[&2]), "{counts:?}");

    setup.observe(1, 10);
    setup.observe(2, 100);
    let counts = setup.send(100).await;
    assert_eq!(counts.get(&2), None, "ten times slower: {counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_latency_spike_keeps_an_endpoint_out_only_for_a_while() {
    let setup = setup(Policy::default(), &[1, 2]).await;
    setup.observe(1, 10);
    setup.observe(2, 100);
    assert_eq!(setup.send(100).await.get(&2), None);
    // A while on, 1 still answering at 10 ms: 2 has drifted back within reach (to about
    // 14.5 ms, and on towards 1 while the requests go out), so it takes a share again.
    // How large a share depends on how far the drift got: only its return is asserted.
    tokio::time::advance(IDLE_DRIFT * 3).await;
    setup.observe(1, 10);
    let counts = setup.send(400).await;
    assert!(counts.get(&2).copied().unwrap_or(0) > 40, "{counts:?}");
    assert!(counts.get(&1).copied().unwrap_or(0) > 40, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_ejection_ended_gets_its_probe_when_drawn() {
    let setup = setup(Policy::default(), &[1, 2]).await;
    let breaker = Policy::default().circuit_breaker;
    setup
        .state(1)
        .latency
        .lock()
        .observe(Duration::from_secs(1), Instant::now());
    for _ in 0..breaker.consecutive_failures {
        setup
            .state(1)
            .breaker
            .lock()
            .failed(Instant::now(), &breaker, true);
    }
    assert_eq!(setup.send(10).await.get(&1), None, "ejected");
    tokio::time::advance(breaker.base_ejection_time).await;
    let counts = setup.send(1).await;
    assert_eq!(
        counts.get(&1),
        Some(&1),
        "the probe goes however slow it was"
    );
}

#[test]
fn close_costs_are_a_weighted_coin_toss() {
    // (first, second, draw, takes first)
    let table = [
        (1.0, 1.0, 0.49, false),
        (1.0, 1.0, 0.51, true),
        (1.0, 1.5, 0.24, false),
        (1.0, 1.5, 0.26, true),
        (1.5, 1.0, 0.24, true),
        (1.0, 2.0, 0.0, true),
        (3.0, 1.0, 0.0, false),
        (0.0, 0.0, 0.9, true),
        (0.0, 5.0, 0.0, true),
    ];
    for (first, second, draw, expected) in table {
        assert_eq!(
            prefer_first(first, second, draw),
            expected,
            "{first} vs {second}, draw {draw}"
        );
    }
}
