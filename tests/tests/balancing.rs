//! The default balancer (P2C over peak-EWMA) end to end under light traffic: one client
//! sending sequential requests at about 50 a second to a service that gains a second
//! instance mid-way. The new instance must get a fair share of what follows at once —
//! its first answer paid for a new mTLS connection, which is not its latency — and the
//! traffic must stay spread rather than herd onto one instance and then flip.

use std::collections::BTreeMap;
use std::time::Duration;

use seam_tests::client::AppClient;
use seam_tests::mesh::READY_TIMEOUT;
use seam_tests::{CallerAndEndpoints, EchoServer};

/// The client's pace: one request every 20 ms, the next one only after the answer.
const PACE: Duration = Duration::from_millis(20);
const BEFORE: usize = 100;
const AFTER: usize = 200;

/// Sends `count` sequential requests to service `b`, about one per [`PACE`]; how many
/// each instance (by its app's name) answered.
async fn send_paced(client: &AppClient, count: usize) -> BTreeMap<String, usize> {
    let mut pace = tokio::time::interval(PACE);
    let mut served = BTreeMap::new();
    for _ in 0..count {
        pace.tick().await;
        let reply = client.get("b", "/").await.expect("a request to b");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let name = reply.json().expect("the echo's JSON")["name"]
            .as_str()
            .expect("the echo names its app")
            .to_owned();
        *served.entry(name).or_insert(0) += 1;
    }
    served
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_gets_a_fair_share_of_light_traffic_at_once() {
    let old_app = EchoServer::start("b-old").await.expect("old app");
    let new_app = EchoServer::start("b-new").await.expect("new app");
    let CallerAndEndpoints {
        a,
        endpoints: [old, new],
        mesh,
        ..
    } = CallerAndEndpoints::start("b", [old_app.addr(), new_app.addr()])
        .await
        .expect("mesh and proxies");
    mesh.set_endpoints(&[("b", &[old.inbound()])])
        .await
        .expect("listing the first instance");
    let client = AppClient::new(a.outbound());

    let served = send_paced(&client, BEFORE).await;
    assert_eq!(served.get("b-old"), Some(&BEFORE), "{served:?}");

    mesh.set_endpoints(&[("b", &[old.inbound(), new.inbound()])])
        .await
        .expect("listing the second instance");
    a.wait_endpoints("b", 2, READY_TIMEOUT)
        .await
        .expect("a sees both instances");

    let served = send_paced(&client, AFTER).await;
    eprintln!("after the second instance appeared: {served:?}");
    let to_new = served.get("b-new").copied().unwrap_or(0);
    let to_old = served.get("b-old").copied().unwrap_or(0);
    assert_eq!(to_new + to_old, AFTER, "{served:?}");
    assert!(
        to_new >= AFTER * 30 / 100,
        "the new instance gets a fair share at once: {served:?}"
    );
    assert!(
        to_old >= AFTER * 15 / 100,
        "nor does everything flip to it: {served:?}"
    );
}
