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

/// Starts the control plane with `--source kubernetes` against `api` (the kit writes a
/// mesh file naming `services`, which the Kubernetes source ignores).
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
    let mesh = control_plane(&api, &[]).await;

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

/// A Service `name` in `shop`: port 80 to `target_port`, one ready pod at `pod_ip` (with
/// the Seam sidecar or without), as the API server lists Service, EndpointSlice and Pod.
fn workload(
    api: &KubeApi,
    name: &str,
    pod_ip: &str,
    target_port: u16,
    cluster_ip: &str,
    meshed: bool,
) {
    let pod = format!("{name}-7d9f8-x2v4q");
    let sidecar = json!([{"name": "seam-proxy", "image": "seam:dev", "restartPolicy": "Always"}]);
    let objects = [
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "clusterIP": cluster_ip,
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": target_port, "protocol": "TCP"}],
            },
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-abcde"), "namespace": "shop",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [pod_ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"},
            }],
            "ports": [{"name": "http", "port": target_port, "protocol": "TCP"}],
        }),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "shop", "labels": {"app": name}},
            "spec": {
                "serviceAccountName": name,
                "initContainers": if meshed { sidecar } else { json!([]) },
                "containers": [{"name": "app", "image": format!("{name}:1")}],
            },
            "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]},
        }),
    ];
    for object in objects {
        api.apply(object).expect("object");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_without_a_sidecar_is_reached_in_plaintext_by_its_kubernetes_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = KubeApi::start(dir.path())
        .await
        .expect("stand-in API server");
    api.apply(namespace("seam-system")).expect("namespace");
    api.apply(namespace("shop")).expect("namespace");
    api.accept_token("token-of-front", "shop", "front", &["seam"]);
    let legacy = EchoServer::start("legacy").await.expect("legacy app");
    workload(&api, "front", "127.0.0.2", 8080, "10.96.0.10", true);
    workload(
        &api,
        "legacy",
        "127.0.0.1",
        legacy.addr().port(),
        "10.96.0.11",
        false,
    );
    let mesh = control_plane(&api, &[]).await;

    let app = EchoServer::start("front").await.expect("front app");
    let volumes = pod_volumes(&api, dir.path(), "shop", "token-of-front").await;
    let mut front = mesh
        .spawn_proxy(
            ProxyOptions::new("front.shop", app.addr())
                .settings_via_env()
                .args(&[
                    "--namespace",
                    "shop",
                    "--service-account",
                    "front",
                    "--service-account-token-file",
                    &volumes.1,
                    "--trust-anchors",
                    &volumes.0,
                    // As the injector sets it: the pod's IP, which names its Service.
                    "--inbound-policy",
                    "127.0.0.2",
                ]),
        )
        .await
        .expect("front's proxy starts");
    front
        .wait_ready(WAIT)
        .await
        .expect("front's proxy is ready");

    for host in ["legacy", "legacy.shop", "legacy.shop.svc.cluster.local:80"] {
        let reply = seam_tests::client::http1_get(front.outbound(), host, "/", &[])
            .await
            .expect("a request through front's proxy");
        assert_eq!(reply.status, 200, "{host}: {}", reply.text());
        let seen = reply.json().expect("echo JSON");
        assert_eq!(seen["name"], "legacy", "{host}");
        assert_eq!(
            seen["client_id"],
            Value::Null,
            "plaintext carries no identity"
        );
    }
    let reply = seam_tests::client::h2c_get(front.outbound(), "legacy.shop.svc", "/", &[])
        .await
        .expect("HTTP/2 through front's proxy");
    assert_eq!(reply.json().expect("echo JSON")["version"], "HTTP/2.0");

    let callers = front.admin_json("/callers").await.expect("/callers");
    assert_eq!(
        callers["plaintext_callees"][0]["service"], "legacy.shop",
        "{callers}"
    );
    assert_eq!(callers["plaintext_callees"][0]["requests"], 4, "{callers}");
    let output = seam_tests::mesh::seam_command("seamctl")
        .expect("seamctl")
        .args(["verify", "--admin", &mesh.admin_addr().to_string()])
        .output()
        .await
        .expect("seamctl verify runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let edge = text
        .lines()
        .find(|line| line.contains("legacy.shop"))
        .unwrap_or_else(|| panic!("no legacy edge in:\n{text}"));
    assert!(
        edge.contains("spiffe://seam.local/ns/shop/sa/front")
            && edge.contains("PLAINTEXT")
            && edge.contains("(no proxy)"),
        "{text}"
    );
}

/// System test (root, network namespaces): the sidecar with the injector's environment
/// in a pod whose traffic `seam-proxy init` intercepts, calling another pod's Service by
/// its Kubernetes names over mTLS.
#[tokio::test(flavor = "multi_thread")]
async fn pods_run_as_injected_call_each_other_over_mtls_by_kubernetes_names() {
    use seam_tests::kube_pods::{KubePods, PodSpec, workload_objects};
    use seam_tests::meshed_pods::get;

    let mut pods = KubePods::start().await.expect("control-plane pod");
    let front_pod = pods.add_pod("front").expect("front pod");
    let back_pod = pods.add_pod("back").expect("back pod");
    let front_ip = front_pod.ipv4().into();
    let back_ip = back_pod.ipv4().into();
    let back_cluster_ip: std::net::IpAddr = "10.96.0.20".parse().unwrap();
    for objects in [
        workload_objects(
            ("shop", "front", "front-5c6d7-abcde"),
            front_ip,
            8080,
            "10.96.0.10",
            true,
        ),
        workload_objects(
            ("shop", "back", "back-6f7a8-fghij"),
            back_ip,
            8080,
            "10.96.0.20",
            true,
        ),
    ] {
        for object in objects {
            pods.api.apply(object).expect("object");
        }
    }
    pods.api
        .accept_token("token-of-front", "shop", "front", &["seam"]);
    pods.api
        .accept_token("token-of-back", "shop", "back", &["seam"]);
    let hosts = [(
        back_cluster_ip,
        "back.shop.svc.cluster.local back.shop.svc back.shop back",
    )];
    let back = pods
        .start_sidecar(
            back_pod,
            &PodSpec {
                name: "back",
                namespace: "shop",
                service_account: "back",
                service: "back.shop",
                token: "token-of-back",
                hosts: &hosts,
            },
        )
        .await
        .expect("back's sidecar is ready");
    // The app starts once its proxy is ready, as a native sidecar's startup probe holds it.
    let back_app = EchoServer::serve(
        back.pod
            .netns()
            .bind_tcp("0.0.0.0:8080".parse().unwrap())
            .await
            .expect("bind back's app"),
        "back",
    )
    .expect("back's app");
    let front = pods
        .start_sidecar(
            front_pod,
            &PodSpec {
                name: "front",
                namespace: "shop",
                service_account: "front",
                service: "front.shop",
                token: "token-of-front",
                hosts: &hosts,
            },
        )
        .await
        .expect("front's sidecar is ready");

    // The app resolves the name from its /etc/hosts (cluster DNS) and connects to the
    // ClusterIP; the pod's iptables hand the connection to its proxy.
    for host in ["back.shop.svc.cluster.local", "back"] {
        let (status, body) = get(
            front.pod.netns(),
            std::net::SocketAddr::new(back_cluster_ip, 80),
            "/hello",
            Some(host),
        )
        .await
        .unwrap_or_else(|err| panic!("GET http://{host}/hello: {err:#}\n{}", front.log().tail()));
        assert_eq!(status, 200, "{host}: {body}");
        let seen: Value = serde_json::from_str(&body).expect("echo JSON");
        assert_eq!(seen["name"], "back", "{host}");
        assert_eq!(
            seen["client_id"], "spiffe://seam.local/ns/shop/sa/front",
            "{host}: the caller's identity came over mTLS"
        );
    }
    assert_eq!(back_app.requests_seen(), 2);
    let (_, identity) = back.admin_get("/identity").await.expect("/identity");
    let identity: Value = serde_json::from_str(&identity).expect("JSON");
    assert_eq!(identity["spiffe_id"], "spiffe://seam.local/ns/shop/sa/back");
    let (_, callers) = back.admin_get("/callers").await.expect("/callers");
    let callers: Value = serde_json::from_str(&callers).expect("JSON");
    assert_eq!(
        callers["callers"][0]["caller"], "spiffe://seam.local/ns/shop/sa/front",
        "{callers}"
    );
    assert_eq!(callers["callers"][0]["transport"], "mtls", "{callers}");
}
