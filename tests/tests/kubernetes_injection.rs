//! Injection end to end with the real binaries. The control plane (file source: the webhook
//! works whatever the source) serves its webhook over HTTPS with `--webhook-listen`, and
//! this test calls it as the API server would: TLS verified against the mesh CA for
//! `seam-control-plane.<namespace>.svc.cluster.local`, an AdmissionReview of a
//! Deployment's pod as a real cluster sends it. No Kubernetes API server can run on this
//! machine, so the test stands in for it. `seamctl inject -f -`, `uninject -f -` and
//! `install` run as a user runs them, through stdin and stdout.

use std::process::Stdio;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use seam_control_plane::launch::{self, SeamProcess};
use seam_tests::logs::ChildLog;
use seam_tests::mesh::seam_command;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const REVIEW: &str = include_str!("../../control-plane/src/webhook/testdata/deployment-pod.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_planes_webhook_injects_a_deployments_pod() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "services:\n  web:\n    join_token: \"web-token-for-tests\"\n",
    )?;
    let state = dir.path().join("state");
    let (log, stderr) = ChildLog::create("seam-control-plane", dir.path().join("cp.log"))?;
    let mut command = seam_command("seam-control-plane")?;
    command
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--webhook-listen", "127.0.0.1:0", "--namespace", "mesh-ops"])
        .args(["--proxy-image", "registry.example/seam:9"])
        .args(["--proxy-control-plane", "cp.mesh-ops.example:8443"])
        .arg("--state-dir")
        .arg(&state)
        .arg("--mesh-file")
        .arg(&mesh);
    let mut control_plane = SeamProcess::spawn("seam-control-plane", command, stderr)
        .await
        .with_context(|| log.tail())?;
    control_plane
        .wait_ready(std::time::Duration::from_secs(20))
        .await
        .with_context(|| log.tail())?;

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(state.join("ca.pem"))?;
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(control_plane.addr("webhook")).await?;
    let server_name = "seam-control-plane.mesh-ops.svc.cluster.local";
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name.try_into()?, tcp)
        .await
        .context("the webhook's certificate must verify for its Service's DNS name")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = http::Request::post("/inject")
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REVIEW.as_bytes())))?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(answer["response"]["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD.decode(
        answer["response"]["patch"]
            .as_str()
            .context("a base64 patch")?,
    )?;
    let patch: Vec<Value> = serde_json::from_slice(&patch)?;
    let inits = patch
        .iter()
        .find(|op| op["path"] == "/spec/initContainers")
        .context("the pod had no init containers: the patch adds the list")?;
    assert_eq!(inits["op"], "add");
    let proxy = &inits["value"][1];
    assert_eq!(proxy["name"], "seam-proxy");
    assert_eq!(proxy["image"], "registry.example/seam:9");
    let env: Vec<(&str, &str)> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|var| Some((var["name"].as_str()?, var["value"].as_str()?)))
        .collect();
    assert!(
        env.contains(&("SEAM_CONTROL_PLANE", "cp.mesh-ops.example:8443")),
        "{env:?}"
    );
    assert!(
        env.contains(&("SEAM_SERVICE", "web.$(SEAM_NAMESPACE)")),
        "{env:?}"
    );
    control_plane.terminate()?;
    control_plane.wait().await?;
    Ok(())
}

/// Runs seamctl with `args`, `input` on stdin; returns stdout.
async fn seamctl(args: &[&str], input: &str) -> anyhow::Result<String> {
    let mut child = tokio::process::Command::new(launch::binary_path("seamctl")?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("piped stdin")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    anyhow::ensure!(
        output.status.success(),
        "seamctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn seamctl_injects_and_uninjects_through_a_pipe() -> anyhow::Result<()> {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  \
                      selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      \
                      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        \
                      image: web:1\n";
    let injected = seamctl(
        &[
            "inject",
            "-f",
            "-",
            "--image",
            "registry.example/seam:9",
            "--native-sidecar=false",
        ],
        deployment,
    )
    .await?;
    assert!(
        injected.contains("image: registry.example/seam:9"),
        "{injected}"
    );
    assert!(
        injected.contains("- --wait"),
        "the classic sidecar's postStart: {injected}"
    );
    let again = seamctl(&["inject", "-f", "-"], &injected).await?;
    assert_eq!(again, injected, "injecting twice equals injecting once");
    let removed = seamctl(&["uninject", "-f", "-"], &injected).await?;
    assert_eq!(removed, format!("---\n{deployment}"));
    Ok(())
}

#[tokio::test]
async fn seamctl_install_prints_deploy_kubernetes() -> anyhow::Result<()> {
    let printed = seamctl(&["install"], "").await?;
    let deployed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/seam.yaml"),
    )?;
    assert!(
        printed == deployed,
        "deploy/kubernetes/seam.yaml differs from `seamctl install`; regenerate it with \
         `cargo run -p seam-control-plane --bin seamctl -- install > deploy/kubernetes/seam.yaml`"
    );
    Ok(())
}

#[tokio::test]
async fn seamctl_install_runs_the_replicas_asked_for_and_refuses_none() -> anyhow::Result<()> {
    let three = seamctl(&["install", "--replicas", "3"], "").await?;
    assert!(three.contains("\n  replicas: 3\n"), "{three}");
    assert!(three.contains("kind: PodDisruptionBudget"));
    let one = seamctl(&["install", "--replicas", "1"], "").await?;
    assert!(one.contains("\n  replicas: 1\n"), "{one}");
    assert!(
        !one.contains("kind: PodDisruptionBudget"),
        "a budget of one blocks drains"
    );
    let refused = seamctl(&["install", "--replicas", "0"], "")
        .await
        .expect_err("zero replicas refused")
        .to_string();
    assert!(refused.contains("--replicas"), "{refused}");
    Ok(())
}
