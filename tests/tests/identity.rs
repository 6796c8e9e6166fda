//! Identity: the control plane signs a CSR only with the service's join token and puts
//! the SPIFFE id in the certificate; a proxy holding a wrong token gets nothing, says so
//! on stderr and stays unready; a peer presenting another service's identity is refused;
//! short-lived certificates are renewed in time, not in a loop, under live traffic.

use std::time::{Duration, Instant};

use seam_proto::SpiffeId;
use seam_tests::certify;
use seam_tests::client::AppClient;
use seam_tests::mesh::{self, TestMesh};
use seam_tests::proxy::ProxyOptions;
use seam_tests::{EchoServer, client, wait};

/// How long a proxy with a wrong token may take to report the rejection.
const REJECTION_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn certify_with_wrong_join_token_is_permission_denied() {
    let mesh = TestMesh::start(&["a"]).await.expect("mesh starts");
    let mut identity = certify::identity_client(mesh.grpc_addr(), &mesh.ca_path())
        .await
        .expect("Identity client over TLS");

    let status = certify::certify(&mut identity, "a", "not-the-token")
        .await
        .map(|(_, response)| response)
        .expect_err("a wrong join token must be refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("join token rejected for service \"a\""),
        "the message should name the join token and the service: {:?}",
        status.message()
    );

    // A service the mesh does not know is refused as well.
    let status = certify::certify(&mut identity, "ghost", &mesh::join_token("a"))
        .await
        .map(|(_, response)| response)
        .expect_err("another service's token must be refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn certify_with_right_join_token_issues_the_spiffe_id() {
    let mesh = TestMesh::start(&["a"]).await.expect("mesh starts");
    let mut identity = certify::identity_client(mesh.grpc_addr(), &mesh.ca_path())
        .await
        .expect("Identity client over TLS");

    let (_, response) = certify::certify(&mut identity, "a", &mesh::join_token("a"))
        .await
        .expect("Certify with the right token");
    assert_eq!(response.spiffe_id, mesh::spiffe_id("a"));
    let leaf = response
        .certificate_chain_der
        .first()
        .expect("a certificate chain with a leaf");
    let id = SpiffeId::from_certificate_der(leaf).expect("leaf carries a SPIFFE id");
    assert_eq!(id.as_str(), mesh::spiffe_id("a"));
    assert!(!response.trust_bundle_der.is_empty(), "no trust bundle");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    assert!(
        response.not_after_unix_seconds > i64::try_from(now).expect("now fits i64"),
        "certificate already expired: {}",
        response.not_after_unix_seconds
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_with_wrong_join_token_stays_unready_and_says_why() {
    let mesh = TestMesh::start(&["a"]).await.expect("mesh starts");
    let app = EchoServer::start("a").await.expect("app a");
    let proxy = mesh
        .spawn_proxy(ProxyOptions::new("a", app.addr()).join_token("wrong-token"))
        .await
        .expect("proxy starts its listeners");

    let line = proxy
        .log()
        .wait_for_line("join token rejected", REJECTION_TIMEOUT)
        .await
        .expect("the proxy logs the rejection");
    // The line was found by its text; what it must not carry is the token itself.
    assert!(
        !line.contains("wrong-token"),
        "the join token was logged: {line}"
    );
    assert_eq!(
        proxy.ready_status().await.expect("GET /ready"),
        503,
        "a proxy without a certificate must not be ready"
    );
    // It keeps retrying (with backoff) and stays unready meanwhile.
    assert_eq!(proxy.ready_status().await.expect("GET /ready"), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_presenting_another_identity_is_refused() {
    // The mesh file lists proxy c's inbound as an endpoint of b: a must notice that the
    // peer is not spiffe://…/sa/b and refuse to send it b's traffic.
    let mesh = TestMesh::start(&["a", "b", "c"])
        .await
        .expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_c = EchoServer::start("c").await.expect("app c");
    let (a, c) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("c", app_c.addr()),
    )
    .expect("proxies start");
    // (c itself stays without endpoints: the control plane refuses an address listed
    // under two services.)
    mesh.set_endpoints(&[("b", &[c.inbound()])])
        .await
        .expect("mesh lists c's inbound under b");

    let reply = client::http1_get(a.outbound(), "b", "/impostor", &[])
        .await
        .expect("request to b");
    assert_eq!(reply.status, 502, "body: {}", reply.text());
    assert!(
        reply.text().to_lowercase().contains("identity"),
        "the 502 should name the identity problem: {:?}",
        reply.text()
    );
    assert_eq!(app_c.requests_seen(), 0, "c's app received b's request");
}

#[tokio::test(flavor = "multi_thread")]
async fn short_lived_certificates_rotate_without_failing_requests() {
    // With a 6 s certificate lifetime both proxies must renew before expiry — but not
    // at once: a certificate renewed within a second of being installed means the proxy
    // renews in a loop — and swap their TLS configs under live traffic.
    const TTL: Duration = Duration::from_secs(6);
    const ROTATION_TIMEOUT: Duration = Duration::from_secs(10);
    const EARLIEST_RENEWAL: Duration = Duration::from_secs(1);
    let mesh = TestMesh::start_with_args(&["a", "b"], &["--cert-ttl", "6s"])
        .await
        .expect("mesh with short-lived certificates starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let app_b = EchoServer::start("b").await.expect("app b");
    let (a, b) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("b", app_b.addr()),
    )
    .expect("proxies start");
    mesh.set_endpoints(&[("b", &[b.inbound()])])
        .await
        .expect("mesh lists b");
    let proxies = [&a, &b];
    let mut first = Vec::new();
    for proxy in proxies {
        let identity = proxy.admin_json("/identity").await.expect("/identity");
        first.push(identity);
    }
    let observed_from = Instant::now();

    // One request per poll, on a keep-alive client, until both serials have changed.
    let app = AppClient::new(a.outbound());
    let mut renewed_after: [Option<Duration>; 2] = [None, None];
    let mut requests = 0;
    let mut failures = Vec::new();
    let deadline = Instant::now() + ROTATION_TIMEOUT;
    while renewed_after.iter().any(Option::is_none) && Instant::now() < deadline {
        requests += 1;
        match app.get("b", "/during-rotation").await {
            Ok(reply) if reply.status == 200 => {}
            other => failures.push(format!("{other:?}")),
        }
        for (index, proxy) in proxies.iter().enumerate() {
            let serial = proxy.admin_json("/identity").await.expect("/identity")["serial"].clone();
            if renewed_after[index].is_none() && serial != first[index]["serial"] {
                renewed_after[index] = Some(observed_from.elapsed());
            }
        }
        tokio::time::sleep(wait::POLL_INTERVAL).await;
    }
    eprintln!(
        "{requests} requests; renewals seen after {renewed_after:?}; first identities {first:?}"
    );
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    for (proxy, renewed) in proxies.iter().zip(renewed_after) {
        let renewed = renewed.unwrap_or_else(|| {
            panic!(
                "{} did not renew within {ROTATION_TIMEOUT:?}",
                proxy.service()
            )
        });
        assert!(
            renewed >= EARLIEST_RENEWAL,
            "{} renewed a {TTL:?} certificate {renewed:?} after it was read: renewing in a \
             loop? first identity {first:?}",
            proxy.service()
        );
        // The first certificate was issued before it was read, so this is before expiry.
        assert!(
            renewed < TTL,
            "{} renewed a {TTL:?} certificate only {renewed:?} after it was read, after it \
             expired; first identity {first:?}",
            proxy.service()
        );
    }

    // And traffic still flows on fresh connections after the rotation.
    let reply = client::http1_get(a.outbound(), "b", "/after-rotation", &[])
        .await
        .expect("request after rotation");
    assert_eq!(reply.status, 200, "{}", reply.text());
}
