//! The golden metrics: after real traffic, the proxies' `/metrics` carry requests by
//! direction, service, route, status, gRPC status, TLS and peer identity, a latency
//! histogram, connection and byte counters, discovery ACKs and the certificate expiry;
//! the control plane's carry proxies, pushes and their duration, NACKs and certificates.
//! `promtool check metrics` (Debian's prometheus package) accepts all of it.

use std::time::{Duration, SystemTime};

use seam_tests::mesh::{self, metric_value};
use seam_tests::{CallerAndEndpoints, GrpcHealthServer, TwoHop, client, prometheus, wait};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread")]
async fn golden_metrics_have_bounded_labels_and_pass_promtool() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    for user in 0..3 {
        let reply = client::http1_get(mesh.a.outbound(), "b", &format!("/users/{user}"), &[])
            .await
            .expect("request through the mesh");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = client::http1_get(mesh.a.outbound(), "nowhere", "/", &[])
        .await
        .expect("request for an unknown service");
    assert_eq!(reply.status, 503, "{}", reply.text());

    let a = mesh.a.metrics().await.expect("a's /metrics");
    let b = mesh.b.metrics().await.expect("b's /metrics");
    let b_id = mesh::spiffe_id("b");
    let a_id = mesh::spiffe_id("a");
    let outbound = [
        ("direction", "outbound"),
        ("service", "b"),
        ("route", "default"),
        ("status", "200"),
        ("grpc_status", ""),
        ("tls", "true"),
        ("peer", b_id.as_str()),
    ];
    assert_eq!(
        metric_value(&a, "seam_requests_total", &outbound),
        Some(3.0),
        "{a}"
    );
    let refused = [
        ("direction", "outbound"),
        ("service", "unknown"),
        ("status", "503"),
        ("tls", "false"),
        ("peer", ""),
    ];
    assert_eq!(
        metric_value(&a, "seam_requests_total", &refused),
        Some(1.0),
        "{a}"
    );
    let inbound = [
        ("direction", "inbound"),
        ("service", "b"),
        ("route", "default"),
        ("status", "200"),
        ("tls", "true"),
        ("peer", a_id.as_str()),
    ];
    assert_eq!(
        metric_value(&b, "seam_requests_total", &inbound),
        Some(3.0),
        "{b}"
    );
    let latency = [
        ("direction", "outbound"),
        ("service", "b"),
        ("route", "default"),
    ];
    assert_eq!(
        metric_value(&a, "seam_request_duration_seconds_count", &latency),
        Some(3.0),
        "{a}"
    );
    assert_eq!(
        metric_value(
            &a,
            "seam_request_duration_seconds_bucket",
            &[("direction", "outbound"), ("service", "b"), ("le", "+Inf")]
        ),
        Some(3.0),
        "{a}"
    );
    // No raw path and no endpoint port ever becomes a label.
    for text in [&a, &b] {
        assert!(
            !text.contains("/users/"),
            "a raw path leaked into labels:\n{text}"
        );
        assert!(
            !text.contains(&format!(":{}", mesh.b.inbound().port())),
            "an endpoint port leaked into labels:\n{text}"
        );
    }
    for (name, labels) in [
        ("seam_tcp_read_bytes_total", [("direction", "outbound")]),
        ("seam_tcp_written_bytes_total", [("direction", "outbound")]),
        ("seam_tcp_read_bytes_total", [("direction", "inbound")]),
    ] {
        let text = if labels[0].1 == "outbound" { &a } else { &b };
        let bytes = metric_value(text, name, &labels).unwrap_or(0.0);
        assert!(bytes > 100.0, "{name}{labels:?} is {bytes}:\n{text}");
    }
    assert!(
        metric_value(&a, "seam_discovery_acks_total", &[]).unwrap_or(0.0) >= 1.0,
        "{a}"
    );
    assert_eq!(
        metric_value(&a, "seam_discovery_nacks_total", &[]),
        Some(0.0)
    );
    assert_eq!(metric_value(&a, "seam_discovery_connected", &[]), Some(1.0));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let expiry = metric_value(&a, "seam_certificate_expiry_timestamp_seconds", &[])
        .expect("certificate expiry");
    assert!(expiry > now, "expiry {expiry} is not after now {now}");

    let control_plane = wait::until(
        "the control plane counts a push to a",
        Duration::from_secs(5),
        || async {
            let text = mesh.mesh.metrics().await?;
            anyhow::ensure!(
                metric_value(&text, "seam_discovery_updates_total", &[]).unwrap_or(0.0) >= 1.0,
                "{text}"
            );
            Ok(text)
        },
    )
    .await
    .expect("control plane metrics");
    assert_eq!(
        metric_value(&control_plane, "seam_connected_proxies", &[]),
        Some(2.0),
        "{control_plane}"
    );
    assert_eq!(
        metric_value(
            &control_plane,
            "seam_certificate_requests_total",
            &[("result", "issued")]
        ),
        Some(2.0),
        "{control_plane}"
    );
    assert!(
        control_plane.contains("# TYPE seam_discovery_push_duration_seconds histogram"),
        "{control_plane}"
    );
    assert!(
        control_plane.contains("seam_discovery_nacks_total"),
        "{control_plane}"
    );

    for (who, text) in [
        ("proxy a", &a),
        ("proxy b", &b),
        ("control plane", &control_plane),
    ] {
        prometheus::check_metrics(text)
            .await
            .unwrap_or_else(|err| panic!("{who}: {err:#}\n{text}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_status_is_counted_from_trailers_and_from_trailers_only_answers() {
    let grpc_app = GrpcHealthServer::start().await.expect("gRPC health server");
    let mesh = CallerAndEndpoints::start_listed("grpc", [grpc_app.addr()])
        .await
        .expect("mesh and proxies start, the gRPC service listed");
    let (a, [grpc]) = (&mesh.a, &mesh.endpoints);
    let channel = client::grpc_channel(a.outbound(), "grpc")
        .await
        .expect("h2c connection to a's outbound");
    let mut health = HealthClient::new(channel);
    for _ in 0..2 {
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health/Check through two proxies");
    }
    // An unknown service name: the health service answers NOT_FOUND (5) in headers only.
    let status = health
        .check(HealthCheckRequest {
            service: "seam.test.Unknown".to_string(),
        })
        .await
        .expect_err("unknown health service");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    for (proxy, direction) in [(&a, "outbound"), (&grpc, "inbound")] {
        let expect = |code: &'static str, count: f64| async move {
            wait::until(
                &format!("{direction} grpc_status={code} counted {count} times"),
                Duration::from_secs(5),
                || async {
                    let text = proxy.metrics().await?;
                    let value = metric_value(
                        &text,
                        "seam_requests_total",
                        &[
                            ("direction", direction),
                            ("service", "grpc"),
                            ("status", "200"),
                            ("grpc_status", code),
                        ],
                    );
                    anyhow::ensure!(value == Some(count), "{value:?} in\n{text}");
                    Ok(())
                },
            )
            .await
            .expect("gRPC status counted");
        };
        expect("0", 2.0).await;
        expect("5", 1.0).await;
    }
}
