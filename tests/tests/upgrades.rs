//! Connections that change protocol, in explicit mode: a real WebSocket client and server
//! (tungstenite) through two proxies, long-lived, messages both ways including ones the
//! server pushes unasked, and quiet for longer than the header read timeout; and `CONNECT`
//! from the app: a tunnel to a service of the mesh (a line protocol, over mTLS, counted
//! with the caller's identity), an IP:port the mesh does not know passed through, and a
//! name it does not know refused.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use seam_tests::mesh::{metric_value, spiffe_id};
use seam_tests::proxy::ProxyOptions;
use seam_tests::streams::{PUSH_EVERY, StreamApp, talk_lines};
use seam_tests::{EchoServer, TestMesh, wait};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Messages the client sends in each exchange.
const MESSAGES: usize = 30;
/// The proxies' header read timeout here: a tunnel must outlive it.
const HEADER_READ_TIMEOUT: &str = "1s";

async fn exchange<S>(
    socket: &mut tokio_tungstenite::WebSocketStream<S>,
    round: usize,
) -> Vec<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut heard = Vec::new();
    for i in 0..MESSAGES {
        socket
            .send(Message::text(format!("round {round} message {i}")))
            .await
            .expect("send");
        let expected = if (i + 1) % PUSH_EVERY == 0 { 2 } else { 1 };
        for _ in 0..expected {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("an answer within 10 s")
                .expect("the socket stays open")
                .expect("a message");
            heard.push(message.into_text().expect("text").to_string());
        }
    }
    heard
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_crosses_two_proxies_both_ways_and_outlives_the_header_timeout() {
    let mesh = TestMesh::start(&["a", "b"]).await.expect("mesh");
    let app_a = EchoServer::start("a").await.expect("app a");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_b = StreamApp::websocket(listener).expect("websocket app");
    let options = |service: &str, app| {
        ProxyOptions::new(service, app).args(&["--header-read-timeout", HEADER_READ_TIMEOUT])
    };
    let (a, b) = tokio::try_join!(
        mesh.start_proxy_with(options("a", app_a.addr())),
        mesh.start_proxy_with(options("b", app_b.addr())),
    )
    .expect("proxies");
    mesh.set_endpoints(&[("a", &[a.inbound()]), ("b", &[b.inbound()])])
        .await
        .expect("endpoints");

    let tcp = TcpStream::connect(a.outbound())
        .await
        .expect("connect to a");
    let (mut socket, response) = tokio_tungstenite::client_async("ws://b/chat", tcp)
        .await
        .expect("the WebSocket handshake crosses both proxies");
    assert_eq!(response.status(), 101);

    let first = exchange(&mut socket, 1).await;
    assert_eq!(first.len(), MESSAGES + MESSAGES / PUSH_EVERY);
    assert_eq!(first[0], "echo round 1 message 0");
    assert!(
        first.contains(&format!("push after {PUSH_EVERY}")),
        "{first:?}"
    );
    // Quiet for longer than the header read timeout: an upgraded connection is no longer
    // HTTP, and nothing may cut it for being slow to send a request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = exchange(&mut socket, 2).await;
    assert_eq!(second[0], "echo round 2 message 0");
    socket.close(None).await.expect("close");
    assert_eq!(app_b.connections(), 1, "one connection, upgraded once");

    // Counted as a request that switched protocols, then as an opaque stream by caller.
    let metrics = b.metrics().await.expect("b's metrics");
    let switched = metric_value(
        &metrics,
        "seam_requests_total",
        &[("direction", "inbound"), ("status", "101")],
    );
    assert_eq!(switched, Some(1.0), "{metrics}");
    wait::until(
        "b counts the stream's bytes",
        Duration::from_secs(10),
        || async {
            let metrics = b.metrics().await?;
            let received = metric_value(
                &metrics,
                "seam_opaque_bytes_total",
                &[
                    ("direction", "inbound"),
                    ("peer", &spiffe_id("a")),
                    ("flow", "received"),
                ],
            );
            anyhow::ensure!(received.is_some_and(|bytes| bytes > 0.0), "{received:?}");
            Ok(())
        },
    )
    .await
    .expect("bytes counted by caller");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_tunnels_to_a_service_passes_an_unknown_address_through_and_refuses_a_name() {
    let mesh = TestMesh::start(&["a", "b"]).await.expect("mesh");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b =
        StreamApp::echo(TcpListener::bind("127.0.0.1:0").await.expect("bind")).expect("echo app");
    let outside = StreamApp::greeter(TcpListener::bind("127.0.0.1:0").await.expect("bind"))
        .expect("a server outside the mesh");
    let (a, b) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b.addr()),
    )
    .expect("proxies");
    mesh.set_endpoints(&[("a", &[a.inbound()]), ("b", &[b.inbound()])])
        .await
        .expect("endpoints");

    // To a service: the tunnel ends at b's app, through b's proxy.
    let tcp = connect_through(a.outbound(), "b:7000").await;
    let (heard, last) = talk_lines(tcp, false, &["hello", "seam"])
        .await
        .expect("talk");
    assert_eq!(heard, ["hello", "seam"]);
    assert_eq!(last, "bye after 2", "the half-close crossed both proxies");
    let metrics = b.metrics().await.expect("b's metrics");
    let streams = metric_value(
        &metrics,
        "seam_opaque_streams_total",
        &[("direction", "inbound"), ("peer", &spiffe_id("a"))],
    );
    assert_eq!(streams, Some(1.0), "{metrics}");

    // An address the mesh does not know: passed through to it.
    let tcp = connect_through(a.outbound(), &outside.addr().to_string()).await;
    let (heard, _) = talk_lines(tcp, true, &["ping"]).await.expect("talk");
    assert_eq!(heard[1], "ping");
    let metrics = a.metrics().await.expect("a's metrics");
    assert_eq!(
        metric_value(&metrics, "seam_tcp_passthrough_total", &[]),
        Some(1.0),
        "{metrics}"
    );

    // A name the mesh does not know.
    let mut tcp = TcpStream::connect(a.outbound()).await.expect("connect");
    tcp.write_all(b"CONNECT nosuch:443 HTTP/1.1\r\nHost: nosuch:443\r\n\r\n")
        .await
        .expect("write");
    let status = BufReader::new(tcp).lines().next_line().await.expect("read");
    assert_eq!(
        status.as_deref(),
        Some("HTTP/1.1 503 Service Unavailable"),
        "{status:?}"
    );
}

/// Opens a `CONNECT` tunnel to `authority` through the outbound listener `outbound`.
async fn connect_through(outbound: std::net::SocketAddr, authority: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(outbound).await.expect("connect");
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    // Read the answer's head byte by byte, so no byte of the tunnel is read with it.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::io::AsyncReadExt::read(&mut tcp, &mut byte)
            .await
            .expect("read the answer");
        assert_eq!(read, 1, "the proxy closed before answering: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp
}
