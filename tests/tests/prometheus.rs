//! System test with a real Prometheus server (Debian's `prometheus` package; `.ci/run`
//! installs it, and without it this test fails saying how to install it): Prometheus
//! scrapes two proxies' `/metrics` and answers queries for Seam's metrics, including
//! every query of the Grafana dashboard in `deploy/`.

use std::time::Duration;

use seam_tests::prometheus::PrometheusServer;
use seam_tests::{TwoHop, client, dashboard, wait};

/// Generous: Prometheus scrapes every second but needs a moment after start.
const SCRAPED_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_two_proxies_and_answers_queries() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    for round in 0..4 {
        let reply = client::http1_get(mesh.a.outbound(), "b", &format!("/round/{round}"), &[])
            .await
            .expect("request through the mesh");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let prometheus = PrometheusServer::start(&[mesh.a.admin(), mesh.b.admin()])
        .await
        .expect("prometheus starts");

    // Both proxies are healthy targets.
    wait::until("both targets are up", SCRAPED_WITHIN, || async {
        let up = prometheus.query("up{job=\"seam\"} == 1").await?;
        anyhow::ensure!(
            up.len() == 2,
            "up: {up:?}; targets: {}",
            prometheus.targets().await?
        );
        Ok(())
    })
    .await
    .unwrap_or_else(|err| panic!("{err:#}\n{}", prometheus.log_tail()));

    // The request counter, as each side counted it.
    for (direction, instance) in [("outbound", mesh.a.admin()), ("inbound", mesh.b.admin())] {
        let query = format!(
            "sum by (instance) (seam_requests_total{{direction=\"{direction}\",service=\"b\",status=\"200\"}})"
        );
        let result = wait::until(&query, SCRAPED_WITHIN, || async {
            let result = prometheus.query(&query).await?;
            anyhow::ensure!(!result.is_empty(), "no series yet");
            Ok(result)
        })
        .await
        .unwrap_or_else(|err| panic!("{err:#}\n{}", prometheus.log_tail()));
        assert_eq!(result.len(), 1, "{result:?}");
        assert_eq!(
            result[0]["metric"]["instance"],
            instance.to_string(),
            "{result:?}"
        );
        assert_eq!(result[0]["value"][1], "4", "{query}: {result:?}");
    }

    // The histogram is usable as Prometheus histograms are: a quantile over its buckets.
    let p99 = prometheus
        .query(
            "histogram_quantile(0.99, sum by (le) (seam_request_duration_seconds_bucket{direction=\"outbound\"}))",
        )
        .await
        .expect("quantile query");
    let seconds: f64 = p99[0]["value"][1]
        .as_str()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no quantile in {p99:?}"));
    assert!(seconds > 0.0 && seconds < 20.0, "p99 {seconds}");

    // Every query of the Grafana dashboard in deploy/ is PromQL that Prometheus accepts.
    let board = dashboard::load().expect("dashboard JSON");
    for expr in dashboard::expressions(&board) {
        if expr.starts_with("label_values(") {
            continue; // Grafana's own function, not PromQL
        }
        let promql = dashboard::as_promql(&expr);
        prometheus
            .query(&promql)
            .await
            .unwrap_or_else(|err| panic!("dashboard query rejected: {promql}\n{err:#}"));
    }
}
