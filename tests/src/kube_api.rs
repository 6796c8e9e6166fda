//! A stand-in for a Kubernetes API server. No real API server can run on this machine
//! (none is packaged for it), so the end-to-end tests of `seam-control-plane --source
//! kubernetes` talk to this one instead: real HTTPS (hyper 1 and tokio-rustls, with a
//! certificate for `127.0.0.1` from a CA made for the test) and a kubeconfig pointing at
//! it, speaking the small part of the API Seam uses, with objects the test sets.
//!
//! - LIST and WATCH (`?watch=true`: chunked JSON lines, kept open, with the test's
//!   changes pushed as they happen; see `watch`) of any resource, cluster-wide or in a
//!   namespace: Services, Pods, EndpointSlices, HTTPRoutes, Namespaces, ... A list answers
//!   `metadata.resourceVersion`, which kube-rs's watcher then watches from; `limit` is
//!   honoured by answering everything at once, without `continue`.
//! - GET, POST (create), PUT (replace, with resourceVersion conflicts) and DELETE of single
//!   objects (Secrets, ConfigMaps, ...), PATCH recorded and merged (merge-patch and
//!   apply-patch; other patch types are recorded and answered with the object as is).
//! - `POST .../tokenreviews`: the test says which tokens are valid, for which namespace,
//!   ServiceAccount and audiences.
//! - `POST .../events` stored like any object.
//!
//! Every request is recorded (method, path, query, body) for the test to assert on, and
//! one without the kubeconfig's bearer token is refused with 401.

mod certs;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use store::ObjectKey;
use store::{Refusal, Selectors, Store};

use crate::wait;

/// The bearer token the kubeconfig carries.
pub const API_TOKEN: &str = "seam-test-admin-token";
/// How long a watch stays open when the client does not say (`timeoutSeconds`).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

impl RecordedRequest {
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }
}

/// Who a ServiceAccount token stands for.
#[derive(Debug, Clone)]
struct TokenOwner {
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
}

struct Shared {
    store: Arc<Mutex<Store>>,
    /// Bumped at every write; open watches wake on it.
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped to end every open watch (as an API server restart would).
    broken: tokio::sync::watch::Sender<u64>,
    requests: Mutex<Vec<RecordedRequest>>,
    tokens: Mutex<BTreeMap<String, TokenOwner>>,
    /// When set, TokenReviews fail with this status code (an API server in trouble).
    token_review_failure: Mutex<Option<u16>>,
}

/// The running stand-in. Dropping it stops the server.
pub struct KubeApi {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    ca_pem: String,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.shared
            .broken
            .send_modify(|generation| *generation += 1);
    }
}

impl KubeApi {
    /// Starts on `127.0.0.1:0` and writes `dir/kubeconfig`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind("127.0.0.1:0").await?, dir)
    }

    /// Serves on `listener` (bound to one IP, say in a pod's network namespace) and
    /// writes `dir/kubeconfig` for that address.
    pub fn serve(listener: TcpListener, dir: &Path) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let tls = certs::serving_tls(addr.ip())?;
        let kubeconfig = dir.join("kubeconfig");
        certs::write_kubeconfig(&kubeconfig, addr, &tls.ca_pem, API_TOKEN)?;
        let shared = Arc::new(Shared {
            store: Arc::default(),
            changed: tokio::sync::watch::Sender::new(0),
            broken: tokio::sync::watch::Sender::new(0),
            requests: Mutex::default(),
            tokens: Mutex::default(),
            token_review_failure: Mutex::default(),
        });
        let acceptor = TlsAcceptor::from(tls.config);
        let accept_loop = tokio::spawn(accept(listener, acceptor, shared.clone()));
        Ok(Self {
            addr,
            kubeconfig,
            ca_pem: tls.ca_pem,
            shared,
            accept_loop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig for `--kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Creates or replaces an object (its `kind`, `metadata.name` and, for namespaced
    /// kinds, `metadata.namespace` say where); open watches see ADDED or MODIFIED.
    pub fn apply(&self, object: Value) -> anyhow::Result<Value> {
        let key = key_of(&object)?;
        let stored = self.shared.store.lock().put(key, object);
        self.shared.changed.send_modify(|version| *version += 1);
        Ok(stored)
    }

    /// Deletes an object; open watches see DELETED.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> anyhow::Result<()> {
        let key = ObjectKey {
            resource: resource_of(kind)?.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.shared
            .store
            .lock()
            .delete(&key)
            .map_err(|refusal| anyhow::anyhow!(refusal.message))?;
        self.shared.changed.send_modify(|version| *version += 1);
        Ok(())
    }

    /// The stored object, as a client would GET it.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjectKey {
            resource: resource_of(kind).ok()?.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.shared.store.lock().get(&key)
    }

    /// Every stored object of `kind`, across namespaces.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        resource_of(kind).map_or_else(
            |_| Vec::new(),
            |resource| {
                self.shared
                    .store
                    .lock()
                    .list(resource, None, &Selectors::default())
            },
        )
    }

    /// Makes `token` a valid ServiceAccount token of `namespace/service_account` for
    /// `audiences` in TokenReviews.
    pub fn accept_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) {
        self.shared.tokens.lock().insert(
            token.to_owned(),
            TokenOwner {
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            },
        );
    }

    /// Makes every TokenReview fail with `code` (`None`: answer them again).
    pub fn fail_token_reviews(&self, code: Option<u16>) {
        *self.shared.token_review_failure.lock() = code;
    }

    /// Ends every open watch at once, as an API server restart does.
    pub fn break_watches(&self) {
        self.shared
            .broken
            .send_modify(|generation| *generation += 1);
    }

    /// Forgets the change history: a watch resuming from an older version gets 410 Gone
    /// and must list again.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().clone()
    }

    /// Waits until a request `matches` has been received, and returns the first such.
    pub async fn wait_request(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&RecordedRequest) -> bool,
    ) -> anyhow::Result<RecordedRequest> {
        wait::until(what, timeout, || {
            let found = self.requests().into_iter().find(|r| matches(r));
            async move { found.ok_or_else(|| anyhow::anyhow!("not received yet")) }
        })
        .await
    }

    /// Waits until `what` holds of the object (`None`: it is absent).
    pub async fn wait_object<T>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(Option<&Value>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        wait::until(
            &format!("{kind} {namespace}/{name} as expected"),
            timeout,
            || {
                let result = check(self.get(kind, namespace, name).as_ref());
                async move { result }
            },
        )
        .await
    }
}

/// The plural resource of a kind, as its URL names it.
pub fn resource_of(kind: &str) -> anyhow::Result<&'static str> {
    Ok(match kind {
        "Namespace" => "namespaces",
        "Service" => "services",
        "Pod" => "pods",
        "EndpointSlice" => "endpointslices",
        "HTTPRoute" => "httproutes",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Event" => "events",
        "ServiceAccount" => "serviceaccounts",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        other => anyhow::bail!("the stand-in API server does not know kind {other:?}"),
    })
}

/// The kind and apiVersion of a resource's objects.
fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "namespaces" => ("Namespace", "v1"),
        "services" => ("Service", "v1"),
        "pods" => ("Pod", "v1"),
        "endpointslices" => ("EndpointSlice", "discovery.k8s.io/v1"),
        "httproutes" => ("HTTPRoute", "gateway.networking.k8s.io/v1"),
        "secrets" => ("Secret", "v1"),
        "configmaps" => ("ConfigMap", "v1"),
        "events" => ("Event", "v1"),
        "serviceaccounts" => ("ServiceAccount", "v1"),
        "mutatingwebhookconfigurations" => (
            "MutatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
        ),
        "deployments" => ("Deployment", "apps/v1"),
        "replicasets" => ("ReplicaSet", "apps/v1"),
        "tokenreviews" => ("TokenReview", "authentication.k8s.io/v1"),
        _ => ("Unknown", "v1"),
    }
}

fn key_of(object: &Value) -> anyhow::Result<ObjectKey> {
    let kind = object["kind"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the object has no kind: {object}"))?;
    let name = object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the object has no metadata.name: {object}"))?;
    let cluster_scoped = matches!(kind, "Namespace" | "MutatingWebhookConfiguration");
    let namespace = if cluster_scoped {
        String::new()
    } else {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned()
    };
    Ok(ObjectKey {
        resource: resource_of(kind)?.to_owned(),
        namespace,
        name: name.to_owned(),
    })
}

async fn accept(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BoxBody::new(Full::new(Bytes::from(value.to_string()))))
        .expect("a response with a fixed header is valid")
}

fn status_response(refusal: &Refusal) -> Response<Body> {
    json_response(
        refusal.code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": refusal.message,
            "reason": refusal.reason,
            "code": refusal.code,
        }),
    )
}

fn refusal(code: u16, reason: &'static str, message: impl Into<String>) -> Response<Body> {
    status_response(&Refusal {
        code,
        reason,
        message: message.into(),
    })
}

/// What a URL path names: a resource, in a namespace or not, maybe one object.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1/...` or `/apis/GROUP/VERSION/...`, then `[namespaces/NS/]RESOURCE[/NAME[/SUB]]`.
fn parse_path(path: &str) -> Option<Target> {
    let rest = match path.strip_prefix("/api/v1/") {
        Some(rest) => rest,
        None => {
            let after = path.strip_prefix("/apis/")?;
            let mut parts = after.splitn(3, '/');
            let (_group, _version) = (parts.next()?, parts.next()?);
            parts.next()?
        }
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let owned = |s: &str| Some(s.to_owned());
    match parts.as_slice() {
        ["namespaces", namespace, resource, rest @ ..] => Some(Target {
            resource: (*resource).to_owned(),
            namespace: owned(namespace),
            name: rest.first().and_then(|name| owned(name)),
        }),
        ["namespaces", name] => Some(Target {
            resource: "namespaces".into(),
            namespace: None,
            name: owned(name),
        }),
        [resource] => Some(Target {
            resource: (*resource).to_owned(),
            namespace: None,
            name: None,
        }),
        [resource, name, ..] => Some(Target {
            resource: (*resource).to_owned(),
            namespace: None,
            name: owned(name),
        }),
        [] => None,
    }
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parse_query(parts.uri.query()),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).ok(),
    };
    shared.requests.lock().push(recorded.clone());
    let authorized = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {API_TOKEN}"));
    if !authorized {
        return refusal(401, "Unauthorized", "Unauthorized");
    }
    let Some(target) = parse_path(&recorded.path) else {
        return refusal(404, "NotFound", format!("no such path {}", recorded.path));
    };
    if target.resource == "tokenreviews" && recorded.method == Method::POST {
        return token_review(shared, recorded.body.as_ref());
    }
    let response = answer(shared, &recorded, &target);
    if recorded.method != Method::GET {
        shared.changed.send_modify(|version| *version += 1);
    }
    response
}

fn answer(shared: &Arc<Shared>, request: &RecordedRequest, target: &Target) -> Response<Body> {
    let (kind, api_version) = kind_of(&target.resource);
    let key = |name: &str| ObjectKey {
        resource: target.resource.clone(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_owned(),
    };
    let selectors = Selectors::parse(
        request.query.get("labelSelector").map(String::as_str),
        request.query.get("fieldSelector").map(String::as_str),
    );
    let result = match (&request.method, &target.name) {
        (&Method::GET, None) if request.is_watch() => {
            let since = request
                .query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v != 0);
            let timeout = request
                .query
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
            let body = watch::stream(
                watch::WatchRequest {
                    resource: target.resource.clone(),
                    namespace: target.namespace.clone(),
                    selectors,
                    since,
                    send_initial_events: request
                        .query
                        .get("sendInitialEvents")
                        .is_some_and(|v| v == "true"),
                    timeout,
                    kind: kind.to_owned(),
                    api_version: api_version.to_owned(),
                },
                shared.store.clone(),
                shared.changed.subscribe(),
                shared.broken.subscribe(),
            );
            return Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .expect("a response with a fixed header is valid");
        }
        (&Method::GET, None) => {
            let store = shared.store.lock();
            let items = store.list(&target.resource, target.namespace.as_deref(), &selectors);
            Ok(json!({
                "kind": format!("{kind}List"),
                "apiVersion": api_version,
                "metadata": {"resourceVersion": store.version().to_string()},
                "items": items,
            }))
        }
        (&Method::GET, Some(name)) => {
            let key = key(name);
            let store = shared.store.lock();
            store.get(&key).ok_or_else(|| store::not_found(&key))
        }
        (&Method::POST, None) => {
            let Some(mut object) = request.body.clone() else {
                return refusal(400, "BadRequest", "the body is not JSON");
            };
            let name = object["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    // generateName, as Events use.
                    let prefix = object["metadata"]["generateName"].as_str()?;
                    Some(format!("{prefix}{}", shared.store.lock().version() + 1))
                });
            let Some(name) = name else {
                return refusal(422, "Invalid", "metadata.name: Required value");
            };
            object["metadata"]["name"] = json!(name);
            shared.store.lock().create(key(&name), object)
        }
        (&Method::PUT, Some(name)) => match request.body.clone() {
            Some(object) => shared.store.lock().replace(key(name), object),
            None => return refusal(400, "BadRequest", "the body is not JSON"),
        },
        (&Method::PATCH, Some(name)) => {
            let key = key(name);
            let mut store = shared.store.lock();
            match store.get(&key) {
                None => Err(store::not_found(&key)),
                Some(mut object) => {
                    let merges = request.content_type.as_deref().is_some_and(|t| {
                        t.starts_with("application/merge-patch+json")
                            || t.starts_with("application/apply-patch")
                            || t.starts_with("application/strategic-merge-patch+json")
                    });
                    if let (true, Some(patch)) = (merges, &request.body) {
                        merge_patch(&mut object, patch);
                    }
                    // A resourceVersion in the patch guards it (409 when stale), as the
                    // API server does; without one the stored version is kept and matches.
                    store.replace(key, object)
                }
            }
        }
        (&Method::DELETE, Some(name)) => shared.store.lock().delete(&key(name)),
        _ => Err(Refusal {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("{} {} is not served", request.method, request.path),
        }),
    };
    match result {
        Ok(object) if request.method == Method::POST => json_response(201, &object),
        Ok(object) => json_response(200, &object),
        Err(refused) => status_response(&refused),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Answers a TokenReview from the tokens the test accepted.
fn token_review(shared: &Shared, body: Option<&Value>) -> Response<Body> {
    if let Some(code) = *shared.token_review_failure.lock() {
        return refusal(code, "InternalError", "the token review failed (test)");
    }
    let Some(body) = body else {
        return refusal(400, "BadRequest", "the body is not JSON");
    };
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<&str> = body["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let owner = shared.tokens.lock().get(token).cloned();
    let status = match owner {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some(owner) => {
            let granted: Vec<&String> = if asked.is_empty() {
                owner.audiences.iter().collect()
            } else {
                owner
                    .audiences
                    .iter()
                    .filter(|a| asked.contains(&a.as_str()))
                    .collect()
            };
            if granted.is_empty() {
                json!({
                    "authenticated": false,
                    "error": "invalid bearer token, token audiences don't match the requested audiences",
                })
            } else {
                json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:{}:{}", owner.namespace, owner.service_account),
                        "uid": format!("uid-{}-{}", owner.namespace, owner.service_account),
                        "groups": [
                            "system:serviceaccounts",
                            format!("system:serviceaccounts:{}", owner.namespace),
                            "system:authenticated",
                        ],
                    },
                    "audiences": granted,
                })
            }
        }
    };
    let mut review = body.clone();
    review["status"] = status;
    json_response(201, &review)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources_namespaces_and_objects() {
        let target = |resource: &str, namespace: Option<&str>, name: Option<&str>| Target {
            resource: resource.into(),
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
        };
        let cases = [
            ("/api/v1/services", target("services", None, None)),
            ("/api/v1/namespaces", target("namespaces", None, None)),
            (
                "/api/v1/namespaces/shop",
                target("namespaces", None, Some("shop")),
            ),
            (
                "/api/v1/namespaces/seam-system/secrets/seam-ca",
                target("secrets", Some("seam-system"), Some("seam-ca")),
            ),
            (
                "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
                target("endpointslices", Some("shop"), None),
            ),
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/seam-injector",
                target("mutatingwebhookconfigurations", None, Some("seam-injector")),
            ),
            (
                "/apis/authentication.k8s.io/v1/tokenreviews",
                target("tokenreviews", None, None),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_path(path), Some(expected), "{path}");
        }
        assert_eq!(parse_path("/version"), None);
    }

    #[test]
    fn queries_are_percent_decoded() {
        let query = parse_query(Some(
            "watch=true&labelSelector=seam.io%2Finject%3Denabled&fieldSelector=metadata.name%3Dseam-ca",
        ));
        assert_eq!(query["labelSelector"], "seam.io/inject=enabled");
        assert_eq!(query["fieldSelector"], "metadata.name=seam-ca");
    }

    #[test]
    fn merge_patches_replace_add_and_remove() {
        let mut object = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut object, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(object, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
