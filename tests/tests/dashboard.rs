//! `deploy/`: the Grafana dashboard queries only metric names the binaries really serve
//! (checked against live `/metrics` after traffic), every panel has a query, and the
//! Prometheus scrape config passes `promtool check config`. (The system test in
//! `prometheus.rs` also runs every dashboard query on a real Prometheus.)

use std::collections::BTreeSet;

use seam_tests::dashboard::{self, expressions, metric_names, sample_names};
use seam_tests::{TwoHop, client, prometheus};

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_queries_only_metrics_that_exist() {
    let board = dashboard::load().expect("dashboard JSON");
    for panel in board["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {} has no query", panel["title"]);
    }
    let used: BTreeSet<String> = expressions(&board)
        .iter()
        .flat_map(|expr| metric_names(expr))
        .collect();
    assert!(used.len() >= 10, "the dashboard uses only {used:?}");

    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let reply = client::http1_get(mesh.a.outbound(), "b", "/", &[])
        .await
        .expect("request through the mesh");
    assert_eq!(reply.status, 200);
    let mut served = BTreeSet::new();
    for text in [
        mesh.a.metrics().await.expect("a's /metrics"),
        mesh.b.metrics().await.expect("b's /metrics"),
        mesh.mesh.metrics().await.expect("control plane /metrics"),
    ] {
        served.extend(sample_names(&text));
    }
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody serves: {missing:?}\nserved: {served:?}"
    );
}

#[tokio::test]
async fn prometheus_config_passes_promtool() {
    prometheus::check_config(&dashboard::deploy_dir().join("prometheus/prometheus.yml"))
        .await
        .expect("deploy/prometheus/prometheus.yml is valid");
}
