//! Authorization on the inbound side: a service's `allow:` list in the mesh file (service
//! names or SPIFFE ids) decides which mesh identities may call it; a caller not on it gets
//! a 403 whose body says who may not call whom, counted by caller in `/metrics` and logged
//! with both identities; the app never sees the refused request. Changing the list in the
//! mesh file takes effect without restarting anything. Plaintext callers are refused at
//! the door unless the service says `allow_plaintext: true`.

use std::time::Duration;

use seam_tests::mesh::{self, TestMesh, metric_value};
use seam_tests::tls::{self, ProbeOutcome};
use seam_tests::{EchoServer, TestProxy, client, wait};

/// Three services; `a` and `c` call `b`.
struct Callers {
    a: TestProxy,
    c: TestProxy,
    b: TestProxy,
    app_b: EchoServer,
    _apps: Vec<EchoServer>,
    mesh: TestMesh,
}

async fn start() -> Callers {
    let mesh = TestMesh::start(&["a", "b", "c"])
        .await
        .expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b = EchoServer::start("b").await.expect("app b");
    let app_c = EchoServer::start("c").await.expect("app c");
    let (a, b, c) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b.addr()),
        mesh.start_proxy("c", app_c.addr()),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("b", &[b.inbound()])])
        .await
        .expect("mesh lists b");
    Callers {
        a,
        c,
        b,
        app_b,
        _apps: vec![app_a, app_c],
        mesh,
    }
}

/// Polls until a request from `caller` to `b` answers `status` (policy changes reach the
/// proxies asynchronously), and returns that reply.
async fn wait_status(caller: &TestProxy, status: u16) -> client::Reply {
    wait::until(
        &format!("{} → b answers {status}", caller.service()),
        Duration::from_secs(10),
        || async {
            let reply = client::http1_get(caller.outbound(), "b", "/authz", &[]).await?;
            anyhow::ensure!(
                reply.status == status,
                "got {}: {}",
                reply.status,
                reply.text()
            );
            Ok(reply)
        },
    )
    .await
    .expect("policy applied")
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_list_admits_listed_callers_and_refuses_others_with_403() {
    let mesh = start().await;
    // No list: any mesh identity may call.
    wait_status(&mesh.a, 200).await;
    wait_status(&mesh.c, 200).await;

    mesh.mesh
        .set_service_lines("b", &["allow: [a]"])
        .await
        .expect("allow list written");
    let refused = wait_status(&mesh.c, 403).await;
    assert_eq!(
        refused.text().trim(),
        format!("{} is not allowed to call b", mesh::spiffe_id("c")),
        "the 403 must say who may not call whom"
    );
    assert_eq!(
        refused
            .headers
            .get("x-seam-proxy-error")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let seen_before = mesh.app_b.requests_seen();
    let allowed = client::http1_get(mesh.a.outbound(), "b", "/allowed", &[])
        .await
        .expect("a → b");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(
        allowed.json().expect("echo")["client_id"],
        mesh::spiffe_id("a")
    );
    assert_eq!(
        mesh.app_b.requests_seen(),
        seen_before + 1,
        "only a's request reached the app"
    );

    let metrics = mesh.b.metrics().await.expect("b's metrics");
    let denied = metric_value(
        &metrics,
        "seam_authorization_denied_total",
        &[("caller", &mesh::spiffe_id("c")), ("service", "b")],
    )
    .unwrap_or(0.0);
    assert!(denied >= 1.0, "c's refusal is not counted:\n{metrics}");
    let log = mesh.b.log().text();
    let logged = log.lines().any(|line| {
        line.contains("not allowed")
            && line.contains(&mesh::spiffe_id("c"))
            && line.contains(&mesh::spiffe_id("b"))
    });
    assert!(logged, "b's log must name caller and callee:\n{log}");

    // The list follows the mesh file: now only c, by SPIFFE id.
    let c_id = format!("allow: [\"{}\"]", mesh::spiffe_id("c"));
    mesh.mesh
        .set_service_lines("b", &[&c_id])
        .await
        .expect("allow list rewritten");
    wait_status(&mesh.a, 403).await;
    wait_status(&mesh.c, 200).await;

    // `/callers` on b shows both callers, over mTLS, with their refusals.
    let callers = mesh.b.admin_json("/callers").await.expect("/callers");
    let list = callers["callers"].as_array().expect("caller list");
    for service in ["a", "c"] {
        let entry = list
            .iter()
            .find(|entry| entry["caller"] == mesh::spiffe_id(service))
            .unwrap_or_else(|| panic!("{service} missing from /callers: {callers}"));
        assert_eq!(entry["transport"], "mtls", "{callers}");
        assert!(entry["allowed"].as_u64() >= Some(1), "{callers}");
        assert!(entry["denied"].as_u64() >= Some(1), "{callers}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_allow_list_refuses_every_caller() {
    let mesh = start().await;
    mesh.mesh
        .set_service_lines("b", &["allow: []"])
        .await
        .expect("empty allow list written");
    wait_status(&mesh.a, 403).await;
    wait_status(&mesh.c, 403).await;
    assert_eq!(
        mesh.app_b.requests_seen(),
        0,
        "the app saw a refused request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_is_refused_unless_the_service_allows_it() {
    let mesh = start().await;
    // Ensure b knows its policy, then knock in plaintext.
    wait_status(&mesh.a, 200).await;
    let outcome = tls::probe_plaintext(mesh.b.inbound(), "b")
        .await
        .expect("probe runs");
    assert!(
        outcome.is_refused(),
        "plaintext must be refused: {outcome:?}"
    );
    let metrics = mesh.b.metrics().await.expect("metrics");
    assert_eq!(
        metric_value(
            &metrics,
            "seam_connections_refused_total",
            &[("reason", "plaintext")]
        ),
        Some(1.0),
        "{metrics}"
    );

    mesh.mesh
        .set_service_lines("b", &["allow_plaintext: true"])
        .await
        .expect("plaintext allowed");
    let answered = wait::until("b answers plaintext", Duration::from_secs(10), || async {
        match tls::probe_plaintext(mesh.b.inbound(), "b").await? {
            ProbeOutcome::Answered { status, body } => Ok((status, body)),
            other => anyhow::bail!("not answered yet: {other:?}"),
        }
    })
    .await
    .expect("plaintext answered");
    assert_eq!(answered.0, 200, "{}", answered.1);
    let echo: serde_json::Value = serde_json::from_str(&answered.1).expect("echo JSON");
    assert!(
        echo["client_id"].is_null(),
        "a plaintext caller has no identity: {echo}"
    );
    let metrics = mesh.b.metrics().await.expect("b's metrics");
    let plaintext = metric_value(
        &metrics,
        "seam_requests_total",
        &[("direction", "inbound"), ("tls", "false"), ("peer", "")],
    );
    assert!(
        plaintext.is_some_and(|count| count >= 1.0),
        "the plaintext request is counted with tls=\"false\": {metrics}"
    );
    // mTLS callers still get in.
    wait_status(&mesh.a, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_allow_list_replaces_the_services_for_the_requests_it_takes() {
    let mesh = start().await;
    mesh.mesh
        .set_service_lines(
            "b",
            &[
                "allow: [c]",
                "routes:",
                "  - match: { path_prefix: /admin }",
                "    allow: [a]",
            ],
        )
        .await
        .expect("route allow list written");
    let status = |caller: &TestProxy, path: &'static str| {
        let outbound = caller.outbound();
        async move {
            client::http1_get(outbound, "b", path, &[])
                .await
                .expect("request to b")
                .status
        }
    };
    // The service's list is in force once c gets through and a does not.
    wait_status(&mesh.a, 403).await;
    wait_status(&mesh.c, 200).await;
    assert_eq!(
        status(&mesh.a, "/admin/users").await,
        200,
        "the route admits a"
    );
    assert_eq!(
        status(&mesh.c, "/admin/users").await,
        403,
        "the route's list replaces c's admission"
    );
    assert_eq!(
        status(&mesh.a, "/public").await,
        403,
        "outside the route the service's list holds"
    );
    assert_eq!(status(&mesh.c, "/public").await, 200);
}
