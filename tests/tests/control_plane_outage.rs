//! When the control plane goes away, proxies keep serving on their last good state: a
//! service already known keeps carrying traffic. When it comes back (same CA, same
//! address), they reconnect and learn what changed meanwhile.

use std::time::Duration;

use seam_tests::mesh::{self, TestMesh};
use seam_tests::proxy::ProxyOptions;
use seam_tests::{EchoServer, TwoHop, client, wait};

/// How long a proxy may take to reconnect to a restarted control plane (it backs off).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn traffic_flows_while_the_control_plane_is_down() {
    let mut mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let reply = client::http1_get(mesh.a.outbound(), "b", "/before", &[])
        .await
        .expect("request before the outage");
    assert_eq!(reply.status, 200, "{}", reply.text());

    let status = mesh
        .mesh
        .stop_control_plane()
        .await
        .expect("control plane stops");
    assert_eq!(status.code(), Some(0), "control plane exited with {status}");

    for round in 0..5 {
        let reply = client::http1_get(mesh.a.outbound(), "b", &format!("/during/{round}"), &[])
            .await
            .expect("request during the outage");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        let echo = reply.json().expect("echo JSON");
        assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_reconnect_to_a_restarted_control_plane() {
    let mut mesh = TestMesh::start(&["a", "b", "c"])
        .await
        .expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b = EchoServer::start("b").await.expect("app b");
    let app_c = EchoServer::start("c").await.expect("app c");
    let (a, b) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b.addr()),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("b", &[b.inbound()])])
        .await
        .expect("mesh lists b");
    let reply = client::http1_get(a.outbound(), "b", "/before", &[])
        .await
        .expect("request before the restart");
    assert_eq!(reply.status, 200, "{}", reply.text());

    mesh.restart_control_plane()
        .await
        .expect("control plane restarts on the same addresses");
    wait::until(
        "a's discovery stream is back",
        RECONNECT_TIMEOUT,
        || async {
            let config = a.config().await?;
            anyhow::ensure!(
                config["discovery"]["connected"] == true,
                "/config: {config}"
            );
            Ok(())
        },
    )
    .await
    .expect("a reconnects");

    // A proxy started now certifies with the restarted control plane (same CA), and a
    // learns about it through its new stream.
    let c = mesh
        .start_proxy("c", app_c.addr())
        .await
        .expect("proxy c starts after the restart");
    mesh.set_endpoints(&[("b", &[b.inbound()]), ("c", &[c.inbound()])])
        .await
        .expect("mesh lists c");
    for (service, path) in [("b", "/after-b"), ("c", "/after-c")] {
        let reply = client::http1_get(a.outbound(), service, path, &[])
            .await
            .expect("request after the restart");
        assert_eq!(reply.status, 200, "{service}: {}", reply.text());
        assert_eq!(reply.json().expect("echo JSON")["name"], service);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_started_without_control_plane_becomes_ready_when_it_returns() {
    let mut mesh = TestMesh::start(&["a"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    mesh.stop_control_plane()
        .await
        .expect("control plane stops");

    let mut a = mesh
        .spawn_proxy(ProxyOptions::new("a", app_a.addr()))
        .await
        .expect("proxy binds its listeners without a control plane");
    assert_eq!(
        a.ready_status().await.expect("GET /ready"),
        503,
        "a proxy with no certificate must not be ready"
    );

    mesh.resume_control_plane()
        .await
        .expect("control plane comes back");
    a.wait_ready(RECONNECT_TIMEOUT)
        .await
        .expect("the proxy certifies and connects once the control plane is back");
    let identity = a.admin_json("/identity").await.expect("/identity");
    assert_eq!(identity["spiffe_id"], mesh::spiffe_id("a"), "{identity}");
}
