//! The inbound listener admits only mesh peers: plaintext, TLS without a client
//! certificate and TLS with a certificate from a foreign CA all fail before any HTTP
//! exchange, and the app behind the proxy never sees a request. A real mesh certificate
//! is let through (so the refusals are about the certificate, not the probe). The
//! `x-seam-client-id` header the app sees is always the proxy's, never the caller's.
//! Bytes of some other protocol are told apart from TLS and HTTP, refused and counted.

use seam_tests::client;
use seam_tests::mesh;
use seam_tests::tls::{self, ForeignCa, ProbeOutcome};
use seam_tests::{TwoHop, certify};

fn assert_refused(outcome: &ProbeOutcome, what: &str) {
    eprintln!("{what}: {outcome:?}");
    assert!(
        outcome.is_refused(),
        "{what}: the inbound should refuse before any HTTP exchange, got {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_http_is_refused() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    let outcome = tls::probe_plaintext(mesh.b.inbound(), "b")
        .await
        .expect("probe runs");
    assert_refused(&outcome, "plaintext HTTP/1.1");
    assert_eq!(mesh.app_b.requests_seen(), 0, "the app saw a request");
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_are_neither_tls_nor_http_are_refused_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let mut tcp = tokio::net::TcpStream::connect(mesh.b.inbound())
        .await
        .expect("connect to b's inbound");
    tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n")
        .await
        .expect("send a foreign protocol's greeting");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the proxy closes the connection instead of waiting");
    assert!(
        read.is_err() || answer.is_empty(),
        "nothing may come back: {answer:?}"
    );
    let metrics = mesh.b.metrics().await.expect("b's metrics");
    let refused = mesh::metric_value(
        &metrics,
        "seam_connections_refused_total",
        &[("direction", "inbound"), ("reason", "unknown_protocol")],
    );
    assert_eq!(refused, Some(1.0), "{metrics}");
    assert_eq!(mesh.app_b.requests_seen(), 0, "the app saw a request");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_client_certificate_is_refused() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    let outcome = tls::probe_inbound(mesh.b.inbound(), tls::client_config_without_cert(), "b")
        .await
        .expect("probe runs");
    assert_refused(&outcome, "TLS with no client certificate");
    assert_eq!(mesh.app_b.requests_seen(), 0, "the app saw a request");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_foreign_ca_certificate_is_refused() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    // Same SPIFFE id a real caller has; only the issuer is wrong.
    let foreign = ForeignCa::new().expect("foreign CA");
    let identity = foreign.leaf(&mesh::spiffe_id("a")).expect("foreign leaf");
    let config = tls::client_config_with_cert(identity).expect("client config");
    let outcome = tls::probe_inbound(mesh.b.inbound(), config, "b")
        .await
        .expect("probe runs");
    assert_refused(&outcome, "TLS with a foreign CA's certificate");
    assert_eq!(mesh.app_b.requests_seen(), 0, "the app saw a request");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_mesh_certificate_is_admitted() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    let identity = certify::mesh_identity(
        mesh.mesh.grpc_addr(),
        &mesh.mesh.ca_path(),
        "a",
        &mesh::join_token("a"),
    )
    .await
    .expect("a mesh certificate for a");
    let config = tls::client_config_with_cert(identity).expect("client config");
    let outcome = tls::probe_inbound(mesh.b.inbound(), config, "b")
        .await
        .expect("probe runs");
    match outcome {
        ProbeOutcome::Answered { status, body } => {
            assert_eq!(status, 200, "body: {body}");
            let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
            assert_eq!(echo["name"], "b", "{echo}");
            assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
        }
        other => panic!("a client with a mesh certificate should be answered, got {other:?}"),
    }
    assert_eq!(mesh.app_b.requests_seen(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_id_header_cannot_be_spoofed() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    for (round, path) in ["/spoof", "/spoof-again"].into_iter().enumerate() {
        let reply = client::http1_get(
            mesh.a.outbound(),
            "b",
            path,
            &[
                ("x-seam-client-id", "spiffe://evil/ns/x/sa/y"),
                ("X-Seam-Client-Id", "spiffe://evil/ns/x/sa/z"),
            ],
        )
        .await
        .expect("request with a forged client id");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        let echo = reply.json().expect("echo JSON");
        assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
        assert_eq!(
            echo["spoofed_headers_seen"], 1,
            "the app must see exactly one x-seam-client-id: {echo}"
        );
    }

    // Over h2c too.
    let reply = client::h2c_get(
        mesh.a.outbound(),
        "b",
        "/spoof-h2",
        &[("x-seam-client-id", "spiffe://evil/ns/x/sa/y")],
    )
    .await
    .expect("h2c request with a forged client id");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().expect("echo JSON");
    assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
    assert_eq!(echo["spoofed_headers_seen"], 1, "{echo}");
}
