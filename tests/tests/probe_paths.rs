//! The kubelet's probes through the sidecar: in an injected pod every inbound connection,
//! the kubelet's health checks included, reaches the proxy's inbound listener, and a
//! service that accepts only mTLS refuses plaintext. `--probe-paths PORT:PATH,...` lets
//! a plaintext GET or HEAD (POST for the gRPC health check) to exactly those paths on
//! those ports through to the app as an unmeshed caller; every other plaintext request
//! is refused as before (closed unanswered, counted as a plaintext refusal). Here the
//! probes are addressed to the inbound listener, so their port is the app's (`--app`);
//! with iptables it is the connection's original destination port.

use std::time::Duration;

use seam_tests::mesh::{TestMesh, metric_value};
use seam_tests::proxy::ProxyOptions;
use seam_tests::{EchoServer, GrpcHealthServer, TestProxy, client, wait};
use tonic_health::ServingStatus as Status;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// `a` calls `b`; `b`'s app has a probe path on its own port and another on a port it
/// does not serve.
struct Probed {
    a: TestProxy,
    b: TestProxy,
    app_b: EchoServer,
    _app_a: EchoServer,
    _mesh: TestMesh,
}

async fn start() -> Probed {
    let mesh = TestMesh::start(&["a", "b"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b = EchoServer::start("b").await.expect("app b");
    let other_port = app_b.addr().port().wrapping_add(1).max(1);
    let probe_paths = format!("{}:/healthz,{other_port}:/ready", app_b.addr().port());
    let (a, b) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy_with(
            ProxyOptions::new("b", app_b.addr()).args(&["--probe-paths", &probe_paths])
        ),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("b", &[b.inbound()])])
        .await
        .expect("mesh lists b");
    // b's policy (mTLS only) is known once a mesh caller gets through.
    wait::until("a → b answers", Duration::from_secs(10), || async {
        let reply = client::http1_get(a.outbound(), "b", "/", &[]).await?;
        anyhow::ensure!(reply.status == 200, "got {}", reply.status);
        Ok(())
    })
    .await
    .expect("b's policy known");
    Probed {
        a,
        b,
        app_b,
        _app_a: app_a,
        _mesh: mesh,
    }
}

async fn plaintext_refusals(proxy: &TestProxy) -> f64 {
    let metrics = proxy.metrics().await.expect("metrics");
    metric_value(
        &metrics,
        "seam_connections_refused_total",
        &[("reason", "plaintext")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_probe_reaches_the_app_and_nothing_else_does() {
    let mesh = start().await;
    let seen_before = mesh.app_b.requests_seen();

    let probe = client::http1_get(mesh.b.inbound(), "b", "/healthz?verbose=1", &[])
        .await
        .expect("the probe is answered");
    assert_eq!(probe.status, 200, "{}", probe.text());
    let echo = probe.json().expect("echo JSON");
    assert_eq!(echo["path"], "/healthz", "{echo}");
    assert!(
        echo["client_id"].is_null(),
        "a probe has no identity: {echo}"
    );
    let h2_probe = client::h2c_get(mesh.b.inbound(), "b", "/healthz", &[])
        .await
        .expect("the HTTP/2 probe is answered");
    assert_eq!(h2_probe.status, 200, "{}", h2_probe.text());
    assert_eq!(mesh.app_b.requests_seen(), seen_before + 2);

    // Each of these is refused as plaintext always was: no answer, counted.
    let refused = [
        (
            "GET another path",
            client::http1_get(mesh.b.inbound(), "b", "/admin", &[]).await,
        ),
        (
            "GET a path probed on another port",
            client::http1_get(mesh.b.inbound(), "b", "/ready", &[]).await,
        ),
        (
            "POST the probe path",
            client::http1_post(mesh.b.inbound(), "b", "/healthz", "x".into()).await,
        ),
        (
            "GET the probe path asking for a WebSocket",
            client::http1_get(
                mesh.b.inbound(),
                "b",
                "/healthz",
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
            )
            .await,
        ),
        (
            "HTTP/2 GET another path",
            client::h2c_get(mesh.b.inbound(), "b", "/admin", &[]).await,
        ),
    ];
    for (what, outcome) in &refused {
        assert!(
            outcome.is_err(),
            "{what} must be refused, got {:?}",
            outcome.as_ref().map(client::Reply::text)
        );
    }
    assert_eq!(
        mesh.app_b.requests_seen(),
        seen_before + 2,
        "the app saw a refused request"
    );
    assert_eq!(plaintext_refusals(&mesh.b).await, refused.len() as f64);

    // The probes are counted as plaintext callers, like any unmeshed caller let in.
    let metrics = mesh.b.metrics().await.expect("metrics");
    assert_eq!(
        metric_value(
            &metrics,
            "seam_inbound_requests_by_caller_total",
            &[("caller", "plaintext")]
        ),
        Some(2.0),
        "{metrics}"
    );
    // Mesh callers are untouched.
    let reply = client::http1_get(mesh.a.outbound(), "b", "/admin", &[])
        .await
        .expect("a → b");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_port_without_a_matching_path_is_refused_at_the_door() {
    let mesh = TestMesh::start(&["b"]).await.expect("mesh starts");
    let app_b = EchoServer::start("b").await.expect("app b");
    // The only probe path is on a port this app does not serve.
    let elsewhere = format!("{}:/healthz", app_b.addr().port().wrapping_add(1).max(1));
    let b = mesh
        .start_proxy_with(ProxyOptions::new("b", app_b.addr()).args(&["--probe-paths", &elsewhere]))
        .await
        .expect("proxy starts");
    let outcome = client::http1_get(b.inbound(), "b", "/healthz", &[]).await;
    assert!(outcome.is_err(), "refused: {:?}", outcome.map(|r| r.status));
    assert_eq!(plaintext_refusals(&b).await, 1.0);
    assert_eq!(app_b.requests_seen(), 0);
}

/// The kubelet's `grpc` probe: a plaintext HTTP/2 POST of `grpc.health.v1.Health/Check`.
#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_grpc_health_check_reaches_the_app_and_other_methods_do_not() {
    let mesh = TestMesh::start(&["a", "g"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_g = GrpcHealthServer::start().await.expect("app g");
    app_g
        .reporter()
        .set_service_status("", Status::Serving)
        .await;
    let probe_paths = format!("{}:/grpc.health.v1.Health/Check", app_g.addr().port());
    let (a, g) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy_with(
            ProxyOptions::new("g", app_g.addr()).args(&["--probe-paths", &probe_paths])
        ),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("g", &[g.inbound()])])
        .await
        .expect("mesh lists g");
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    // g's policy (mTLS only) is known once a mesh caller gets through.
    wait::until("a → g answers", Duration::from_secs(10), || async {
        let channel = client::grpc_channel(a.outbound(), "g").await?;
        HealthClient::new(channel).check(check()).await?;
        Ok(())
    })
    .await
    .expect("g's policy known");

    let plaintext = client::grpc_channel(g.inbound(), "g")
        .await
        .expect("plaintext h2c to g's inbound");
    let probe = HealthClient::new(plaintext.clone())
        .check(check())
        .await
        .expect("the gRPC probe is answered");
    assert_eq!(probe.into_inner().status(), ServingStatus::Serving);

    let watch = HealthClient::new(plaintext).watch(check()).await;
    assert!(watch.is_err(), "Watch is no probe: {watch:?}");
    assert_eq!(plaintext_refusals(&g).await, 1.0);
}
