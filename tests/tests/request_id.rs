//! Correlation ids: the first meshed proxy a request meets gives it an `x-request-id`
//! when it has none (the caller's outbound, or the callee's inbound for an unmeshed
//! caller), keeps an app's sane id and replaces an insane one; every proxy passes it on,
//! and both proxies' access logs and spans carry it. `request_id: false` on the callee
//! leaves requests as they are.

use std::time::Duration;

use seam_tests::otlp::OtlpReceiver;
use seam_tests::proxy::{ProxyOptions, TestProxy};
use seam_tests::tls::{self, ProbeOutcome};
use seam_tests::{TwoHop, client, wait};
use serde_json::Value;

const TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";
const WITHIN: Duration = Duration::from_secs(15);

/// The ids the app behind `b` saw for one request from `a`'s app.
async fn ids_seen(mesh: &TwoHop, headers: &[(&str, &str)]) -> Vec<String> {
    let reply = client::http1_get(mesh.a.outbound(), "b", "/ids", headers)
        .await
        .expect("request through the mesh");
    assert_eq!(reply.status, 200, "{}", reply.text());
    ids_of(&reply.json().expect("echo JSON"))
}

fn ids_of(echo: &Value) -> Vec<String> {
    echo["request_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no request_ids: {echo}"))
        .iter()
        .map(|id| id.as_str().expect("text").to_owned())
        .collect()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The access log lines `proxy` printed for `path`, once there are `count`.
async fn log_lines(proxy: &TestProxy, path: &str, count: usize) -> Vec<Value> {
    wait::until(
        &format!("{} logs {count} request(s) for {path}", proxy.service()),
        WITHIN,
        || async {
            let lines: Vec<Value> = proxy
                .stdout_lines()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|line| line["path"] == path)
                .collect();
            anyhow::ensure!(lines.len() >= count, "{lines:?}");
            Ok(lines)
        },
    )
    .await
    .expect("access log lines")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_id_reaches_the_app_and_both_proxies_logs_and_spans() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let endpoint = receiver.endpoint();
    let mesh = TwoHop::start_with(|options: ProxyOptions| {
        options.args(&["--access-log", "json", "--otlp-endpoint", &endpoint])
    })
    .await
    .expect("two-hop mesh starts");
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let seen = ids_seen(&mesh, &[("traceparent", &traceparent)]).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let id = &seen[0];
    assert!(is_generated(id), "32 lowercase hex digits: {id}");
    for proxy in [&mesh.a, &mesh.b] {
        let lines = log_lines(proxy, "/ids", 1).await;
        assert_eq!(lines[0]["request_id"], id.as_str(), "{}", lines[0]);
    }
    let spans = receiver
        .wait_trace(TRACE, 2, WITHIN)
        .await
        .expect("both spans");
    for span in &spans {
        assert_eq!(
            span.attribute("seam.request_id"),
            Some(id.as_str()),
            "{span:?}"
        );
    }
    let again = ids_seen(&mesh, &[]).await;
    assert!(is_generated(&again[0]) && again[0] != *id, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apps_sane_id_is_kept_and_an_insane_one_replaced() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    for sane in ["order-7:retry/1", "0f8fad5b-d9cb-469f-a165-70867728950e"] {
        assert_eq!(ids_seen(&mesh, &[("x-request-id", sane)]).await, [sane]);
    }
    let too_long = "a".repeat(129);
    for insane in ["has spaces", "semi;colon", too_long.as_str()] {
        let seen = ids_seen(&mesh, &[("x-request-id", insane)]).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(is_generated(&seen[0]), "{insane:?} replaced by {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmeshed_callers_request_gets_its_id_at_the_callees_inbound() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    mesh.mesh
        .set_service_lines("b", &["allow_plaintext: true"])
        .await
        .expect("plaintext allowed");
    let body = wait::until("b answers plaintext", WITHIN, || async {
        match tls::probe_plaintext(mesh.b.inbound(), "b").await? {
            ProbeOutcome::Answered { status: 200, body } => Ok(body),
            other => anyhow::bail!("not yet: {other:?}"),
        }
    })
    .await
    .expect("plaintext answered");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    let ids = ids_of(&echo);
    assert!(ids.len() == 1 && is_generated(&ids[0]), "{echo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_false_leaves_requests_without_one() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    assert_eq!(ids_seen(&mesh, &[]).await.len(), 1, "on by default");
    mesh.mesh
        .set_service_lines("b", &["request_id: false"])
        .await
        .expect("request ids off for b");
    wait::until("a stops adding ids for b", WITHIN, || async {
        let seen = ids_seen(&mesh, &[]).await;
        anyhow::ensure!(seen.is_empty(), "{seen:?}");
        Ok(())
    })
    .await
    .expect("no id added");
    assert_eq!(
        ids_seen(&mesh, &[("x-request-id", "not checked")]).await,
        ["not checked"],
        "an id that is there still passes on, unchecked"
    );
}
