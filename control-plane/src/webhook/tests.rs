//! The webhook over real HTTPS: the server in-process on 127.0.0.1:0 with the certificate
//! the mesh CA issues it, called as the API server calls it (TLS verified against the CA
//! for `seam-control-plane.seam-system.svc`), with AdmissionReviews in the shapes real
//! clusters send (`testdata/`). No API server can run here, so the test stands in for it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::ca::CertificateAuthority;
use crate::injector::Settings;

const SERVER_NAME: &str = "seam-control-plane.seam-system.svc";

struct Webhook {
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    _state: tempfile::TempDir,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        for task in &self._tasks {
            task.abort();
        }
    }
}

async fn start() -> Webhook {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let names = super::tls::dns_names("seam-system", "cluster.local");
    let (config, renewal) =
        super::tls::serving_config(ca.clone(), names, std::time::Duration::from_secs(3600))
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Arc::new(Settings {
        version: "test".to_owned(),
        ..Settings::default()
    });
    let server = tokio::spawn(super::server::serve(listener, config, settings));
    Webhook {
        addr,
        ca,
        _state: state,
        _tasks: vec![renewal, server],
    }
}

impl Webhook {
    /// POSTs `body` to `path` over TLS (HTTP/1.1, or HTTP/2 when `h2`), verifying the
    /// webhook's certificate as the API server does.
    async fn post(&self, path: &str, body: Vec<u8>, h2: bool) -> (StatusCode, Bytes) {
        let mut roots = rustls::RootCertStore::empty();
        for root in self.ca.trust_bundle() {
            roots.add(root).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
            .await
            .expect("the webhook's certificate verifies against the mesh CA");
        let request = Request::post(path)
            .header("host", SERVER_NAME)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = if h2 {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    /// Sends a review and returns the AdmissionReview answered.
    async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self
            .post(path, serde_json::to_vec(review).unwrap(), false)
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

fn testdata(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/webhook/testdata")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The patch in `answer`, decoded from base64 as the API server does.
fn patch_of(answer: &Value) -> Option<json_patch::Patch> {
    let encoded = answer["response"].get("patch")?;
    assert!(encoded.is_string(), "the patch is base64 text: {encoded}");
    let bytes: k8s_openapi::ByteString = serde_json::from_value(encoded.clone()).unwrap();
    Some(serde_json::from_slice(&bytes.0).unwrap())
}

/// The pod with the answer's patch applied, as the API server would.
fn patched(review: &Value, answer: &Value) -> Value {
    let mut pod = review["request"]["object"].clone();
    if let Some(patch) = patch_of(answer) {
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    pod
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_deployments_pod_is_injected_with_a_json_patch() {
    let webhook = start().await;
    let review = testdata("deployment-pod.json");
    let answer = webhook.review("/inject", &review).await;
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let pod = patched(&review, &answer);
    let typed: Pod = serde_json::from_value(pod.clone()).expect("the patched pod is a Pod");
    assert_eq!(
        container_names(&pod, "initContainers"),
        ["seam-init", "seam-proxy"]
    );
    assert_eq!(container_names(&pod, "containers"), ["web"]);
    let proxy = &typed
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[1];
    let service = proxy
        .env
        .iter()
        .flatten()
        .find(|v| v.name == "SEAM_SERVICE")
        .unwrap();
    // Named for the Deployment, not the ReplicaSet or the pod's generated name.
    assert_eq!(service.value.as_deref(), Some("web.$(SEAM_NAMESPACE)"));
    assert_eq!(pod["metadata"]["annotations"]["seam.io/injected"], "test");
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-12-01T10:00:00Z"
    );
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "kube-api-access-x7k2p",
            "seam-token",
            "seam-trust-bundle",
            "seam-xtables-lock"
        ]
    );
}

#[tokio::test]
async fn an_injected_pod_sent_again_is_allowed_unchanged() {
    // reinvocationPolicy IfNeeded: the API server may call again with our own result.
    let webhook = start().await;
    let mut review = testdata("deployment-pod.json");
    let answer = webhook.review("/inject", &review).await;
    review["request"]["object"] = patched(&review, &answer);
    let again = webhook.review("/inject", &review).await;
    assert_eq!(again["response"]["allowed"], true);
    assert_eq!(again["response"].get("patch"), None, "{again}");
    assert_eq!(again["response"].get("warnings"), None, "{again}");
}

#[tokio::test]
async fn pods_left_alone_are_annotated_and_warned_about() {
    let webhook = start().await;
    for (file, reason) in [
        (
            "host-network-pod.json",
            "hostNetwork pods share the node's network",
        ),
        (
            "opted-out-pod.json",
            "opted out with seam.io/inject: disabled",
        ),
    ] {
        let review = testdata(file);
        let answer = webhook.review("/inject", &review).await;
        assert_eq!(answer["response"]["allowed"], true, "{file}");
        assert_eq!(
            answer["response"]["warnings"],
            serde_json::json!([format!("seam: pod not injected: {reason}")]),
            "{file}"
        );
        let pod = patched(&review, &answer);
        assert_eq!(
            pod["metadata"]["annotations"]["seam.io/inject-skipped"], reason,
            "{file}"
        );
        assert_eq!(
            container_names(&pod, "initContainers"),
            Vec::<String>::new(),
            "{file}"
        );
    }
}

#[tokio::test]
async fn outside_enabled_namespaces_only_annotated_pods_are_injected() {
    let webhook = start().await;
    let mut review = testdata("deployment-pod.json");
    let answer = webhook.review("/inject-annotated", &review).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"].get("patch"), None, "{answer}");
    review["request"]["object"]["metadata"]["annotations"]["seam.io/inject"] = "enabled".into();
    let answer = webhook.review("/inject-annotated", &review).await;
    let pod = patched(&review, &answer);
    assert_eq!(
        container_names(&pod, "initContainers"),
        ["seam-init", "seam-proxy"]
    );
}

#[tokio::test]
async fn a_bad_annotation_refuses_the_pod_with_the_reason() {
    let webhook = start().await;
    let mut review = testdata("deployment-pod.json");
    review["request"]["object"]["metadata"]["annotations"]["seam.io/proxy-memory-limit"] =
        "lots".into();
    let answer = webhook.review("/inject", &review).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["status"]["message"],
        "seam: cannot inject this pod: annotation seam.io/proxy-memory-limit: \"lots\" is not \
         a Kubernetes quantity (such as 100m, 1, 64Mi or 1Gi)"
    );
}

#[tokio::test]
async fn malformed_requests_get_a_400_with_the_reason() {
    let webhook = start().await;
    let (status, body) = webhook.post("/inject", b"{not json".to_vec(), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("not an admission.k8s.io/v1 AdmissionReview of a Pod:"),
        "{body}"
    );

    let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    let (status, body) = webhook.post("/inject", no_request.to_vec(), false).await;
    assert_eq!(
        (status, &body[..]),
        (
            StatusCode::BAD_REQUEST,
            &b"the AdmissionReview has no request\n"[..]
        )
    );

    let mut wrong_type = testdata("deployment-pod.json");
    wrong_type["request"]["object"]["spec"]["containers"] = "web".into();
    let (status, body) = webhook
        .post("/inject", serde_json::to_vec(&wrong_type).unwrap(), false)
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );

    let (status, _) = webhook.post("/mutate", b"{}".to_vec(), false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // And the server still answers after all that.
    let answer = webhook
        .review("/inject", &testdata("deployment-pod.json"))
        .await;
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test]
async fn http2_is_served_too() {
    let webhook = start().await;
    let body = serde_json::to_vec(&testdata("deployment-pod.json")).unwrap();
    let (status, body) = webhook.post("/inject", body, true).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
}
