//! Real TLS clients (rustls, in-process) that a proxy's inbound listener must turn away,
//! each for its own reason, each counted by that reason in
//! `seam_tls_handshakes_refused_total`: an expired certificate from the mesh CA, a
//! certificate from another CA, a mesh-signed certificate naming another trust domain or
//! no SPIFFE id at all, a client that speaks only TLS 1.2, and no client certificate. A
//! fresh mesh certificate on the same listener is admitted, so the refusals are about the
//! flaw and nothing else; the app behind the proxy sees no refused request.

use std::time::{Duration, SystemTime};

use seam_tests::mesh::{self, metric_value};
use seam_tests::mesh_ca::{LeafName, MeshCa};
use seam_tests::tls::{self, ClientIdentity, ForeignCa, ProbeOutcome};
use seam_tests::{TwoHop, wait};

/// Probes b's inbound with `config` and waits until b counts the refusal as `reason`.
async fn assert_refused_as(
    mesh: &TwoHop,
    config: std::sync::Arc<rustls::ClientConfig>,
    what: &str,
    reason: &str,
) {
    let before = refused(mesh, reason).await;
    let outcome = tls::probe_inbound(mesh.b.inbound(), config, "b")
        .await
        .expect("probe runs");
    assert!(
        outcome.is_refused(),
        "{what}: the inbound should refuse before any HTTP exchange, got {outcome:?}"
    );
    wait::until(
        &format!("{what} is counted as {reason}"),
        Duration::from_secs(5),
        || async {
            let now = refused(mesh, reason).await;
            anyhow::ensure!(
                now == before + 1.0,
                "count for {reason} is {now}, was {before}"
            );
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err:#}"));
}

async fn refused(mesh: &TwoHop, reason: &str) -> f64 {
    let metrics = mesh.b.metrics().await.expect("b's metrics");
    metric_value(
        &metrics,
        "seam_tls_handshakes_refused_total",
        &[("direction", "inbound"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

fn with_cert(identity: ClientIdentity) -> std::sync::Arc<rustls::ClientConfig> {
    tls::client_config_with_cert(identity).expect("client config")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_flawed_client_is_refused_and_counted_by_reason() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let state_dir = mesh.mesh.ca_path().parent().expect("state dir").to_owned();
    let ca = MeshCa::load(&state_dir).expect("mesh CA");
    let a = mesh::spiffe_id("a");
    let now = SystemTime::now();

    let expired = ca
        .leaf(
            LeafName::Spiffe(&a),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .expect("expired leaf");
    assert_refused_as(&mesh, with_cert(expired), "expired certificate", "expired").await;

    let foreign = ForeignCa::new()
        .expect("foreign CA")
        .leaf(&a)
        .expect("leaf");
    assert_refused_as(&mesh, with_cert(foreign), "another CA", "unknown_ca").await;

    let other_domain = ca
        .fresh_leaf(LeafName::Spiffe("spiffe://evil.local/ns/default/sa/a"))
        .expect("leaf");
    assert_refused_as(
        &mesh,
        with_cert(other_domain),
        "SPIFFE id of another trust domain",
        "bad_identity",
    )
    .await;

    let dns_only = ca.fresh_leaf(LeafName::Dns("a.example")).expect("leaf");
    assert_refused_as(&mesh, with_cert(dns_only), "no SPIFFE id", "bad_identity").await;

    let good = ca.fresh_leaf(LeafName::Spiffe(&a)).expect("leaf");
    let tls12 = tls::client_config_tls12_only(good.clone()).expect("TLS 1.2 config");
    assert_refused_as(&mesh, tls12, "TLS 1.2 only", "protocol_version").await;

    assert_refused_as(
        &mesh,
        tls::client_config_without_cert(),
        "no client certificate",
        "no_client_certificate",
    )
    .await;

    assert_eq!(
        mesh.app_b.requests_seen(),
        0,
        "the app saw a refused client"
    );
    // The same listener admits a sound certificate from the same CA.
    match tls::probe_inbound(mesh.b.inbound(), with_cert(good), "b")
        .await
        .expect("probe runs")
    {
        ProbeOutcome::Answered { status, body } => assert_eq!(status, 200, "{body}"),
        other => panic!("a sound mesh certificate was not admitted: {other:?}"),
    }
}
