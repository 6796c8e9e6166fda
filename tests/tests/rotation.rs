//! Certificate rotation without outages, end to end with real proxies under steady
//! traffic and `--cert-ttl 6s` (so one test sees many leaf renewals and a whole root
//! rotation in about twenty seconds): `seamctl ca rotate` introduces a new root, the
//! control plane promotes it to signing after one lifetime and retires the old root after
//! another; meanwhile every request succeeds, every proxy renews its leaf several times,
//! and at the end every proxy's certificate comes from the new root, `ca.pem` holds only
//! the new root, and a proxy started afterwards from that file joins the mesh.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use seam_control_plane::launch;
use seam_tests::client;
use seam_tests::load::{Steady, SteadyLoad, timed_failures};
use seam_tests::mesh::TestMesh;
use seam_tests::{EchoServer, TwoHop, wait};
use serde_json::Value;
use tokio::time::Instant;

/// The whole rotation takes two lifetimes plus renewals; generous for debug builds.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(60);

async fn ca_state(mesh: &TestMesh) -> Value {
    let (status, body) = launch::http_get(mesh.admin_addr(), "/ca")
        .await
        .expect("GET /ca");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/ca is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn root_rotation_under_traffic_fails_no_request() {
    let mesh = TestMesh::start_with_args(&["a", "b", "c"], &["--cert-ttl", "6s"])
        .await
        .expect("mesh with 6s certificates starts");
    let hop = TwoHop::start_in(mesh).await.expect("proxies a and b start");
    let (a, b, mesh) = (&hop.a, &hop.b, &hop.mesh);
    let before = ca_state(mesh).await;
    let old_key_id = before["roots"][0]["key_id"]
        .as_str()
        .expect("root key id")
        .to_owned();
    assert_eq!(before["rotation"]["phase"], "idle", "{before}");

    // Steady traffic: a keep-alive client, and every fifth request on a new connection.
    let traffic =
        SteadyLoad::start(Steady::new(a.outbound(), "b", ROTATION_TIMEOUT * 2).fresh_every(5));

    // `seamctl ca rotate` follows the rotation to its end; watch serials meanwhile.
    let mut rotate =
        tokio::process::Command::new(seam_tests::mesh::seam_binary("seamctl").expect("seamctl"));
    rotate
        .args(["ca", "rotate", "--admin", &mesh.admin_addr().to_string()])
        .kill_on_drop(true);
    let rotate = tokio::spawn(async move { rotate.output().await });
    let mut serials: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut phases = BTreeSet::new();
    let deadline = Instant::now() + ROTATION_TIMEOUT;
    while !rotate.is_finished() && Instant::now() < deadline {
        for proxy in [a, b] {
            let identity = proxy.admin_json("/identity").await.expect("/identity");
            serials
                .entry(proxy.service())
                .or_default()
                .insert(identity["serial"].as_str().unwrap_or_default().to_owned());
        }
        phases.insert(
            ca_state(mesh).await["rotation"]["phase"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = rotate.await.expect("join").expect("seamctl ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("rotation complete"),
        "seamctl ca rotate: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for phase in ["introduced", "promoted"] {
        assert!(
            phases.contains(phase),
            "never saw phase {phase}: {phases:?}"
        );
    }

    let after = ca_state(mesh).await;
    let roots = after["roots"].as_array().expect("roots");
    assert_eq!(roots.len(), 1, "the old root must be retired: {after}");
    let new_key_id = roots[0]["key_id"].as_str().expect("key id").to_owned();
    assert_ne!(new_key_id, old_key_id, "{after}");
    let on_disk = std::fs::read_to_string(mesh.ca_path()).expect("ca.pem");
    assert_eq!(on_disk.matches("BEGIN CERTIFICATE").count(), 1, "{on_disk}");

    // Every proxy moves to a leaf of the new root at its next renewal.
    for proxy in [a, b] {
        wait::until(
            &format!("{} holds a certificate of the new root", proxy.service()),
            Duration::from_secs(10),
            || async {
                let identity = proxy.admin_json("/identity").await?;
                anyhow::ensure!(
                    identity["issuer_key_id"] == new_key_id.as_str(),
                    "{identity}"
                );
                Ok(())
            },
        )
        .await
        .expect("leaf from the new root");
    }

    // A proxy started now, from the new ca.pem, calls b over a fresh mTLS connection.
    let app_c = EchoServer::start("c").await.expect("app c");
    let c = mesh
        .start_proxy("c", app_c.addr())
        .await
        .expect("c starts from the new ca.pem");
    let reply = client::http1_get(c.outbound(), "b", "/after-rotation", &[])
        .await
        .expect("c → b");
    assert_eq!(reply.status, 200, "{}", reply.text());

    let replies = traffic.stop().await;
    let failures = timed_failures(&replies);
    let sent = replies.len();
    eprintln!("{sent} requests; serials seen {serials:?}; phases {phases:?}");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    assert!(sent >= 100, "only {sent} requests were sent");
    for (service, seen) in &serials {
        assert!(
            seen.len() >= 3,
            "{service} renewed its leaf only {} time(s) in two lifetimes: {seen:?}",
            seen.len() - 1
        );
    }
}
