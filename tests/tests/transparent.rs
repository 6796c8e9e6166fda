//! Transparent mode end to end, in pods made of network namespaces (root only): each
//! meshed pod has an unmodified app, `seam-proxy init`, and a `seam-proxy` running as the
//! proxy uid; one control plane in a pod of its own; pods without a proxy outside the mesh.
//!
//! - HTTP from an app to another pod's address (IPv4 and IPv6) and to a service's virtual
//!   address crosses mTLS (the callee's app sees the caller's SPIFFE id, the `Host` the
//!   app sent is left alone), and `seamctl verify --require-mtls` passes;
//! - opaque TCP between pods, a protocol where the client speaks first and one where the
//!   server does (on a port declared opaque: nothing is waited for, whatever the detection
//!   wait; on any other port: once the detection wait is over), over mTLS counted with the
//!   caller's identity, and refused by `allow`;
//! - a destination outside the mesh is passed through, skipped ports bypass the proxy,
//!   the proxy's own connection to the control plane is not redirected, and a pod calling
//!   itself does not loop;
//! - a real WebSocket crosses, both ways, to another pod's address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use seam_tests::EchoServer;
use seam_tests::mesh::{metric_value, spiffe_id};
use seam_tests::meshed_pods::{self, MeshedPod, MeshedPods, get};
use seam_tests::streams::{GREETING, StreamApp, talk_lines};
use seam_tests::wait;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The apps' HTTP port, and the ports of their other servers.
const HTTP_PORT: u16 = 8080;
const ECHO_PORT: u16 = 7000;
const GREETER_PORT: u16 = 7001;
/// A second greeter, on a port not declared opaque.
const DETECTED_GREETER_PORT: u16 = 7002;
const WEBSOCKET_PORT: u16 = 9000;
/// A virtual address of `b` (no pod has it: only the proxies know it).
const VIRTUAL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The mesh file: `a` and `b` with their pods' addresses, `b`'s other ports, its
/// virtual address, its opaque port, and `extra` lines under `b`.
fn mesh_file(a: &MeshedPod, b: &MeshedPod, b_extra: &str) -> String {
    let endpoints = |pod: &MeshedPod| {
        format!(
            "[\"{}\", \"{}\"]",
            pod.pod.v4(HTTP_PORT),
            pod.pod.v6(HTTP_PORT)
        )
    };
    format!(
        "services:
  a:
    join_token: {a_token:?}
    endpoints: {a_endpoints}
  b:
    join_token: {b_token:?}
    endpoints: {b_endpoints}
    ports: [{ECHO_PORT}, {GREETER_PORT}, {DETECTED_GREETER_PORT}, {WEBSOCKET_PORT}, {{ port: 80, target_port: {HTTP_PORT} }}]
    addresses: [\"{VIRTUAL_IP}:80\", \"{VIRTUAL_IP}:{ECHO_PORT}\"]
    opaque_ports: [{GREETER_PORT}]
{b_extra}",
        a_token = seam_tests::mesh::join_token("a"),
        b_token = seam_tests::mesh::join_token("b"),
        a_endpoints = endpoints(a),
        b_endpoints = endpoints(b),
    )
}

/// Two meshed pods, `a` and `b`, with their apps, and the mesh file written.
struct Pods {
    a: MeshedPod,
    b: MeshedPod,
    _apps: Vec<EchoServer>,
    _streams: Vec<StreamApp>,
    pods: MeshedPods,
}

async fn start(a_init: &[&str], a_proxy: &[&str]) -> Pods {
    let mut pods = MeshedPods::start(&["a", "b"])
        .await
        .expect("network and control plane");
    let a = pods
        .add_meshed_pod("a", a_init, a_proxy)
        .await
        .expect("pod a");
    let b = pods.add_meshed_pod("b", &[], &[]).await.expect("pod b");
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let mut apps = Vec::new();
    for (pod, name) in [(&a, "a"), (&b, "b")] {
        let listener = pod
            .pod
            .netns()
            .bind_tcp(any(HTTP_PORT))
            .await
            .expect("bind");
        apps.push(EchoServer::serve(listener, name).expect("app"));
    }
    let bind = |port| b.pod.netns().bind_tcp(any(port));
    let streams = vec![
        StreamApp::echo(bind(ECHO_PORT).await.expect("bind")).expect("echo"),
        StreamApp::greeter(bind(GREETER_PORT).await.expect("bind")).expect("greeter"),
        StreamApp::greeter(bind(DETECTED_GREETER_PORT).await.expect("bind")).expect("greeter"),
        StreamApp::websocket(bind(WEBSOCKET_PORT).await.expect("bind")).expect("websocket"),
    ];
    pods.write_mesh(&mesh_file(&a, &b, ""))
        .await
        .expect("mesh file");
    Pods {
        a,
        b,
        _apps: apps,
        _streams: streams,
        pods,
    }
}

fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(metrics, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_to_a_pod_address_and_a_virtual_address_crosses_mtls() {
    let setup = start(&[], &[]).await;
    let (a, b, pods) = (&setup.a, &setup.b, &setup.pods);
    let targets = [
        ("b's IPv4 address", b.pod.v4(HTTP_PORT)),
        ("b's IPv6 address", b.pod.v6(HTTP_PORT)),
        ("b's virtual address", SocketAddr::from((VIRTUAL_IP, 80))),
    ];
    for (what, target) in targets {
        let (status, body) = get(a.pod.netns(), target, "/hello", Some("b.example"))
            .await
            .unwrap_or_else(|err| panic!("{what}: {err:#}"));
        assert_eq!(status, 200, "{what}: {body}");
        let echo: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(echo["name"], "b", "{what}");
        assert_eq!(echo["client_id"], a.spiffe_id(), "{what}: it crossed mTLS");
        assert_eq!(
            echo["host"], "b.example",
            "{what}: the app's Host is left alone"
        );
    }
    let metrics = b.metrics().await.expect("b's metrics");
    let inbound = counter(
        &metrics,
        "seam_requests_total",
        &[("direction", "inbound"), ("peer", &spiffe_id("a"))],
    );
    assert_eq!(inbound, 3.0, "{metrics}");

    let admin = pods.admin_addr().to_string();
    let (passed, output) =
        meshed_pods::seamctl(pods, &["verify", "--admin", &admin, "--require-mtls"])
            .await
            .expect("seamctl runs");
    assert!(passed, "seamctl verify --require-mtls: {output}");
    assert!(
        output.contains(&a.spiffe_id()) && output.contains(&b.spiffe_id()),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tcp_between_pods_crosses_mtls_and_allow_refuses_it() {
    // A detection wait far longer than the test's reads: on the opaque port, the greeting
    // can only arrive if nothing is waited for.
    let setup = start(&[], &["--detect-timeout", "60s"]).await;
    let (a, b, pods) = (&setup.a, &setup.b, &setup.pods);
    let netns = a.pod.netns();

    let client_first = netns
        .connect_tcp(b.pod.v4(ECHO_PORT))
        .await
        .expect("connect");
    let (heard, last) = tokio::time::timeout(
        Duration::from_secs(10),
        talk_lines(client_first, false, &["one", "two"]),
    )
    .await
    .expect("an answer within 10 s")
    .expect("talk");
    assert_eq!(
        (heard.as_slice(), last.as_str()),
        (&["one".to_owned(), "two".to_owned()][..], "bye after 2")
    );

    let server_first = netns
        .connect_tcp(b.pod.v4(GREETER_PORT))
        .await
        .expect("connect");
    let (heard, _) = tokio::time::timeout(
        Duration::from_secs(10),
        talk_lines(server_first, true, &["hello"]),
    )
    .await
    .expect("the greeting comes at once on an opaque port")
    .expect("talk");
    assert_eq!(heard, [GREETING, "hello"]);

    let metrics = b.metrics().await.expect("b's metrics");
    let streams = counter(
        &metrics,
        "seam_opaque_streams_total",
        &[("direction", "inbound"), ("peer", &a.spiffe_id())],
    );
    assert_eq!(streams, 2.0, "both came over mTLS from a: {metrics}");

    // b now lets nobody in: a's stream is refused, counted with a's identity.
    pods.write_mesh(&mesh_file(a, b, "    allow: []\n"))
        .await
        .expect("mesh file");
    wait::until("b refuses a's streams", Duration::from_secs(10), || async {
        let tcp = netns.connect_tcp(b.pod.v4(ECHO_PORT)).await?;
        let outcome =
            tokio::time::timeout(Duration::from_secs(5), talk_lines(tcp, false, &["x"])).await;
        anyhow::ensure!(
            !matches!(&outcome, Ok(Ok((heard, _))) if heard == &["x".to_owned()]),
            "still echoed"
        );
        Ok(())
    })
    .await
    .expect("refused");
    let metrics = b.metrics().await.expect("b's metrics");
    let denied = counter(
        &metrics,
        "seam_authorization_denied_total",
        &[("caller", &a.spiffe_id()), ("reason", "not_allowed")],
    );
    assert!(denied >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_first_protocol_on_any_port_works_once_detection_gives_up() {
    let setup = start(&[], &["--detect-timeout", "300ms"]).await;
    let (a, b) = (&setup.a, &setup.b);
    let tcp = a
        .pod
        .netns()
        .connect_tcp(b.pod.v4(DETECTED_GREETER_PORT))
        .await
        .expect("connect");
    let (heard, _) = tokio::time::timeout(Duration::from_secs(10), talk_lines(tcp, true, &["hi"]))
        .await
        .expect("the greeting comes once the detection wait is over")
        .expect("talk");
    assert_eq!(heard, [GREETING, "hi"]);
    let metrics = b.metrics().await.expect("b's metrics");
    let streams = counter(
        &metrics,
        "seam_opaque_streams_total",
        &[("direction", "inbound"), ("peer", &a.spiffe_id())],
    );
    assert_eq!(streams, 1.0, "it crossed mTLS: {metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_the_mesh_skipped_ports_the_control_plane_and_the_pod_itself_go_direct() {
    const SKIPPED_PORT: u16 = 7500;
    let skipped = SKIPPED_PORT.to_string();
    let mut setup = start(&["--skip-outbound-ports", &skipped], &[]).await;
    let a = &setup.a;
    // The proxy became ready: its own connection to the control plane went out as it is.
    // Redirected to its own outbound listener, it would have been counted there.
    let metrics = a.metrics().await.expect("a's metrics");
    let outbound = |metrics: &str| {
        counter(
            metrics,
            "seam_connections_total",
            &[("direction", "outbound")],
        )
    };
    assert_eq!(outbound(&metrics), 0.0, "{metrics}");

    let c = setup.pods.add_plain_pod("c").expect("pod c");
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let _outside = StreamApp::echo(c.netns().bind_tcp(any(ECHO_PORT)).await.expect("bind"))
        .expect("a server outside the mesh");
    let _skipped = StreamApp::echo(c.netns().bind_tcp(any(SKIPPED_PORT)).await.expect("bind"))
        .expect("a server on a skipped port");

    let tcp = a
        .pod
        .netns()
        .connect_tcp(c.v4(ECHO_PORT))
        .await
        .expect("connect");
    let (heard, _) = talk_lines(tcp, false, &["out"]).await.expect("talk");
    assert_eq!(heard, ["out"]);
    let metrics = a.metrics().await.expect("a's metrics");
    assert_eq!(
        counter(&metrics, "seam_tcp_passthrough_total", &[]),
        1.0,
        "{metrics}"
    );
    let through_proxy = outbound(&metrics);
    assert_eq!(through_proxy, 1.0, "{metrics}");

    let tcp = a
        .pod
        .netns()
        .connect_tcp(c.v4(SKIPPED_PORT))
        .await
        .expect("connect");
    let (heard, _) = talk_lines(tcp, false, &["skip"]).await.expect("talk");
    assert_eq!(heard, ["skip"]);
    // A pod calling its own address: straight to its own app, no loop, no proxy.
    let (status, body) = get(a.pod.netns(), a.pod.v4(HTTP_PORT), "/self", None)
        .await
        .expect("a calls itself");
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(echo["name"], "a");
    assert!(echo["client_id"].is_null(), "not through a proxy: {body}");
    let metrics = a.metrics().await.expect("a's metrics");
    assert_eq!(
        outbound(&metrics),
        through_proxy,
        "neither went through a's proxy: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_crosses_to_another_pods_address_both_ways() {
    let setup = start(&[], &[]).await;
    let (a, b) = (&setup.a, &setup.b);
    for family in [IpAddr::from(Ipv4Addr::UNSPECIFIED), "::".parse().unwrap()] {
        let tcp = a
            .pod
            .netns()
            .connect_tcp(b.addr(family, WEBSOCKET_PORT))
            .await
            .expect("connect");
        let (mut socket, response) = tokio_tungstenite::client_async("ws://b/chat", tcp)
            .await
            .expect("the handshake crosses both proxies");
        assert_eq!(response.status(), 101);
        let mut heard = Vec::new();
        for i in 0..20 {
            socket
                .send(Message::text(format!("m{i}")))
                .await
                .expect("send");
            heard.push(
                socket
                    .next()
                    .await
                    .expect("open")
                    .expect("a message")
                    .into_text()
                    .expect("text")
                    .to_string(),
            );
        }
        assert_eq!(heard[0], "echo m0");
        // The server pushes one of its own every ten.
        assert_eq!(heard[10], "push after 10", "{heard:?}");
        socket.close(None).await.expect("close");
    }
    let metrics = b.metrics().await.expect("b's metrics");
    let switched = counter(
        &metrics,
        "seam_requests_total",
        &[
            ("direction", "inbound"),
            ("status", "101"),
            ("peer", &a.spiffe_id()),
        ],
    );
    assert_eq!(switched, 2.0, "{metrics}");
}
