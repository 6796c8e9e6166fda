//! `seamctl stat --once` against a running mesh: while traffic flows from `a` to `b`, it
//! finds the proxies through the control plane's `/proxies`, scrapes their `/metrics`
//! twice and prints success rate, requests per second and latency percentiles for
//! service `b` and for the edge `a → b`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use seam_tests::mesh::{metric_value, seam_command};
use seam_tests::{TwoHop, client, wait};

/// Traffic stops after this many requests even if the test is still waiting.
const MAX_REQUESTS: usize = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn stat_shows_rates_and_latency_per_service_and_edge() {
    let mesh = Arc::new(TwoHop::start().await.expect("two-hop mesh starts"));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (mesh, stop, failures) = (mesh.clone(), stop.clone(), failures.clone());
        tokio::spawn(async move {
            for round in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client::http1_get(mesh.a.outbound(), "b", &format!("/{round}"), &[]).await {
                    Ok(reply) if reply.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    wait::until("traffic reaches b", Duration::from_secs(5), || async {
        let metrics = mesh.b.metrics().await?;
        let count = metric_value(&metrics, "seam_requests_total", &[("direction", "inbound")]);
        anyhow::ensure!(count.unwrap_or(0.0) >= 1.0, "{count:?}");
        Ok(())
    })
    .await
    .expect("traffic flows");

    let mut command = seam_command("seamctl").expect("seamctl binary");
    command
        .arg("stat")
        .arg("--admin")
        .arg(mesh.mesh.admin_addr().to_string())
        .args(["--interval", "1s", "--once"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("seamctl stat --once finishes")
        .expect("seamctl stat runs");
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "seamctl stat failed: {}\n{text}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed");
    assert!(text.contains("2 proxies"), "{text}");

    for (row, title) in [("b ", "service b"), ("a → b ", "edge a → b")] {
        let line = text
            .lines()
            .find(|line| line.starts_with(row))
            .unwrap_or_else(|| panic!("no {title} row:\n{text}"));
        let cells: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert_eq!(cells.len(), 5, "{title}: {line}");
        assert_eq!(cells[0], "100.00%", "{title}: {line}");
        let rps: f64 = cells[1].parse().expect("requests per second");
        assert!(rps > 0.0, "{title}: {line}");
        for latency in &cells[2..] {
            assert!(
                latency.ends_with("ms") || latency.ends_with('s'),
                "{title}: {line}"
            );
        }
    }
}
