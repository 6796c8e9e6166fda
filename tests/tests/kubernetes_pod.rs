//! A proxy the way an injected pod runs it, against a control plane in `--source
//! kubernetes` mode. No Kubernetes API server can run on this machine (none is packaged
//! for it), so the control plane's kubeconfig points at the kit's stand-in
//! (`seam_tests::kube_api`): real HTTPS, the objects this test sets, a TokenReview that
//! accepts the tokens this test names. Everything else is real: the control plane and the
//! proxy are our binaries, the proxy reads a projected-token file and the trust bundle
//! from the ConfigMap the control plane wrote, as the injector's volumes give them.

use std::path::Path;
use std::time::Duration;

use seam_tests::kube_api::KubeApi;
use seam_tests::proxy::ProxyOptions;
use seam_tests::{EchoServer, TestMesh, TestProxy};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Starts the control plane with `--source kubernetes` against `api` (the mesh file
/// still names the services until the Kubernetes source serves the model).
async fn control_plane(api: &KubeApi, services: &[&str]) -> TestMesh {
    let kubeconfig = api.kubeconfig().display().to_string();
    TestMesh::start_with_args(
        services,
        &["--source", "kubernetes", "--kubeconfig", &kubeconfig],
    )
    .await
    .expect("control plane in kubernetes mode")
}

/// What the kubelet mounts for the sidecar: the trust bundle ConfigMap's `ca.pem` (once
/// the control plane has written it into `namespace`) and the projected token.
async fn pod_volumes(api: &KubeApi, dir: &Path, namespace: &str, token: &str) -> (String, String) {
    let ca_pem = api
        .wait_object("ConfigMap", namespace, "seam-trust-bundle", WAIT, |map| {
            map.and_then(|map| map["data"]["ca.pem"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no trust bundle yet"))
        })
        .await
        .expect("the control plane writes the trust bundle into the namespace");
    let trust = dir.join(format!("{namespace}-ca.pem"));
    std::fs::write(&trust, ca_pem).expect("write the trust bundle");
    let token_file = dir.join(format!("{namespace}-token"));
    std::fs::write(&token_file, token).expect("write the token");
    (
        trust.display().to_string(),
        token_file.display().to_string(),
    )
}

/// Spawns a proxy as the injected sidecar runs: namespace, ServiceAccount and token file
/// from the pod, the trust bundle from the ConfigMap.
async fn sidecar(
    mesh: &TestMesh,
    app: &EchoServer,
    service: &str,
    (namespace, service_account): (&str, &str),
    (trust, token_file): &(String, String),
) -> TestProxy {
    // Every setting through the environment, so these flags override the kit's own.
    mesh.spawn_proxy(
        ProxyOptions::new(service, app.addr())
            .settings_via_env()
            .args(&[
                "--namespace",
                namespace,
                "--service-account",
                service_account,
                "--service-account-token-file",
                token_file,
                "--trust-anchors",
                trust,
            ]),
    )
    .await
    .expect("proxy starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_proves_its_service_account_with_a_projected_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = KubeApi::start(dir.path())
        .await
        .expect("stand-in API server");
    api.apply(namespace("seam-system")).expect("namespace");
    api.apply(namespace("shop")).expect("namespace");
    api.accept_token("token-of-web", "shop", "web", &["seam"]);
    api.accept_token("token-for-another-audience", "shop", "web", &["vault"]);
    let mesh = control_plane(&api, &["web"]).await;

    // The CA lives in a Secret of the control plane's namespace, not on its disk.
    let secret = api
        .wait_object("Secret", "seam-system", "seam-ca", WAIT, |secret| {
            secret
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no CA Secret yet"))
        })
        .await
        .expect("the CA Secret is created on first start");
    assert!(
        secret["data"]
            .as_object()
            .is_some_and(|data| !data.is_empty())
    );

    let app = EchoServer::start("web").await.expect("app");
    let volumes = pod_volumes(&api, dir.path(), "shop", "token-of-web").await;
    let mut web = sidecar(&mesh, &app, "web", ("shop", "web"), &volumes).await;
    web.wait_ready(WAIT)
        .await
        .expect("the sidecar is certified and ready");
    let identity = web.admin_json("/identity").await.expect("/identity");
    assert_eq!(
        identity["spiffe_id"], "spiffe://seam.local/ns/shop/sa/web",
        "{identity}"
    );
    let review = api
        .wait_request("a TokenReview", WAIT, |request| {
            request.path.ends_with("/tokenreviews")
        })
        .await
        .expect("the control plane asked the API server");
    let spec = &review.body.as_ref().expect("a JSON TokenReview")["spec"];
    assert_eq!(spec["token"], "token-of-web");
    assert_eq!(spec["audiences"], json!(["seam"]));

    // A token for another audience is refused: that proxy never becomes ready, and says
    // why in its log.
    let volumes = (
        volumes.0.clone(),
        dir.path().join("wrong-token").display().to_string(),
    );
    std::fs::write(&volumes.1, "token-for-another-audience").expect("write the token");
    let refused = sidecar(&mesh, &app, "web", ("shop", "web"), &volumes).await;
    seam_tests::wait::until("the refusal is logged", WAIT, || async {
        let log = refused.log().tail();
        anyhow::ensure!(log.contains("control plane refused"), "{log}");
        Ok(())
    })
    .await
    .expect("the refused proxy logs why");
    assert_eq!(refused.ready_status().await.expect("/ready"), 503);
}
