use super::*;

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 3,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
    }
}

#[tokio::test(start_paused = true)]
async fn ejects_after_consecutive_failures_for_growing_times_with_one_probe() {
    let policy = policy();
    let mut breaker = Breaker::default();
    let now = Instant::now();
    assert_eq!(breaker.failed(now, &policy, true), Verdict::Kept);
    assert_eq!(breaker.failed(now, &policy, true), Verdict::Kept);
    breaker.succeeded();
    assert_eq!(breaker.failed(now, &policy, true), Verdict::Kept);
    assert_eq!(breaker.failed(now, &policy, true), Verdict::Kept);
    assert_eq!(
        breaker.failed(now, &policy, true),
        Verdict::Ejected(Duration::from_secs(30)),
        "the third failure in a row ejects"
    );
    assert!(!breaker.available(Instant::now()));

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!breaker.available(Instant::now()), "still ejected at 29 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        breaker.available(Instant::now()),
        "the ejection ends at 30 s"
    );
    breaker.begin(Instant::now());
    assert!(
        !breaker.available(Instant::now()),
        "one probe at a time while the ejection has ended"
    );
    assert_eq!(
        breaker.failed(Instant::now(), &policy, true),
        Verdict::Ejected(Duration::from_secs(60)),
        "a failed probe ejects again, twice as long"
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!breaker.available(Instant::now()));
    tokio::time::advance(Duration::from_secs(1)).await;
    breaker.begin(Instant::now());
    breaker.succeeded();
    assert!(breaker.available(Instant::now()), "a good probe closes it");
    assert!(!breaker.is_ejected());
    for _ in 0..2 {
        breaker.failed(Instant::now(), &policy, true);
    }
    assert_eq!(
        breaker.failed(Instant::now(), &policy, true),
        Verdict::Ejected(Duration::from_secs(30)),
        "after a good probe the ejection time starts over"
    );
}

#[tokio::test(start_paused = true)]
async fn no_ejection_without_room_under_the_max_percent() {
    let policy = policy();
    let mut breaker = Breaker::default();
    for _ in 0..10 {
        assert_eq!(
            breaker.failed(Instant::now(), &policy, false),
            Verdict::Kept
        );
    }
    assert!(breaker.available(Instant::now()));
    assert_eq!(
        breaker.failed(Instant::now(), &policy, true),
        Verdict::Ejected(Duration::from_secs(30)),
        "once there is room, the failures so far count"
    );
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_jumps_up_and_decays_down() {
    let mut ewma = PeakEwma::new(Instant::now());
    assert_eq!(ewma.settle(Instant::now(), None), None, "not measured yet");
    ewma.observe(Duration::from_millis(200), Instant::now());
    assert_eq!(
        ewma.nanos(),
        200e6,
        "a first answer with nothing to compare counts whole"
    );
    tokio::time::advance(DECAY).await;
    ewma.observe(Duration::from_millis(10), Instant::now());
    let expected = 200e6 * (-1.0f64).exp() + 10e6 * (1.0 - (-1.0f64).exp());
    assert!((ewma.nanos() - expected).abs() < 1.0, "{}", ewma.nanos());
    let before = ewma.nanos();
    ewma.observe(Duration::from_millis(300), Instant::now());
    let peaked = before + (300e6 - before) / 2.0;
    assert_eq!(ewma.nanos(), peaked, "a slower answer counts at once, half");

    // Answers in quick succession still move it: each weighs at least 10 %.
    ewma.observe(Duration::from_millis(1), Instant::now());
    let expected = peaked * 0.9 + 1e6 * 0.1;
    assert!((ewma.nanos() - expected).abs() < 1.0, "{}", ewma.nanos());
}

#[tokio::test(start_paused = true)]
async fn an_idle_estimate_drifts_towards_its_sibling_and_the_drift_accumulates() {
    let mut ewma = PeakEwma::new(Instant::now());
    ewma.observe(Duration::from_millis(100), Instant::now());
    assert_eq!(
        ewma.settle(Instant::now(), None),
        Some(100e6),
        "nothing to drift to"
    );
    tokio::time::advance(IDLE_DRIFT).await;
    let once = ewma.settle(Instant::now(), Some(10e6)).unwrap();
    let expected = 10e6 + 90e6 * (-1.0f64).exp();
    assert!((once - expected).abs() < 1.0, "{once}");
    tokio::time::advance(IDLE_DRIFT).await;
    let twice = ewma.settle(Instant::now(), Some(10e6)).unwrap();
    let expected = 10e6 + 90e6 * (-2.0f64).exp();
    assert!((twice - expected).abs() < 1.0, "{twice}");
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_starts_from_its_sibling_and_its_first_answer_counts_half() {
    let mut ewma = PeakEwma::new(Instant::now());
    assert_eq!(
        ewma.settle(Instant::now(), Some(4e6)),
        Some(4e6),
        "unmeasured: as fast as the sibling"
    );
    ewma.observe(Duration::from_millis(20), Instant::now());
    assert_eq!(
        ewma.nanos(),
        12e6,
        "a cold first answer is not the estimate"
    );
}

#[test]
fn state_is_shared_per_address_and_dropped_when_no_service_lists_it() {
    let states = EndpointStates::default();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let first = states.get(a, Vec::new);
    assert!(Arc::ptr_eq(&first, &states.get(a, Vec::new)));
    let guard = first.start();
    assert_eq!(first.in_flight(), 1);
    drop(guard);
    assert_eq!(first.in_flight(), 0);
    states.get(b, || vec![b]);
    assert!(
        !Arc::ptr_eq(&first, &states.get(a, Vec::new)),
        "a's state went when no service listed it"
    );
}

#[test]
fn a_whole_service_is_added_at_once_and_known_states_are_kept() {
    let states = EndpointStates::default();
    let addresses: Vec<SocketAddr> = (1..=1000)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect();
    let listed = || addresses.clone();
    let all = states.get_all(&addresses, listed);
    assert_eq!(all.len(), 1000);
    assert!(
        all.iter()
            .zip(&addresses)
            .all(|(state, a)| state.address == *a)
    );
    let again = states.get_all(&addresses[..10], listed);
    assert!(Arc::ptr_eq(&again[3], &all[3]), "kept, not made again");
    assert!(Arc::ptr_eq(&states.get(addresses[999], listed), &all[999]));
}
