//! A proxy the way an injected pod runs it, against a control plane in `--source
//! kubernetes` mode; the last test takes the pods from `seamctl inject -f -` and runs them
//! in network namespaces as the kubelet would (root). No Kubernetes API server can run on this machine (none is packaged
//! for it), so the control plane's kubeconfig points at the kit's stand-in
//! (`seam_tests::kube_api`): real HTTPS, the objects this test sets, a TokenReview that
//! accepts the tokens this test names. Everything else is real: the control plane and the
//! proxy are our binaries, the proxy reads a projected-token file and the trust bundle
//! from the ConfigMap the control plane wrote, as the injector's volumes give them.

use std::path::Path;

use base64::Engine;
use std::time::Duration;

use seam_tests::kube_api::KubeApi;
use seam_tests::proxy::ProxyOptions;
use seam_tests::{EchoServer, TestMesh, TestProxy};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Starts the control plane with `--source kubernetes` against `api` and `extra` flags
/// (the kit writes a mesh file naming `services`, which the Kubernetes source ignores).
async fn control_plane(api: &KubeApi, services: &[&str], extra: &[&str]) -> TestMesh {
    let kubeconfig = api.kubeconfig().display().to_string();
    let mut args = vec![
        "--source",
        "kubernetes",
        "--kubeconfig",
        &kubeconfig,
        // The webhook's default, 0.0.0.0:8444, is one port for the whole machine.
        "--webhook-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    TestMesh::start_with_args(services, &args)
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
    let webhook = |name: &str| {
        json!({
            "name": name,
            "clientConfig": {"service": {"name": "seam-control-plane", "namespace": "seam-system", "path": "/inject"}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
        })
    };
    api.apply(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "seam-injector"},
        "webhooks": [webhook("namespaces.inject.seam.io"), webhook("pods.inject.seam.io")],
    }))
    .expect("webhook configuration");
    let mesh = control_plane(&api, &[], &[]).await;

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
    // The API server trusts the injector webhook's certificate: every webhook's caBundle
    // is the trust bundle the pods get.
    let ca_pem = std::fs::read_to_string(&volumes.0).expect("trust bundle");
    let expected = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    api.wait_object(
        "MutatingWebhookConfiguration",
        "",
        "seam-injector",
        WAIT,
        |config| {
            let webhooks = config
                .and_then(|c| c["webhooks"].as_array())
                .cloned()
                .unwrap_or_default();
            anyhow::ensure!(
                webhooks.len() == 2
                    && webhooks
                        .iter()
                        .all(|w| w["clientConfig"]["caBundle"] == expected.as_str()),
                "{webhooks:?}"
            );
            Ok(())
        },
    )
    .await
    .expect("the webhooks' caBundle is the trust bundle");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_token_is_retried_and_a_rotated_one_is_read_at_renewal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = KubeApi::start(dir.path())
        .await
        .expect("stand-in API server");
    api.apply(namespace("seam-system")).expect("namespace");
    api.apply(namespace("shop")).expect("namespace");
    api.accept_token("first-token", "shop", "web", &["seam"]);
    api.accept_token("rotated-token", "shop", "web", &["seam"]);
    // Short certificates, so the proxy renews within the test.
    let mesh = control_plane(&api, &[], &["--cert-ttl", "6s"]).await;
    let app = EchoServer::start("web").await.expect("app");
    let (trust, token_file) = pod_volumes(&api, dir.path(), "shop", "").await;
    std::fs::remove_file(&token_file).expect("no token yet");

    // The kubelet has not written the token yet: the proxy says which file it lacks, and
    // keeps trying.
    let web = sidecar(
        &mesh,
        &app,
        "web",
        ("shop", "web"),
        &(trust, token_file.clone()),
    )
    .await;
    seam_tests::wait::until("the missing token is logged", WAIT, || async {
        let log = web.log().tail();
        anyhow::ensure!(
            log.contains("cannot read the ServiceAccount token") && log.contains(&token_file),
            "{log}"
        );
        Ok(())
    })
    .await
    .expect("the proxy names the missing token file");
    std::fs::write(&token_file, "first-token").expect("the kubelet writes the token");
    seam_tests::wait::until("the proxy is ready", WAIT, || async {
        anyhow::ensure!(web.ready_status().await? == 200, "not ready");
        Ok(())
    })
    .await
    .expect("certified once the token is there");

    // The kubelet rotates the token; the next renewal sends the new one.
    std::fs::write(&token_file, "rotated-token").expect("the kubelet rotates the token");
    api.wait_request("a TokenReview of the rotated token", WAIT, |request| {
        request.path.ends_with("/tokenreviews")
            && request
                .body
                .as_ref()
                .is_some_and(|body| body["spec"]["token"] == "rotated-token")
    })
    .await
    .expect("the renewal read the token file again");
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
    let mesh = control_plane(&api, &[], &[]).await;

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

/// The app pod `name` of `app` (ServiceAccount `app`) in `shop`, injected by a real
/// `seamctl inject -f -` child process, with the pod's IP in its status as the API server
/// reports it once the pod runs.
async fn injected_pod(name: &str, app: &str, pod_ip: std::net::IpAddr) -> Value {
    use tokio::io::AsyncWriteExt;

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "labels": {"app": app},
            "annotations": {"seam.io/service": app},
        },
        "spec": {
            "serviceAccountName": app,
            "containers": [{"name": "app", "image": format!("{app}:1"), "ports": [{"containerPort": 8080}]}],
        },
    });
    let mut child = seam_tests::mesh::seam_command("seamctl")
        .expect("seamctl")
        .args(["inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("seamctl inject starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(pod.to_string().as_bytes())
        .await
        .expect("write the pod");
    drop(stdin);
    let output = child.wait_with_output().await.expect("seamctl inject runs");
    let yaml = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "seamctl inject -f -: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut injected: Value = serde_saphyr::from_str(&yaml)
        .unwrap_or_else(|err| panic!("the injected pod is not YAML ({err}):\n{yaml}"));
    injected["status"] = json!({
        "phase": "Running", "podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}],
    });
    injected
}

/// System test (root, network namespaces): pods injected by `seamctl inject -f -` run as
/// the kubelet runs them (`seam-init`, then the `seam-proxy` sidecar with its env and
/// volumes, the app only after the startup probe), one calling the other's Service by its
/// Kubernetes names over mTLS, and a pod nobody injected in plaintext.
#[tokio::test(flavor = "multi_thread")]
async fn pods_run_as_injected_call_each_other_over_mtls_by_kubernetes_names() {
    use seam_tests::kube_pods::{KubePods, PodRun, workload_objects};
    use seam_tests::meshed_pods::get;

    let mut pods = KubePods::start().await.expect("control-plane pod");
    let front_pod = pods.add_pod("front").expect("front pod");
    let back_pod = pods.add_pod("back").expect("back pod");
    // A pod nobody injected: no sidecar, reached in plaintext.
    let legacy_pod = pods.add_pod("legacy").expect("legacy pod");
    let legacy_cluster_ip: std::net::IpAddr = "10.96.0.30".parse().unwrap();
    for object in workload_objects(
        ("shop", "legacy", "legacy-1a2b3-klmno"),
        legacy_pod.ipv4().into(),
        8080,
        "10.96.0.30",
        false,
    ) {
        pods.api.apply(object).expect("object");
    }
    let legacy_app = EchoServer::serve(
        legacy_pod
            .netns()
            .bind_tcp("0.0.0.0:8080".parse().unwrap())
            .await
            .expect("bind legacy's app"),
        "legacy",
    )
    .expect("legacy's app");
    let front_ip = front_pod.ipv4().into();
    let back_ip = back_pod.ipv4().into();
    let back_cluster_ip: std::net::IpAddr = "10.96.0.20".parse().unwrap();
    let front = injected_pod("front-5c6d7-abcde", "front", front_ip).await;
    let back = injected_pod("back-6f7a8-fghij", "back", back_ip).await;
    for (workload, pod) in [
        (
            workload_objects(
                ("shop", "front", "front-5c6d7-abcde"),
                front_ip,
                8080,
                "10.96.0.10",
                true,
            ),
            &front,
        ),
        (
            workload_objects(
                ("shop", "back", "back-6f7a8-fghij"),
                back_ip,
                8080,
                "10.96.0.20",
                true,
            ),
            &back,
        ),
    ] {
        for object in workload {
            pods.api.apply(object).expect("object");
        }
        pods.api.apply(pod.clone()).expect("the injected pod");
    }
    pods.api
        .accept_token("token-of-front", "shop", "front", &["seam"]);
    pods.api
        .accept_token("token-of-back", "shop", "back", &["seam"]);
    let hosts = [
        (
            back_cluster_ip,
            "back.shop.svc.cluster.local back.shop.svc back.shop back",
        ),
        (legacy_cluster_ip, "legacy.shop.svc.cluster.local legacy"),
    ];
    let back = pods
        .start_injected(
            back_pod,
            &PodRun {
                object: &back,
                token: "token-of-back",
                hosts: &hosts,
            },
        )
        .await
        .expect("back's sidecar passes its startup probe");
    // The app starts once its proxy is ready, as the native sidecar's startup probe holds it.
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
        .start_injected(
            front_pod,
            &PodRun {
                object: &front,
                token: "token-of-front",
                hosts: &hosts,
            },
        )
        .await
        .expect("front's sidecar passes its startup probe");

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

    let (status, body) = get(
        front.pod.netns(),
        std::net::SocketAddr::new(legacy_cluster_ip, 80),
        "/old",
        Some("legacy"),
    )
    .await
    .expect("GET http://legacy/old");
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(seen["name"], "legacy");
    assert_eq!(seen["client_id"], Value::Null, "plaintext: no identity");
    assert_eq!(legacy_app.requests_seen(), 1);
    let (_, callers) = front.admin_get("/callers").await.expect("/callers");
    let callers: Value = serde_json::from_str(&callers).expect("JSON");
    assert_eq!(
        callers["plaintext_callees"][0]["service"], "legacy.shop",
        "{callers}"
    );
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
    assert_eq!(
        callers["service"], "back.shop",
        "SEAM_SERVICE from $(SEAM_NAMESPACE)"
    );
}
