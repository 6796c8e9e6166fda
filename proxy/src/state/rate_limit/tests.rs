use super::*;
use governor::clock::FakeRelativeClock;

fn rule(requests_per_second: u64, burst: u32) -> Rule {
    Rule {
        millirequests_per_second: requests_per_second * 1000,
        burst: NonZeroU32::new(burst).unwrap(),
    }
}

fn id(name: &str) -> SpiffeId {
    SpiffeId::workload("seam.local", "default", name).unwrap()
}

fn limiter(limit: RateLimit) -> (Limiter<FakeRelativeClock>, FakeRelativeClock, Counter) {
    let clock = FakeRelativeClock::default();
    let overflow = Counter::default();
    (
        Limiter::with_clock(limit, overflow.clone(), clock.clone()),
        clock,
        overflow,
    )
}

/// Sends `count` requests from `caller` at one instant; how many got through.
fn admitted(limiter: &Limiter<FakeRelativeClock>, caller: &SpiffeId, count: usize) -> usize {
    let key = caller.shared();
    (0..count)
        .filter(|_| limiter.check(Some(caller), &key).is_ok())
        .count()
}

#[test]
fn the_total_admits_its_burst_then_refuses_until_a_cell_is_free() {
    let (limiter, clock, _) = limiter(RateLimit {
        total: Some(rule(1, 5)),
        per_caller: None,
        overrides: Vec::new(),
        instances: 1,
    });
    let web = id("web");
    assert_eq!(admitted(&limiter, &web, 8), 5);
    let refused = limiter.check(Some(&web), &web.shared()).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Total);
    assert_eq!(refused.retry_after_seconds(), 1);
    assert_eq!(
        refused.describe("api", web.as_str()),
        "rate limit: total limit of service api (1 requests/s for this instance) exceeded"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&limiter, &web, 3), 1, "one cell a second");
}

#[test]
fn each_caller_has_its_own_bucket_and_overrides_give_theirs_another_rule() {
    let batch = id("batch");
    let (limiter, _, _) = limiter(RateLimit {
        total: None,
        per_caller: Some(rule(1, 2)),
        overrides: vec![Override {
            callers: vec![batch.clone()],
            rule: rule(1, 4),
        }],
        instances: 1,
    });
    let (web, ops) = (id("web"), id("ops"));
    assert_eq!(admitted(&limiter, &web, 5), 2);
    assert_eq!(
        admitted(&limiter, &ops, 5),
        2,
        "web's exhaustion leaves ops alone"
    );
    assert_eq!(admitted(&limiter, &batch, 6), 4, "the override's burst");
    let refused = limiter.check(Some(&batch), &batch.shared()).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Override);
    assert_eq!(
        limiter
            .check(Some(&web), &web.shared())
            .unwrap_err()
            .describe("api", web.as_str()),
        "rate limit: per-caller limit of service api (1 requests/s for this instance) exceeded \
         by spiffe://seam.local/ns/default/sa/web"
    );
    let plaintext: Arc<str> = "plaintext".into();
    let unmeshed = (0..5)
        .filter(|_| limiter.check(None, &plaintext).is_ok())
        .count();
    assert_eq!(unmeshed, 2, "every plaintext caller shares one bucket");
}

#[test]
fn a_request_the_total_refuses_costs_its_caller_nothing() {
    let (limiter, clock, _) = limiter(RateLimit {
        total: Some(rule(1, 1)),
        per_caller: Some(rule(1, 2)),
        overrides: Vec::new(),
        instances: 1,
    });
    let web = id("web");
    assert_eq!(admitted(&limiter, &web, 4), 1, "the total's single cell");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        admitted(&limiter, &web, 1),
        1,
        "the per-caller bucket still had a cell: the refused requests took none"
    );
}

#[test]
fn small_rates_keep_their_share_and_say_it() {
    let half = Rule {
        millirequests_per_second: 500,
        burst: NonZeroU32::MIN,
    };
    assert_eq!(half.quota().replenish_interval(), Duration::from_secs(2));
    assert_eq!(half.to_string(), "0.5");
    assert_eq!(rule(10, 1).to_string(), "10");
    let refused = Refused {
        kind: LimitKind::Total,
        rule: half,
        retry_after: Duration::from_millis(1001),
    };
    assert_eq!(refused.retry_after_seconds(), 2, "rounded up");
    let soon = Refused {
        retry_after: Duration::ZERO,
        ..refused
    };
    assert_eq!(soon.retry_after_seconds(), 1, "at least 1");
}

#[test]
fn callers_past_the_cap_share_the_overflow_bucket_until_idle_ones_are_pruned() {
    let (limiter, clock, overflow) = limiter(RateLimit {
        total: None,
        per_caller: Some(rule(1, 1)),
        overrides: Vec::new(),
        instances: 1,
    });
    for n in 0..MAX_CALLERS {
        let key: Arc<str> = format!("spiffe://seam.local/ns/default/sa/c{n}").into();
        assert!(limiter.check(None, &key).is_ok());
    }
    assert_eq!(limiter.tracked_callers(), MAX_CALLERS);
    let late: Arc<str> = "spiffe://seam.local/ns/default/sa/late".into();
    assert!(
        limiter.check(None, &late).is_ok(),
        "the overflow bucket's cell"
    );
    assert_eq!(overflow.get(), 1);
    assert!(
        limiter.tracked_callers() <= MAX_CALLERS + 1,
        "the map grows by the overflow key at most"
    );
    // Every bucket refills, so every key is idle: the next new caller meets the cap,
    // takes the overflow bucket, and sweeps the idle keys away (a second after the last
    // sweep at most); the one after gets a bucket of its own.
    clock.advance(Duration::from_secs(5));
    let next: Arc<str> = "spiffe://seam.local/ns/default/sa/next".into();
    assert!(limiter.check(None, &next).is_ok());
    assert_eq!(overflow.get(), 2);
    assert!(
        limiter.tracked_callers() <= 1,
        "{}",
        limiter.tracked_callers()
    );
    let after: Arc<str> = "spiffe://seam.local/ns/default/sa/after".into();
    assert!(limiter.check(None, &after).is_ok());
    assert_eq!(overflow.get(), 2, "room again: its own bucket");
}

#[test]
fn limiters_are_kept_while_their_limits_are_unchanged() {
    let limiters = Limiters::default();
    let overflow = Counter::default();
    let limit = RateLimit {
        total: Some(rule(1, 1)),
        per_caller: None,
        overrides: Vec::new(),
        instances: 2,
    };
    let first = limiters.get(LimiterKey::Service, &limit, &overflow);
    let again = limiters.get(LimiterKey::Service, &limit.clone(), &overflow);
    assert!(
        Arc::ptr_eq(&first, &again),
        "an unrelated update keeps the buckets"
    );
    let route = LimiterKey::Route {
        position: 0,
        label: "/x*".into(),
    };
    let other = limiters.get(route, &limit, &overflow);
    assert!(
        !Arc::ptr_eq(&first, &other),
        "a route's own limit has its own buckets"
    );
    let changed = RateLimit {
        total: Some(rule(2, 1)),
        ..limit
    };
    let replaced = limiters.get(LimiterKey::Service, &changed, &overflow);
    assert!(!Arc::ptr_eq(&first, &replaced));
    assert_eq!(replaced.limit(), &changed);
}
