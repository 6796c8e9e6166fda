//! The control plane can die: killed (SIGKILL) under steady traffic, no request fails;
//! the proxies stay ready on their last good state and certificates and report the
//! disconnection (`/config` and `seam_discovery_connected`); when a control plane comes
//! back on the same state directory they reconnect (with jittered backoff), resubscribe
//! and take new endpoints.

use std::time::Duration;

use seam_tests::load::{Steady, SteadyLoad, timed_failures};
use seam_tests::mesh::metric_value;
use seam_tests::{EchoServer, TestProxy, TwoHop, wait};

async fn discovery_state(proxy: &TestProxy) -> (bool, Option<f64>) {
    let config = proxy.config().await.expect("/config");
    let metrics = proxy.metrics().await.expect("/metrics");
    (
        config["discovery"]["connected"] == true,
        metric_value(&metrics, "seam_discovery_connected", &[]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_control_plane_under_load_fails_no_request() {
    let mut mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let traffic = SteadyLoad::start(
        Steady::new(mesh.a.outbound(), "b", Duration::from_secs(60)).fresh_every(5),
    );

    // Traffic flows first (a learns b's endpoints on its first request), then the kill.
    traffic
        .wait_more(20, Duration::from_secs(20))
        .await
        .expect("traffic before the outage");
    mesh.mesh
        .kill_control_plane()
        .await
        .expect("control plane killed");
    for proxy in [&mesh.a, &mesh.b] {
        wait::until(
            &format!("{} reports the lost control plane", proxy.service()),
            Duration::from_secs(20),
            || async {
                let (connected, metric) = discovery_state(proxy).await;
                anyhow::ensure!(
                    !connected && metric == Some(0.0),
                    "connected={connected} metric={metric:?}"
                );
                Ok(())
            },
        )
        .await
        .expect("disconnection reported");
        assert_eq!(
            proxy.ready_status().await.expect("/ready"),
            200,
            "{} stopped being ready",
            proxy.service()
        );
    }
    // Traffic goes on while nobody is there to ask.
    traffic
        .wait_more(50, Duration::from_secs(20))
        .await
        .expect("traffic during the outage");

    // Back on the same state directory and addresses: both reconnect and resubscribe.
    mesh.mesh
        .resume_control_plane()
        .await
        .expect("control plane back");
    for proxy in [&mesh.a, &mesh.b] {
        wait::until(
            &format!("{} reconnects", proxy.service()),
            Duration::from_secs(30),
            || async {
                let (connected, metric) = discovery_state(proxy).await;
                anyhow::ensure!(
                    connected && metric == Some(1.0),
                    "connected={connected} metric={metric:?}"
                );
                Ok(())
            },
        )
        .await
        .expect("reconnected");
    }
    // A second instance of b, listed only now, reaches a through the new stream.
    let app_b2 = EchoServer::start("b2").await.expect("app b2");
    let b2 = mesh
        .mesh
        .start_proxy("b", app_b2.addr())
        .await
        .expect("second b");
    mesh.mesh
        .set_endpoints(&[("b", &[mesh.b.inbound(), b2.inbound()])])
        .await
        .expect("mesh lists both b");
    mesh.a
        .wait_endpoints("b", 2, Duration::from_secs(10))
        .await
        .expect("a takes the new endpoint");
    app_b2
        .wait_requests(1, Duration::from_secs(10))
        .await
        .expect("b2 served");

    let replies = traffic.stop().await;
    let failures = timed_failures(&replies);
    eprintln!("{} requests through the outage", replies.len());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        replies.len()
    );
}
