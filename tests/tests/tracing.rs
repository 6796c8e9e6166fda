//! Distributed tracing through two proxies, checked with a real OTLP/gRPC receiver built
//! on the official OTLP proto types: each proxy exports one span per request (client span
//! out of `a`, server span into `b`), all in the caller's trace with the right parents and
//! each proxy's service name; the app behind `b` gets a `traceparent` naming b's span.
//! Also: new traces when none came in, B3 when asked, parent-based sampling, and an absent
//! collector that costs no request anything.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use seam_tests::mesh;
use seam_tests::otlp::OtlpReceiver;
use seam_tests::proxy::ProxyOptions;
use seam_tests::{TwoHop, client};
use serde_json::Value;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const SPANS_WITHIN: Duration = Duration::from_secs(15);

/// The trace headers the app behind `b` saw.
async fn trace_headers_seen(mesh: &TwoHop, path: &str, headers: &[(&str, &str)]) -> Value {
    let reply = client::http1_get(mesh.a.outbound(), "b", path, headers)
        .await
        .expect("request through the mesh");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().expect("echo JSON")["trace_headers"].clone()
}

/// `(trace id, span id, flags)` of a traceparent.
fn traceparent_parts(value: &Value) -> (String, String, String) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent: {value}"));
    let parts: Vec<&str> = text.split('-').collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert_eq!(parts[0], "00", "{text}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

async fn mesh_exporting_to(receiver: &OtlpReceiver, extra: &[&str]) -> TwoHop {
    let endpoint = receiver.endpoint();
    TwoHop::start_with(|options: ProxyOptions| {
        options.args(&["--otlp-endpoint", &endpoint]).args(extra)
    })
    .await
    .expect("two-hop mesh starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hops_export_one_trace_with_parent_links_and_service_names() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mesh = mesh_exporting_to(&receiver, &[]).await;
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let seen = trace_headers_seen(
        &mesh,
        "/orders/17",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    let (trace_id, app_parent, flags) = traceparent_parts(&seen["traceparent"]);
    assert_eq!(trace_id, TRACE, "the caller's trace continues: {seen}");
    assert_eq!(flags, "01", "{seen}");
    assert_eq!(
        seen["tracestate"], "vendor=opaque",
        "tracestate passes on: {seen}"
    );

    let spans = receiver
        .wait_trace(TRACE, 2, SPANS_WITHIN)
        .await
        .expect("both proxies export their span");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let a = spans
        .iter()
        .find(|span| span.service_name == "a")
        .unwrap_or_else(|| panic!("no span from a: {spans:#?}"));
    let b = spans
        .iter()
        .find(|span| span.service_name == "b")
        .unwrap_or_else(|| panic!("no span from b: {spans:#?}"));
    assert_eq!(a.kind, SpanKind::Client, "{a:?}");
    assert_eq!(b.kind, SpanKind::Server, "{b:?}");
    assert_eq!(
        a.parent_span_id, CALLER_SPAN,
        "a's parent is the caller: {a:?}"
    );
    assert_eq!(b.parent_span_id, a.span_id, "b's parent is a's span: {b:?}");
    assert_eq!(app_parent, b.span_id, "the app's parent is b's span");
    let b_id = mesh::spiffe_id("b");
    let a_id = mesh::spiffe_id("a");
    for (span, peer) in [(a, b_id.as_str()), (b, a_id.as_str())] {
        assert_eq!(span.name, "GET", "{span:?}");
        assert_eq!(
            span.attribute("http.request.method"),
            Some("GET"),
            "{span:?}"
        );
        assert_eq!(
            span.attribute("http.response.status_code"),
            Some("200"),
            "{span:?}"
        );
        assert_eq!(span.attribute("http.route"), Some("default"), "{span:?}");
        assert_eq!(span.attribute("url.path"), Some("/orders/17"), "{span:?}");
        assert_eq!(span.attribute("seam.peer.identity"), Some(peer), "{span:?}");
    }
    assert_eq!(
        a.attribute("network.peer.port"),
        Some(mesh.b.inbound().port().to_string().as_str()),
        "{a:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_trace_context_starts_a_new_trace() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mesh = mesh_exporting_to(&receiver, &[]).await;
    let seen = trace_headers_seen(&mesh, "/", &[]).await;
    let (trace_id, app_parent, flags) = traceparent_parts(&seen["traceparent"]);
    assert_ne!(trace_id, "0".repeat(32));
    assert_eq!(flags, "01", "sampled at the default ratio 1: {seen}");
    let spans = receiver
        .wait_trace(&trace_id, 2, SPANS_WITHIN)
        .await
        .expect("both spans exported");
    let a = spans
        .iter()
        .find(|span| span.service_name == "a")
        .expect("a's span");
    let b = spans
        .iter()
        .find(|span| span.service_name == "b")
        .expect("b's span");
    assert_eq!(a.parent_span_id, "", "a's span is the root: {a:?}");
    assert_eq!(b.parent_span_id, a.span_id, "{b:?}");
    assert_eq!(app_parent, b.span_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn sampling_is_parent_based_with_the_ratio_for_new_traces() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mesh = mesh_exporting_to(&receiver, &["--trace-sample-ratio", "0"]).await;
    // A new trace at ratio 0 is not sampled, yet still propagated.
    let seen = trace_headers_seen(&mesh, "/unsampled", &[]).await;
    let (unsampled_trace, _, flags) = traceparent_parts(&seen["traceparent"]);
    assert_eq!(flags, "00", "{seen}");
    // A caller's sampled decision wins over the ratio.
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let seen = trace_headers_seen(&mesh, "/sampled", &[("traceparent", &traceparent)]).await;
    assert_eq!(traceparent_parts(&seen["traceparent"]).2, "01", "{seen}");
    receiver
        .wait_trace(TRACE, 2, SPANS_WITHIN)
        .await
        .expect("the caller-sampled trace is exported");
    // Spans leave in the order they end, so the unsampled request's would be here by now.
    let leaked: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.trace_id == unsampled_trace)
        .collect();
    assert!(leaked.is_empty(), "unsampled spans exported: {leaked:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_is_read_and_written_when_asked() {
    // b3 only: a B3 single header continues, W3C headers pass through untouched.
    let mesh = TwoHop::start_with(|options| options.args(&["--trace-propagation", "b3"]))
        .await
        .expect("two-hop mesh starts");
    let untouched = format!("00-{}-{CALLER_SPAN}-01", "1".repeat(32));
    let b3 = format!("{TRACE}-{CALLER_SPAN}-1");
    let seen = trace_headers_seen(&mesh, "/", &[("b3", &b3), ("traceparent", &untouched)]).await;
    let single = seen["b3"]
        .as_str()
        .unwrap_or_else(|| panic!("no b3: {seen}"));
    let parts: Vec<&str> = single.split('-').collect();
    assert_eq!(parts[0], TRACE, "{seen}");
    assert_ne!(parts[1], CALLER_SPAN, "b's own span is the parent: {seen}");
    assert_eq!(parts[2], "1", "{seen}");
    assert_eq!(seen["x-b3-traceid"], TRACE, "{seen}");
    assert_eq!(seen["x-b3-spanid"], parts[1], "{seen}");
    assert_eq!(seen["traceparent"], untouched.as_str(), "{seen}");
    drop(mesh);

    // w3c,b3: B3 multi headers in, both formats out, one trace.
    let mesh = TwoHop::start_with(|options| options.args(&["--trace-propagation", "w3c,b3"]))
        .await
        .expect("two-hop mesh starts");
    let seen = trace_headers_seen(
        &mesh,
        "/",
        &[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", CALLER_SPAN),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let (trace_id, parent, _) = traceparent_parts(&seen["traceparent"]);
    assert_eq!(trace_id, TRACE, "{seen}");
    assert_eq!(seen["x-b3-traceid"], TRACE, "{seen}");
    assert_eq!(seen["x-b3-spanid"], parent.as_str(), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_collector_fails_no_request() {
    // A port nothing listens on: every export fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let endpoint = format!("http://{closed}");
    let mesh = TwoHop::start_with(|options| options.args(&["--otlp-endpoint", &endpoint]))
        .await
        .expect("two-hop mesh starts with an unreachable collector");
    for round in 0..20 {
        let reply = client::http1_get(mesh.a.outbound(), "b", &format!("/{round}"), &[])
            .await
            .expect("request through the mesh");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_collector_fails_no_request() {
    // A collector that accepts connections (the kernel completes the handshake) but never
    // answers: exports hang until their timeout, on the exporter's own thread.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener that is never accepted from");
    let endpoint = format!("http://{}", stalled.local_addr().expect("its address"));
    let mesh = TwoHop::start_with(|options| options.args(&["--otlp-endpoint", &endpoint]))
        .await
        .expect("two-hop mesh starts with a stalled collector");
    for round in 0..20 {
        let reply = client::http1_get(mesh.a.outbound(), "b", &format!("/{round}"), &[])
            .await
            .expect("request through the mesh");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
    }
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tracing_flags_are_refused_with_what_was_wrong() {
    let mesh = seam_tests::TestMesh::start(&["a"])
        .await
        .expect("mesh starts");
    let app = seam_tests::EchoServer::start("a").await.expect("app");
    for (flags, expected) in [
        (
            ["--trace-propagation", "w3c,jaeger"],
            "unknown trace propagation format \"jaeger\"",
        ),
        (
            ["--trace-sample-ratio", "1.5"],
            "--trace-sample-ratio must be between 0 and 1",
        ),
        (
            ["--access-log", "yaml"],
            "unknown access log format \"yaml\"",
        ),
        (
            ["--otlp-endpoint", "ftp://collector:4317"],
            "must be an http:// URL",
        ),
        (["--otlp-endpoint", "http://not a host"], "is not usable"),
    ] {
        let error = match mesh
            .spawn_proxy(ProxyOptions::new("a", app.addr()).args(&flags))
            .await
        {
            Ok(_) => panic!("a proxy started with {flags:?}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(expected), "{flags:?}: {error}");
    }
}
