//! Requests through two proxies: HTTP/1.1 (origin-form and absolute-form), HTTP/2 with
//! prior knowledge, gRPC, large bodies both ways and many concurrent HTTP/2 streams; and
//! the answers the outbound gives by itself when it has nowhere to send a request (503)
//! or cannot reach the peer (502).

use std::time::{Duration, Instant};

use seam_tests::client::{self, AppClient, H2cConnection};
use seam_tests::mesh::{self, TestMesh};
use seam_tests::proxy::ProxyOptions;
use seam_tests::{CallerAndEndpoints, EchoServer, GrpcHealthServer, TwoHop};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How quickly an outbound must answer a 503 it can decide by itself.
const IMMEDIATE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn http1_request_crosses_two_proxies_with_caller_identity() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    let reply = client::http1_get(mesh.a.outbound(), "b", "/hello?x=1", &[])
        .await
        .expect("request through a's outbound");
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let echo = reply.json().expect("echo JSON");
    assert_eq!(echo["name"], "b", "{echo}");
    assert_eq!(echo["version"], "HTTP/1.1", "{echo}");
    assert_eq!(echo["path"], "/hello", "{echo}");
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
    assert_eq!(echo["spoofed_headers_seen"], 1, "{echo}");

    // `b:80` names the same service.
    let reply = client::http1_get(mesh.a.outbound(), "b:80", "/with-port", &[])
        .await
        .expect("request with Host b:80");
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!(reply.json().expect("echo JSON")["path"], "/with-port");

    // A keep-alive client sending several requests on one connection.
    let app = AppClient::new(mesh.a.outbound());
    for round in 0..5 {
        let reply = app
            .get("b", &format!("/keep-alive/{round}"))
            .await
            .expect("keep-alive request");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_request_uses_outbound_as_http_proxy() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    let reply = client::http1_get_absolute(mesh.a.outbound(), "http://b/absolute/path")
        .await
        .expect("absolute-form request through a's outbound");
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let echo = reply.json().expect("echo JSON");
    assert_eq!(echo["name"], "b", "{echo}");
    assert_eq!(echo["path"], "/absolute/path", "{echo}");
    assert_eq!(echo["version"], "HTTP/1.1", "{echo}");
    assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_request_reaches_the_app_as_http2() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");

    let reply = client::h2c_get(mesh.a.outbound(), "b", "/over-h2", &[])
        .await
        .expect("h2c request through a's outbound");
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let echo = reply.json().expect("echo JSON");
    assert_eq!(echo["name"], "b", "{echo}");
    assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
    assert_eq!(echo["path"], "/over-h2", "{echo}");
    assert_eq!(echo["client_id"], mesh::spiffe_id("a"), "{echo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_check_crosses_two_proxies() {
    let grpc_app = GrpcHealthServer::start().await.expect("gRPC health server");
    let mesh = CallerAndEndpoints::start_listed("grpc", [grpc_app.addr()])
        .await
        .expect("mesh and proxies start, the gRPC service listed");
    let a = &mesh.a;

    // Dial a's outbound, but say `:authority: grpc` so the proxy routes to the service.
    let channel = client::grpc_channel(a.outbound(), "grpc")
        .await
        .expect("h2c connection to a's outbound");
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Check through two proxies");
    assert_eq!(
        response.into_inner().status(),
        ServingStatus::Serving,
        "the health service answered through the mesh"
    );

    // A status set in the app arrives unchanged (and a second call reuses the channel).
    grpc_app
        .reporter()
        .set_service_status("seam.test.Down", tonic_health::ServingStatus::NotServing)
        .await;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "seam.test.Down".to_string(),
        })
        .await
        .expect("second Health/Check through two proxies");
    assert_eq!(response.into_inner().status(), ServingStatus::NotServing);

    // A gRPC call to a service the mesh does not know fails fast with the 503. (The
    // contract answers plain HTTP; a gRPC-shaped answer, `grpc-status: 14`, would show
    // as UNAVAILABLE, while tonic reports a text 503 as INTERNAL. Both are accepted.)
    let channel = client::grpc_channel(a.outbound(), "nowhere")
        .await
        .expect("h2c connection to a's outbound");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect_err("no service answers to nowhere");
    assert!(
        status.code() == tonic::Code::Unavailable || status.message().contains("503"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_service_is_an_immediate_503() {
    let mesh = TestMesh::start(&["a"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let a = mesh
        .start_proxy("a", app_a.addr())
        .await
        .expect("proxy a starts");

    let started = Instant::now();
    let reply = client::http1_get(a.outbound(), "nowhere", "/", &[])
        .await
        .expect("request for an unknown service");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 503, "body: {}", reply.text());
    assert!(
        reply.text().contains("unknown service nowhere"),
        "body should name the unknown service: {:?}",
        reply.text()
    );
    assert!(
        elapsed < IMMEDIATE,
        "a 503 for an unknown service took {elapsed:?}"
    );
    let config = a.config().await.expect("a's /config");
    assert_eq!(
        config["subscriptions"]["nowhere"]["state"], "not_found",
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_without_endpoints_is_an_immediate_503() {
    let mesh = TestMesh::start(&["a", "empty"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    // This proxy takes every setting from SEAM_* environment variables, not flags.
    let a = mesh
        .start_proxy_with(ProxyOptions::new("a", app_a.addr()).settings_via_env())
        .await
        .expect("proxy a starts from its environment");

    let started = Instant::now();
    let reply = client::http1_get(a.outbound(), "empty", "/", &[])
        .await
        .expect("request for a service with no endpoints");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 503, "body: {}", reply.text());
    assert!(
        reply.text().contains("no endpoints for empty"),
        "body should say there are no endpoints: {:?}",
        reply.text()
    );
    assert!(
        elapsed < IMMEDIATE,
        "a 503 for a service with no endpoints took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_is_a_502_naming_the_cause() {
    let mesh = TestMesh::start(&["a", "gone"]).await.expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let a = mesh
        .start_proxy("a", app_a.addr())
        .await
        .expect("proxy a starts");
    // A loopback port nobody listens on any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    mesh.set_endpoints(&[("gone", &[dead])])
        .await
        .expect("mesh lists the dead endpoint");

    let reply = client::http1_get(a.outbound(), "gone", "/", &[])
        .await
        .expect("request to an unreachable endpoint");
    eprintln!("502 body: {:?}", reply.text());
    assert_eq!(reply.status, 502, "body: {}", reply.text());
    assert!(
        !reply.text().trim().is_empty(),
        "a 502 should name its cause"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_arrives_whole() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();

    let reply = client::http1_post(mesh.a.outbound(), "b", "/upload", body.into())
        .await
        .expect("1 MiB POST through the mesh");
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let echo = reply.json().expect("echo JSON");
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["body_bytes"], 1024 * 1024, "{echo}");
}

/// The body `/bytes/<n>` of the echo app answers.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_response_arrives_whole_over_http1_and_h2c() {
    const SIZE: usize = 4 * 1024 * 1024;
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let path = format!("/bytes/{SIZE}");

    let reply = client::http1_get(mesh.a.outbound(), "b", &path, &[])
        .await
        .expect("large HTTP/1.1 response");
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == pattern(SIZE),
        "HTTP/1.1 body differs ({} bytes)",
        reply.body.len()
    );

    let reply = client::h2c_get(mesh.a.outbound(), "b", &path, &[])
        .await
        .expect("large h2c response");
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == pattern(SIZE),
        "h2c body differs ({} bytes)",
        reply.body.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_h2c_streams_all_succeed() {
    const STREAMS: usize = 64;
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let connection = H2cConnection::connect(mesh.a.outbound())
        .await
        .expect("h2c connection to a's outbound");

    let requests = (0..STREAMS).map(|stream| {
        let connection = connection.clone();
        async move { connection.get("b", &format!("/stream/{stream}"), &[]).await }
    });
    let replies = futures_util::future::join_all(requests).await;
    for (stream, reply) in replies.into_iter().enumerate() {
        let reply = reply.unwrap_or_else(|error| panic!("stream {stream} failed: {error:#}"));
        assert_eq!(reply.status, 200, "stream {stream}: {}", reply.text());
        let echo = reply.json().expect("echo JSON");
        assert_eq!(echo["path"], format!("/stream/{stream}"), "{echo}");
        assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
    }
    assert_eq!(mesh.app_b.requests_seen(), STREAMS);
}
