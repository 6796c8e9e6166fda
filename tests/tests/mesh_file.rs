//! The mesh file is hot-reloaded: an endpoint added to it carries traffic within
//! seconds without failing a request, a removed endpoint or service stops getting
//! traffic, and a malformed file is rejected with its path and line in `/mesh`'s
//! `last_error`, counted in the metrics, while the last good model stays in force (and
//! traffic keeps flowing).

use std::time::Duration;

use seam_tests::client::{self, AppClient};
use seam_tests::mesh::{self, TestMesh};
use seam_tests::{EchoServer, TwoHop, wait};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The most requests the load loop sends, and for how long at most.
const MAX_REQUESTS: usize = 2000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(10);
/// The pace of the load loop (it bounds the request rate, it synchronises nothing).
const LOAD_PACE: Duration = Duration::from_millis(5);
/// How soon after the rewrite the new endpoint must serve. A change usually serves within
/// tens of milliseconds (the file watch, one push, the next requests); the budget leaves
/// room for a loaded two-core machine and still fails a reload that polls or waits for a
/// reconnect.
const PROPAGATION_BUDGET: Duration = Duration::from_secs(3);

/// One request of the load loop.
#[derive(Debug)]
struct Outcome {
    at: Instant,
    result: Result<String, String>,
}

/// Sends `GET /load` to service `b` through `client` until told to stop or a bound is
/// reached, reporting each outcome.
async fn load(
    client: AppClient,
    results: mpsc::UnboundedSender<Outcome>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut pace = tokio::time::interval(LOAD_PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..MAX_REQUESTS {
        if *stop.borrow() || started.elapsed() > MAX_LOAD_TIME {
            return;
        }
        tokio::select! {
            _ = pace.tick() => {}
            _ = stop.changed() => return,
        }
        let result = match client.get("b", "/load").await {
            Ok(reply) if reply.status == 200 => reply
                .json()
                .map(|echo| echo["name"].as_str().unwrap_or_default().to_string())
                .map_err(|error| format!("{error:#}")),
            Ok(reply) => Err(format!("status {}: {}", reply.status, reply.text())),
            Err(error) => Err(format!("{error:#}")),
        };
        let outcome = Outcome {
            at: Instant::now(),
            result,
        };
        if results.send(outcome).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn added_endpoint_carries_traffic_within_seconds_without_failures() {
    let mesh = TestMesh::start(&["a", "b"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b1 = EchoServer::start("b1").await.expect("app b1");
    let app_b2 = EchoServer::start("b2").await.expect("app b2");
    let (a, b1, b2) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b1.addr()),
        mesh.start_proxy("b", app_b2.addr()),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("a", &[a.inbound()]), ("b", &[b1.inbound()])])
        .await
        .expect("mesh lists b1");

    let (results_tx, mut results) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let loader = tokio::spawn(load(AppClient::new(a.outbound()), results_tx, stop_rx));

    // Steady state first: requests flow to b1 and a knows exactly one endpoint.
    let mut seen = Vec::new();
    while seen.iter().filter(|o: &&Outcome| o.result.is_ok()).count() < 20 {
        let outcome = tokio::time::timeout(client::REQUEST_TIMEOUT, results.recv())
            .await
            .expect("load loop reports")
            .expect("load loop still running");
        seen.push(outcome);
    }
    a.wait_endpoints("b", 1, Duration::from_secs(5))
        .await
        .expect("a knows b1");

    let written_at = mesh
        .set_endpoints(&[("b", &[b1.inbound(), b2.inbound()])])
        .await
        .expect("mesh lists b1 and b2");

    // Read outcomes until b2 has served, then a hundred more (balanced over both),
    // then stop.
    let mut first_b2 = None;
    let mut after_b2 = 0;
    while after_b2 < 100 {
        let Some(outcome) = results.recv().await else {
            break;
        };
        if first_b2.is_none() && outcome.result.as_deref() == Ok("b2") {
            first_b2 = Some(outcome.at);
        }
        if first_b2.is_some() {
            after_b2 += 1;
        }
        seen.push(outcome);
    }
    stop_tx.send_replace(true);
    loader.await.expect("load loop ends");
    while let Ok(outcome) = results.try_recv() {
        seen.push(outcome);
    }

    let a_config = a.config().await.map(|config| config.to_string());
    let failures: Vec<&Outcome> = seen.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}; a's /config: {a_config:?}",
        failures.len(),
        seen.len(),
        failures.first()
    );
    let first_b2 = first_b2.unwrap_or_else(|| {
        panic!(
            "b2 never served in {} requests; a's /config: {a_config:?}",
            seen.len()
        )
    });
    let delay = first_b2.saturating_duration_since(written_at);
    eprintln!(
        "{} requests, none failed; b2 first served {delay:?} after the rewrite",
        seen.len()
    );
    assert!(
        delay <= PROPAGATION_BUDGET,
        "b2's first response came {delay:?} after the mesh file was rewritten; \
         a's /config: {a_config:?}"
    );
    // The balancer (P2C over peak-EWMA) may keep one request at a time on whichever
    // endpoint answers faster, so b1 need not serve again here; it must stay known.
    let endpoints = a
        .wait_endpoints("b", 2, Duration::from_secs(5))
        .await
        .expect("a still knows both endpoints");
    assert!(
        endpoints.contains(&b1.inbound().to_string()),
        "{endpoints:?}"
    );
}

/// Writes `contents` over the mesh file and waits until `/mesh` reports an error, then
/// checks that the old model is intact, the error names the file (and `line` if given),
/// the rejection is counted, and traffic still flows.
async fn assert_rejected_and_old_model_kept(mesh: &TwoHop, contents: &str, line: Option<usize>) {
    let control_plane = &mesh.mesh;
    let before = control_plane.mesh_state().await.expect("GET /mesh");
    assert!(
        before["last_error"].is_null(),
        "an error before the test: {before}"
    );
    let rejected_before = control_plane
        .reloads_total("rejected")
        .await
        .expect("GET /metrics");

    control_plane
        .write_raw_mesh_file(contents)
        .expect("write the bad file");
    let after = wait::until(
        "/mesh reports the rejected file",
        Duration::from_secs(10),
        || async {
            let state = control_plane.mesh_state().await?;
            anyhow::ensure!(!state["last_error"].is_null(), "/mesh: {state}");
            Ok(state)
        },
    )
    .await
    .expect("the control plane reports the bad file");

    let error = after["last_error"]
        .as_str()
        .expect("last_error is a string");
    let path = control_plane.mesh_path().display().to_string();
    assert!(
        error.contains(&path),
        "last_error should name {path}: {error:?}"
    );
    let location = error
        .split_once(&format!("{path}:"))
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let reported_line: Option<usize> = location
        .split(':')
        .next()
        .and_then(|number| number.trim().parse().ok());
    assert!(
        reported_line.is_some(),
        "last_error should give a line number after the path: {error:?}"
    );
    if let Some(line) = line {
        assert_eq!(reported_line, Some(line), "wrong line in {error:?}");
    }
    assert_eq!(
        after["version"], before["version"],
        "version changed: {after}"
    );
    assert_eq!(
        after["services"], before["services"],
        "model changed: {after}"
    );

    wait::until("the rejection is counted", Duration::from_secs(5), || async {
        let rejected = control_plane.reloads_total("rejected").await?;
        anyhow::ensure!(
            rejected > rejected_before,
            "seam_mesh_reloads_total{{result=\"rejected\"}} is {rejected}, was {rejected_before}"
        );
        Ok(())
    })
    .await
    .expect("seam_mesh_reloads_total{result=\"rejected\"} increases");

    let reply = client::http1_get(mesh.a.outbound(), "b", "/after-bad-file", &[])
        .await
        .expect("request after the bad file");
    assert_eq!(
        reply.status,
        200,
        "traffic should still flow: {}",
        reply.text()
    );
    assert_eq!(reply.json().expect("echo JSON")["name"], "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn yaml_syntax_error_is_rejected_and_old_model_kept() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let reply = client::http1_get(mesh.a.outbound(), "b", "/before", &[])
        .await
        .expect("request before the bad file");
    assert_eq!(reply.status, 200, "{}", reply.text());

    let broken = format!(
        "trust_domain: {}\nservices:\n  b:\n    join_token: \"x\"\n    endpoints: [\"{}\"\n  a: {{\n",
        mesh::TRUST_DOMAIN,
        mesh.b.inbound()
    );
    assert_rejected_and_old_model_kept(&mesh, &broken, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_endpoint_is_rejected_with_its_line_and_old_model_kept() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let reply = client::http1_get(mesh.a.outbound(), "b", "/before", &[])
        .await
        .expect("request before the bad file");
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Line 7 holds both the `endpoints` key and the bad entry, so the error is on line 7
    // whether it points at the key or at the value.
    let bad = format!(
        "trust_domain: {td}\nservices:\n  a:\n    join_token: \"{ta}\"\n    endpoints: [\"{a}\"]\n  b:\n    endpoints: [\"{b}\", \"nope\"]\n    join_token: \"{tb}\"\n",
        td = mesh::TRUST_DOMAIN,
        ta = mesh::join_token("a"),
        tb = mesh::join_token("b"),
        a = mesh.a.inbound(),
        b = mesh.b.inbound(),
    );
    assert_eq!(
        bad.lines().nth(6).map(|line| line.contains("nope")),
        Some(true)
    );
    assert_rejected_and_old_model_kept(&mesh, &bad, Some(7)).await;
    let error = mesh.mesh.mesh_state().await.expect("GET /mesh")["last_error"].to_string();
    assert!(
        error.contains("nope"),
        "last_error should quote the bad endpoint: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_endpoint_stops_receiving_traffic() {
    let mesh = TestMesh::start(&["a", "b"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b1 = EchoServer::start("b1").await.expect("app b1");
    let app_b2 = EchoServer::start("b2").await.expect("app b2");
    let (a, b1, b2) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b1.addr()),
        mesh.start_proxy("b", app_b2.addr()),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("b", &[b1.inbound(), b2.inbound()])])
        .await
        .expect("mesh lists b1 and b2");

    let app = AppClient::new(a.outbound());
    // The balancer (P2C over peak-EWMA) gives a new endpoint its share at once, but
    // prefers the faster of two once both are measured: read until both have served.
    let reached_both = |served: &[String]| {
        served.iter().any(|name| name.contains("b1"))
            && served.iter().any(|name| name.contains("b2"))
    };
    let mut served = Vec::new();
    while served.len() < 200 && !reached_both(&served) {
        let reply = app.get("b", "/both").await.expect("request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        served.push(reply.json().expect("echo JSON")["name"].to_string());
    }
    assert!(
        reached_both(&served),
        "the balancer should reach both endpoints: {served:?}"
    );

    mesh.set_endpoints(&[("b", &[b2.inbound()])])
        .await
        .expect("mesh lists only b2");
    let endpoints = a
        .wait_endpoints("b", 1, Duration::from_secs(5))
        .await
        .expect("a drops b1");
    assert_eq!(endpoints, vec![b2.inbound().to_string()]);
    let b1_before = app_b1.requests_seen();
    for _ in 0..10 {
        let reply = app.get("b", "/only-b2").await.expect("request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json().expect("echo JSON")["name"], "b2");
    }
    assert_eq!(app_b1.requests_seen(), b1_before, "b1 still got traffic");
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_service_becomes_unknown() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let reply = client::http1_get(mesh.a.outbound(), "b", "/before", &[])
        .await
        .expect("request before the removal");
    assert_eq!(reply.status, 200, "{}", reply.text());

    mesh.mesh.remove_service("b").await.expect("mesh drops b");
    wait::until(
        "a learns that b is gone",
        Duration::from_secs(5),
        || async {
            let config = mesh.a.config().await?;
            anyhow::ensure!(
                config["subscriptions"]["b"]["state"] == "not_found",
                "/config: {config}"
            );
            Ok(())
        },
    )
    .await
    .expect("a's subscription to b turns not_found");
    let reply = client::http1_get(mesh.a.outbound(), "b", "/after", &[])
        .await
        .expect("request after the removal");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains("unknown service b"),
        "{:?}",
        reply.text()
    );
    assert_eq!(
        mesh.app_b.requests_seen(),
        1,
        "b's app got traffic after the removal"
    );
}
