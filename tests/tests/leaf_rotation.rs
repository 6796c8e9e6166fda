//! Leaf rotation under load, as the issue states it: with `--cert-ttl 20s` on the control
//! plane and steady traffic, each proxy's `/identity` shows at least two new serials
//! within 45 s, its expiry metric follows, and no request fails (traffic stops once both
//! proxies have renewed twice). (`rotation.rs` covers the
//! same with 6 s certificates plus a root rotation; this one keeps the real proportions.)

use std::collections::BTreeSet;
use std::time::Duration;

use seam_tests::TwoHop;
use seam_tests::load::{Steady, SteadyLoad, timed_failures};
use seam_tests::mesh::{TestMesh, metric_value};
use tokio::time::Instant;

const TRAFFIC_FOR: Duration = Duration::from_secs(45);

/// A proxy's first serial (or expiry) and the two new ones the test wants to see.
const VALUES_WANTED: usize = 3;

/// Whether both proxies showed their first value and two new ones.
fn renewed_twice<T>(seen: &[BTreeSet<T>; 2]) -> bool {
    seen.iter().all(|values| values.len() >= VALUES_WANTED)
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_renew_twenty_second_certificates_under_steady_traffic() {
    let mesh = TestMesh::start_with_args(&["a", "b"], &["--cert-ttl", "20s"])
        .await
        .expect("mesh with 20s certificates starts");
    let hop = TwoHop::start_in(mesh).await.expect("proxies a and b start");
    let (a, b) = (&hop.a, &hop.b);

    let traffic = SteadyLoad::start(Steady::new(a.outbound(), "b", TRAFFIC_FOR).fresh_every(10));
    let mut serials = [BTreeSet::new(), BTreeSet::new()];
    let mut expiries = [BTreeSet::new(), BTreeSet::new()];
    // Each proxy's identity and expiry metric, read at an interval until both renewed
    // twice (bounded by the load's own time).
    let mut look = tokio::time::interval(Duration::from_millis(250));
    let started = Instant::now();
    while started.elapsed() < TRAFFIC_FOR && !(renewed_twice(&serials) && renewed_twice(&expiries))
    {
        look.tick().await;
        for (index, proxy) in [a, b].into_iter().enumerate() {
            let identity = proxy.admin_json("/identity").await.expect("/identity");
            if let Some(serial) = identity["serial"].as_str() {
                serials[index].insert(serial.to_owned());
            }
            let metrics = proxy.metrics().await.expect("metrics");
            if let Some(expiry) =
                metric_value(&metrics, "seam_certificate_expiry_timestamp_seconds", &[])
            {
                expiries[index].insert(expiry as u64);
            }
        }
    }
    let replies = traffic.stop().await;
    let failures = timed_failures(&replies);
    let sent = replies.len();
    eprintln!("{sent} requests; serials {serials:?}; expiries {expiries:?}");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    for (service, (seen, expiry)) in ["a", "b"].iter().zip(serials.iter().zip(&expiries)) {
        assert!(
            seen.len() >= VALUES_WANTED,
            "{service} showed {} serial(s) in {TRAFFIC_FOR:?} of 20s certificates, want 2 new \
             ones: {seen:?}",
            seen.len()
        );
        assert!(
            expiry.len() >= VALUES_WANTED,
            "{service}'s expiry metric did not follow the renewals: {expiry:?}"
        );
    }
}
