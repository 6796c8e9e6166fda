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
    assert_eq!(ewma.estimate(Instant::now()), None, "not measured yet");
    ewma.observe(Duration::from_millis(200), Instant::now());
    assert_eq!(ewma.nanos(), 200e6, "a slower answer counts at once");
    tokio::time::advance(DECAY).await;
    ewma.observe(Duration::from_millis(10), Instant::now());
    let expected = 200e6 * (-1.0f64).exp() + 10e6 * (1.0 - (-1.0f64).exp());
    assert!((ewma.nanos() - expected).abs() < 1.0, "{}", ewma.nanos());
    tokio::time::advance(DECAY).await;
    let idle = ewma.estimate(Instant::now()).unwrap();
    assert!(
        (idle - expected * (-1.0f64).exp()).abs() < 1.0,
        "left alone it looks cheaper: {idle}"
    );

    // Answers in quick succession still move it: each weighs at least 10 %.
    ewma.observe(Duration::from_millis(1), Instant::now());
    let before = ewma.nanos();
    ewma.observe(Duration::from_millis(1), Instant::now());
    let expected = before * 0.9 + 1e6 * 0.1;
    assert!((ewma.nanos() - expected).abs() < 1.0, "{}", ewma.nanos());
}

#[test]
fn state_is_shared_per_address_and_dropped_when_no_service_lists_it() {
    let states = EndpointStates::default();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let first = states.get(a, Vec::new);
    assert!(Arc::ptr_eq(&first, &states.get(a, Vec::new)));
    let now = Instant::now();
    assert_eq!(first.cost(now, 7.0), 7.0, "unmeasured: as fast as told");
    let guard = first.start();
    assert_eq!(first.in_flight(), 1);
    assert_eq!(first.cost(now, 7.0), 14.0, "the load it would join counts");
    drop(guard);
    assert_eq!(first.in_flight(), 0);
    states.get(b, || vec![b]);
    assert!(
        !Arc::ptr_eq(&first, &states.get(a, Vec::new)),
        "a's state went when no service listed it"
    );
}
