//! Hardening of the listeners and the control plane: a client that sends half a request
//! head is cut off by the header read timeout (10 s by default); a request whose first
//! bytes arrive apart is still served; an oversized request head
//! gets 431; a listener at `--max-connections` closes new connections at once and counts
//! them; `POST /shutdown` on the admin port drains and exits 0; the control plane's gRPC
//! port speaks only TLS; and no join token or private key ever reaches a log line.

use std::time::{Duration, Instant};

use seam_tests::mesh::{self, metric_value};
use seam_tests::proxy::ProxyOptions;
use seam_tests::tls::{self, ProbeOutcome};
use seam_tests::{EchoServer, TwoHop, client, wait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes, up to `limit`; returns what came and how long it took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration, bool) {
    let started = Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut received))
        .await
        .is_ok();
    (received, started.elapsed(), closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn half_a_request_head_is_cut_off_by_the_default_header_read_timeout() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let mut slow = TcpStream::connect(mesh.a.outbound())
        .await
        .expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: b\r\nX-Half: ")
        .await
        .expect("write half a head");
    let (received, elapsed, closed) = read_until_closed(&mut slow, Duration::from_secs(30)).await;
    assert!(closed, "the proxy kept a half-sent request open for 30s");
    // The proxy's unit tests time the cut-off exactly on a paused clock (`server.rs`); a
    // loaded machine may delay it here, but not by as much as another 10 s.
    assert!(
        elapsed < Duration::from_secs(18),
        "cut off only after {elapsed:?}; the default is 10s"
    );
    assert!(
        elapsed >= Duration::from_secs(8),
        "cut off after {elapsed:?}: sooner than the 10s timeout, so not by it"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text}"
    );
    assert_eq!(mesh.app_b.requests_seen(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn header_read_timeout_is_a_flag_and_applies_to_idle_new_connections() {
    let mesh = seam_tests::TestMesh::start(&["a"]).await.expect("mesh");
    let app = EchoServer::start("a").await.expect("app");
    let proxy = mesh
        .start_proxy_with(ProxyOptions::new("a", app.addr()).args(&["--header-read-timeout", "1s"]))
        .await
        .expect("proxy");
    for opening in [&b"GET / HTTP/1.1\r\nHo"[..], &b""[..]] {
        let mut slow = TcpStream::connect(proxy.outbound()).await.expect("connect");
        slow.write_all(opening).await.expect("write");
        let (_, elapsed, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
        assert!(
            closed && elapsed <= Duration::from_secs(4),
            "sent {:?}: closed={closed} after {elapsed:?}, want about 1s",
            String::from_utf8_lossy(opening)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_whose_first_bytes_come_apart_are_still_served() {
    // The listeners tell HTTP/1 from HTTP/2 by peeking at the first bytes, and hand the
    // choice back to hyper-util when those could still be either ("P" begins both POST
    // and the HTTP/2 preface). Whether the proxy peeks before the rest arrives depends
    // on scheduling; a request must be answered either way. (The proxy's unit tests in
    // `server.rs` hold a server to each short peek deterministically.)
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    for (opening, rest) in [("P", "OST /apart"), ("PU", "T /apart"), ("G", "ET /apart")] {
        let mut stream = TcpStream::connect(mesh.a.outbound())
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(opening.as_bytes()).await.expect("write");
        let head = format!(
            "{rest} HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let (received, _, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            closed && text.starts_with("HTTP/1.1 200"),
            "{opening}|{rest}: {text:?}"
        );
    }
    assert_eq!(mesh.app_b.requests_seen(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_request_head_gets_431() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let fits = "x".repeat(32 * 1024);
    let reply = client::http1_get(mesh.a.outbound(), "b", "/fits", &[("x-big", &fits)])
        .await
        .expect("32 KiB head");
    assert_eq!(reply.status, 200, "{}", reply.text());

    let mut stream = TcpStream::connect(mesh.a.outbound())
        .await
        .expect("connect");
    let too_big = "y".repeat(80 * 1024);
    let head = format!("GET /too-big HTTP/1.1\r\nHost: b\r\nX-Big: {too_big}\r\n\r\n");
    // The proxy may answer and close before it has read everything: ignore write errors.
    let _ = stream.write_all(head.as_bytes()).await;
    let (received, _, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "an 80 KiB head should get 431, got {text:?}"
    );
    assert_eq!(
        mesh.app_b.requests_seen(),
        1,
        "only the request that fits got through"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_at_its_connection_limit_closes_new_connections_and_counts_them() {
    let mesh = seam_tests::TestMesh::start(&["a"]).await.expect("mesh");
    let app = EchoServer::start("a").await.expect("app");
    let proxy = mesh
        .start_proxy_with(ProxyOptions::new("a", app.addr()).args(&["--max-connections", "2"]))
        .await
        .expect("proxy");
    let open = |metrics: &str| {
        metric_value(
            metrics,
            "seam_open_connections",
            &[("direction", "outbound")],
        )
        .unwrap_or(0.0)
    };
    let first = TcpStream::connect(proxy.outbound()).await.expect("first");
    let second = TcpStream::connect(proxy.outbound()).await.expect("second");
    wait::until(
        "two outbound connections are open",
        Duration::from_secs(5),
        || async {
            let metrics = proxy.metrics().await?;
            anyhow::ensure!(open(&metrics) == 2.0, "{metrics}");
            Ok(())
        },
    )
    .await
    .expect("two open");

    let mut third = TcpStream::connect(proxy.outbound())
        .await
        .expect("third connects");
    let (received, _, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(
        closed && received.is_empty(),
        "the third connection was not closed at once"
    );
    let metrics = proxy.metrics().await.expect("metrics");
    assert_eq!(
        metric_value(
            &metrics,
            "seam_connections_refused_total",
            &[("direction", "outbound"), ("reason", "limit")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // A slot frees when a connection closes.
    drop(first);
    wait::until("a slot frees", Duration::from_secs(5), || async {
        let metrics = proxy.metrics().await?;
        anyhow::ensure!(open(&metrics) == 1.0, "{metrics}");
        Ok(())
    })
    .await
    .expect("slot freed");
    let mut fourth = TcpStream::connect(proxy.outbound()).await.expect("fourth");
    fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (received, _, _) = read_until_closed(&mut fourth, Duration::from_secs(10)).await;
    assert!(
        received.starts_with(b"HTTP/1.1 503"),
        "a connection after the slot freed should be served: {:?}",
        String::from_utf8_lossy(&received)
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_shutdown_on_the_admin_port_drains_and_exits_zero() {
    let mut mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let (status, body) = seam_control_plane::launch::http_get(mesh.a.admin(), "/shutdown")
        .await
        .expect("GET /shutdown");
    assert_eq!(status, 405, "only POST may stop the proxy: {body}");
    assert_eq!(mesh.a.ready_status().await.expect("ready"), 200);

    let mut admin = TcpStream::connect(mesh.a.admin()).await.expect("admin");
    admin
        .write_all(b"POST /shutdown HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .expect("POST /shutdown");
    let (received, _, _) = read_until_closed(&mut admin, Duration::from_secs(5)).await;
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let status = mesh
        .a
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("proxy exits");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_grpc_port_speaks_only_tls() {
    let mesh = seam_tests::TestMesh::start(&["a"]).await.expect("mesh");
    let outcome = tls::probe_plaintext(mesh.grpc_addr(), "seam-control-plane")
        .await
        .expect("probe runs");
    assert!(
        matches!(outcome, ProbeOutcome::Refused { .. }),
        "plaintext to the gRPC port must get no answer: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_join_token_or_private_key_reaches_any_log() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    for path in ["/one", "/two"] {
        let reply = client::http1_get(mesh.a.outbound(), "b", path, &[])
            .await
            .expect("request");
        assert_eq!(reply.status, 200);
    }
    // A proxy with a wrong token: its refusal is logged on both sides.
    let wrong = "wrong-token-that-must-not-be-logged";
    let app = EchoServer::start("a2").await.expect("app");
    let refused = mesh
        .mesh
        .spawn_proxy(ProxyOptions::new("a", app.addr()).join_token(wrong))
        .await
        .expect("proxy with a wrong token starts");
    refused
        .log()
        .wait_for_line("cannot get a certificate", Duration::from_secs(20))
        .await
        .expect("the wrong token is refused");
    mesh.mesh
        .log()
        .wait_for_line("refused a certificate request", Duration::from_secs(5))
        .await
        .expect("the control plane logs the refusal");

    let logs = [
        ("control plane", mesh.mesh.log().text()),
        ("proxy a", mesh.a.log().text()),
        ("proxy b", mesh.b.log().text()),
        ("proxy with a wrong token", refused.log().text()),
    ];
    let secrets = [
        mesh::join_token("a"),
        mesh::join_token("b"),
        wrong.to_string(),
        "PRIVATE KEY".to_string(),
        "BEGIN".to_string(),
    ];
    for (name, text) in &logs {
        assert!(
            !text.is_empty(),
            "{name} logged nothing: the check would prove nothing"
        );
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{name}'s log contains {secret:?}:\n{text}"
            );
        }
    }
}
