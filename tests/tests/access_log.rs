//! `--access-log json`: each proxy prints one JSON object per request on stdout, with the
//! time, trace id, method, authority, path, status, duration, upstream endpoint, peer
//! identity and retries; both hops of one request name the same trace.

use std::time::Duration;

use seam_tests::mesh;
use seam_tests::proxy::TestProxy;
use seam_tests::{TwoHop, client, wait};
use serde_json::Value;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// The access log lines a proxy has printed, parsed.
async fn wait_log_lines(proxy: &TestProxy, count: usize) -> Vec<Value> {
    wait::until(
        &format!("{} prints {count} access log line(s)", proxy.service()),
        Duration::from_secs(5),
        || async {
            let lines: Vec<Value> = proxy
                .stdout_lines()
                .iter()
                .map(|line| serde_json::from_str(line))
                .collect::<Result<_, _>>()?;
            anyhow::ensure!(lines.len() >= count, "{lines:?}");
            Ok(lines)
        },
    )
    .await
    .expect("access log lines")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hop_logs_one_json_line_per_request() {
    let mesh = TwoHop::start_with(|options| options.args(&["--access-log", "json"]))
        .await
        .expect("two-hop mesh starts");
    let traceparent = format!("00-{TRACE}-b7ad6b7169203331-01");
    let reply = client::http1_get(
        mesh.a.outbound(),
        "b",
        "/orders/42?full=1",
        &[("traceparent", &traceparent)],
    )
    .await
    .expect("request through the mesh");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = client::http1_get(mesh.a.outbound(), "nowhere", "/", &[])
        .await
        .expect("request for an unknown service");
    assert_eq!(reply.status, 503);

    let a = wait_log_lines(&mesh.a, 2).await;
    let b = wait_log_lines(&mesh.b, 1).await;
    assert_eq!((a.len(), b.len()), (2, 1), "a: {a:?}\nb: {b:?}");
    let (out, inbound) = (&a[0], &b[0]);
    for line in [out, inbound] {
        assert_eq!(line["trace_id"], TRACE, "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["authority"], "b", "{line}");
        assert_eq!(line["path"], "/orders/42", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["retries"], 0, "{line}");
        let duration = line["duration_seconds"].as_f64().expect("duration");
        assert!(duration > 0.0 && duration < 10.0, "{line}");
        let time = line["time"].as_str().expect("time");
        humantime::parse_rfc3339(time).unwrap_or_else(|err| panic!("time {time}: {err}"));
    }
    assert_eq!(out["direction"], "outbound", "{out}");
    assert_eq!(out["upstream"], mesh.b.inbound().to_string(), "{out}");
    assert_eq!(out["peer_identity"], mesh::spiffe_id("b"), "{out}");
    assert_eq!(inbound["direction"], "inbound", "{inbound}");
    assert_eq!(inbound["peer_identity"], mesh::spiffe_id("a"), "{inbound}");
    assert_eq!(inbound["upstream"], Value::Null, "{inbound}");
    assert_eq!(
        (&out["tls"], &inbound["tls"]),
        (&Value::Bool(true), &Value::Bool(true))
    );

    let refused = &a[1];
    assert_eq!(refused["status"], 503, "{refused}");
    assert_eq!(refused["authority"], "nowhere", "{refused}");
    assert_eq!(refused["upstream"], Value::Null, "{refused}");
    assert_eq!(refused["tls"], false, "never left: {refused}");
    assert_eq!(
        refused["trace_id"].as_str().map(str::len),
        Some(32),
        "{refused}"
    );
}
