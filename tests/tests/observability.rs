//! What the binaries say about themselves once traffic has flowed: the proxy's
//! `/config`, `/identity` and `/metrics`, and the control plane's `/proxies`.

use std::time::Duration;

use seam_tests::mesh::{self, metric_value};
use seam_tests::{TwoHop, client, wait};

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_describe_identity_subscriptions_and_traffic() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    for round in 0..3 {
        let reply = client::http1_get(mesh.a.outbound(), "b", &format!("/seen/{round}"), &[])
            .await
            .expect("request through the mesh");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    // a's view of b: found, one endpoint, b's inbound with b's identity.
    let config = mesh.a.config().await.expect("a's /config");
    assert_eq!(config["service"], "a", "{config}");
    assert_eq!(config["discovery"]["connected"], true, "{config}");
    let subscription = &config["subscriptions"]["b"];
    assert_eq!(subscription["state"], "found", "{config}");
    assert!(subscription["version"].as_u64().is_some(), "{config}");
    let endpoints = subscription["endpoints"].as_array().expect("endpoint list");
    assert_eq!(endpoints.len(), 1, "{config}");
    assert_eq!(
        endpoints[0]["address"],
        mesh.b.inbound().to_string(),
        "{config}"
    );
    assert_eq!(endpoints[0]["identity"], mesh::spiffe_id("b"), "{config}");

    for proxy in [&mesh.a, &mesh.b] {
        let identity = proxy.admin_json("/identity").await.expect("/identity");
        assert_eq!(identity["spiffe_id"], proxy.spiffe_id(), "{identity}");
        for field in ["serial", "not_before", "not_after"] {
            assert!(identity[field].is_string(), "{field} missing: {identity}");
        }
    }

    // Counters: three 200s out of a to b, three into b.
    let outbound = metric_value(
        &mesh.a.metrics().await.expect("a's /metrics"),
        "seam_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "b"),
            ("status", "200"),
        ],
    );
    assert_eq!(outbound, Some(3.0), "a's outbound request counter");
    let b_metrics = mesh.b.metrics().await.expect("b's /metrics");
    let inbound = metric_value(
        &b_metrics,
        "seam_requests_total",
        &[("direction", "inbound"), ("status", "200")],
    );
    assert_eq!(
        inbound,
        Some(3.0),
        "b's inbound request counter:\n{b_metrics}"
    );
    assert!(
        b_metrics.contains("seam_open_connections"),
        "no seam_open_connections in b's metrics:\n{b_metrics}"
    );
    // Each request above used its own client connection, closed since: the outbound
    // gauge must come back to zero (no leaked connection state).
    wait::until(
        "a's outbound open connections drop to 0",
        Duration::from_secs(5),
        || async {
            let metrics = mesh.a.metrics().await?;
            let open = metric_value(
                &metrics,
                "seam_open_connections",
                &[("direction", "outbound")],
            );
            anyhow::ensure!(open == Some(0.0), "seam_open_connections is {open:?}");
            Ok(())
        },
    )
    .await
    .expect("outbound connections are closed");

    // The control plane knows both proxies and that a acknowledged b's state.
    let proxies = wait::until(
        "/proxies shows a's acknowledged subscription",
        Duration::from_secs(5),
        || async {
            let (status, body) =
                seam_control_plane::launch::http_get(mesh.mesh.admin_addr(), "/proxies").await?;
            anyhow::ensure!(status == 200, "GET /proxies answered {status}: {body}");
            let proxies: serde_json::Value = serde_json::from_str(&body)?;
            let a = proxies["proxies"]
                .as_array()
                .and_then(|list| list.iter().find(|proxy| proxy["service"] == "a"))
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("a not listed: {proxies}"))?;
            let subscription = a["subscriptions"]
                .as_array()
                .and_then(|list| list.iter().find(|sub| sub["authority"] == "b"))
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("a has no subscription to b: {proxies}"))?;
            anyhow::ensure!(
                subscription["acked_version"] == subscription["sent_version"],
                "not acknowledged yet: {proxies}"
            );
            Ok(proxies)
        },
    )
    .await
    .expect("GET /proxies");
    let list = proxies["proxies"].as_array().expect("proxy list");
    assert_eq!(list.len(), 2, "{proxies}");
    let a = list
        .iter()
        .find(|proxy| proxy["service"] == "a")
        .expect("a listed");
    assert_eq!(a["spiffe_id"], mesh::spiffe_id("a"), "{proxies}");
    assert_eq!(a["admin_addr"], mesh.a.admin().to_string(), "{proxies}");
    assert_eq!(a["nacks_total"], 0, "{proxies}");
}
