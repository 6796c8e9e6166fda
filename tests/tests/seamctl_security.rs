//! The operator's proof: `seamctl certs` lists every connected proxy's certificate as the
//! proxy holds it (identity, serial, issuing root, expiry) and warns, with a non-zero exit,
//! about certificates that expire soon; `seamctl verify` shows each caller → callee pair
//! that carried traffic, whether it was mTLS and with which identities, from the callee
//! proxies' own counts, and flags plaintext edges (`--require-mtls` fails on them).

use std::process::Output;

use seam_control_plane::launch;
use seam_tests::mesh;
use seam_tests::tls::{self, ProbeOutcome};
use seam_tests::{TwoHop, client, wait};

async fn seamctl(args: &[&str]) -> Output {
    tokio::process::Command::new(seam_tests::mesh::seam_binary("seamctl").expect("seamctl"))
        .args(args)
        .output()
        .await
        .expect("seamctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until the control plane lists both proxies with their admin addresses.
async fn wait_both_listed(mesh: &TwoHop) {
    wait::until(
        "/proxies lists a and b",
        std::time::Duration::from_secs(10),
        || async {
            let (_, body) = launch::http_get(mesh.mesh.admin_addr(), "/proxies").await?;
            anyhow::ensure!(
                body.contains(&mesh.a.admin().to_string())
                    && body.contains(&mesh.b.admin().to_string()),
                "{body}"
            );
            Ok(())
        },
    )
    .await
    .expect("both proxies listed");
}

#[tokio::test(flavor = "multi_thread")]
async fn certs_lists_every_proxy_and_warns_about_near_expiry() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    wait_both_listed(&mesh).await;
    let admin = mesh.mesh.admin_addr().to_string();

    let healthy = seamctl(&["certs", "--admin", &admin]).await;
    let text = stdout(&healthy);
    assert!(
        healthy.status.success(),
        "24h certificates should not warn:\n{text}"
    );
    let identity = mesh.a.admin_json("/identity").await.expect("/identity");
    for needle in [
        mesh::spiffe_id("a"),
        mesh::spiffe_id("b"),
        identity["serial"].as_str().expect("serial").to_owned(),
        identity["issuer_key_id"]
            .as_str()
            .expect("issuer key id")
            .to_owned(),
        "signing".to_owned(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?}:\n{text}");
    }

    let warned = seamctl(&["certs", "--admin", &admin, "--warn-within", "48h"]).await;
    let text = stdout(&warned);
    assert!(
        !warned.status.success(),
        "a warning must fail the command:\n{text}"
    );
    assert_eq!(
        text.matches("WARN expires within 2days").count(),
        2,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_shows_mtls_edges_with_identities_and_flags_plaintext() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    wait_both_listed(&mesh).await;
    let admin = mesh.mesh.admin_addr().to_string();
    let reply = client::http1_get(mesh.a.outbound(), "b", "/verify", &[])
        .await
        .expect("a → b");
    assert_eq!(reply.status, 200);

    let verified = seamctl(&["verify", "--admin", &admin, "--require-mtls"]).await;
    let text = stdout(&verified);
    assert!(verified.status.success(), "{text}");
    let edge = text
        .lines()
        .find(|line| line.starts_with("a ") && line.contains(" mTLS "))
        .unwrap_or_else(|| panic!("no a → b mTLS edge:\n{text}"));
    let cells: Vec<&str> = edge.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "a",
            "b",
            "mTLS",
            &mesh::spiffe_id("a"),
            &mesh::spiffe_id("b"),
            "1",
            "0"
        ],
        "{text}"
    );
    assert!(text.contains("1 edge(s), all mTLS"), "{text}");

    // Let plaintext in on b and use it: verify must say so, and --require-mtls fail.
    mesh.mesh
        .set_service_lines("b", &["allow_plaintext: true"])
        .await
        .expect("plaintext allowed");
    wait::until(
        "b answers plaintext",
        std::time::Duration::from_secs(10),
        || async {
            match tls::probe_plaintext(mesh.b.inbound(), "b").await? {
                ProbeOutcome::Answered { status: 200, .. } => Ok(()),
                other => anyhow::bail!("{other:?}"),
            }
        },
    )
    .await
    .expect("plaintext answered");
    let flagged = seamctl(&["verify", "--admin", &admin, "--require-mtls"]).await;
    let text = stdout(&flagged);
    assert!(!flagged.status.success(), "{text}");
    assert!(
        text.contains("(unauthenticated)") && text.contains("PLAINTEXT"),
        "{text}"
    );
    assert!(
        text.contains("WARN 1 of 2 edge(s) carried plaintext"),
        "{text}"
    );
}
