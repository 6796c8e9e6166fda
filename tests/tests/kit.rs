//! The test kit checked on its own, without Seam's binaries: the echo app over HTTP/1.1
//! and h2c, held requests, the gRPC health server, and the TLS probe against a local
//! server that requires client certificates from one CA (so a refusal the probe reports
//! is a refusal, and an answer is an answer).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use seam_tests::client::{self, AppClient};
use seam_tests::tls::{self, ForeignCa, ProbeOutcome};
use seam_tests::{EchoServer, GrpcHealthServer};
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_http1_and_h2c_and_holds_on_request() {
    let echo = EchoServer::start("e").await.expect("echo starts");

    let reply = client::http1_get(echo.addr(), "svc", "/p", &[("x-seam-client-id", "one")])
        .await
        .expect("HTTP/1.1");
    let body = reply.json().expect("JSON");
    assert_eq!(body["name"], "e");
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["host"], "svc");
    assert_eq!(body["client_id"], "one");
    assert_eq!(body["spoofed_headers_seen"], 1);

    let reply = client::h2c_get(echo.addr(), "svc", "/h2", &[])
        .await
        .expect("h2c");
    let body = reply.json().expect("JSON");
    assert_eq!(body["version"], "HTTP/2.0");
    assert_eq!(body["host"], "svc");
    assert!(body["client_id"].is_null());
    assert_eq!(body["spoofed_headers_seen"], 0);

    let app = AppClient::new(echo.addr());
    let reply = app.get("svc", "/pooled").await.expect("pooled client");
    assert_eq!(reply.json().expect("JSON")["path"], "/pooled");

    let addr = echo.addr();
    let held = tokio::spawn(async move { client::http1_get(addr, "svc", "/hold", &[]).await });
    echo.wait_held(1, Duration::from_secs(5))
        .await
        .expect("held");
    assert!(!held.is_finished());
    echo.release_held();
    let reply = held.await.expect("task").expect("held request completes");
    assert_eq!(reply.status, 200);
    assert_eq!(echo.requests_seen(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_server_answers_with_an_origin_override() {
    let server = GrpcHealthServer::start().await.expect("server starts");
    let channel = Endpoint::from_shared(format!("http://{}", server.addr()))
        .expect("URI")
        .origin("http://grpc".parse().expect("origin"))
        .connect()
        .await
        .expect("connect");
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Check");
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_probe_tells_refusal_from_answer() {
    tls::install_crypto_provider();
    let trusted = ForeignCa::new().expect("trusted CA");
    let server_identity = trusted
        .leaf("spiffe://test/ns/default/sa/server")
        .expect("leaf");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.cert_der().clone()).expect("root");
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_client_cert_verifier(verifier)
    .with_single_cert(server_identity.chain, server_identity.key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        "hello",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let good = trusted
        .leaf("spiffe://test/ns/default/sa/client")
        .expect("leaf");
    let outcome = tls::probe_inbound(
        addr,
        tls::client_config_with_cert(good).expect("config"),
        "server",
    )
    .await
    .expect("probe");
    assert!(
        matches!(&outcome, ProbeOutcome::Answered { status: 200, body } if body == "hello"),
        "{outcome:?}"
    );

    let outcome = tls::probe_inbound(addr, tls::client_config_without_cert(), "server")
        .await
        .expect("probe");
    assert!(outcome.is_refused(), "{outcome:?}");

    let foreign = ForeignCa::new().expect("foreign CA");
    let stranger = foreign
        .leaf("spiffe://test/ns/default/sa/client")
        .expect("leaf");
    let outcome = tls::probe_inbound(
        addr,
        tls::client_config_with_cert(stranger).expect("config"),
        "server",
    )
    .await
    .expect("probe");
    assert!(outcome.is_refused(), "{outcome:?}");

    let outcome = tls::probe_plaintext(addr, "server").await.expect("probe");
    assert!(outcome.is_refused(), "{outcome:?}");
}
