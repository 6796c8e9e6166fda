//! The Kubernetes source end to end, but for the API server: kube's mock-service pattern
//! (tower-test) stands in for one, since no Kubernetes API server can run on this
//! machine. The fake answers the watchers' LIST requests with the objects it holds and
//! their WATCH requests with the changes the test makes, as real JSON; a discovery client
//! with a workload certificate of namespace `shop` subscribes over a real TLS gRPC stream
//! to the control plane's discovery service, and sees each change.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use kube::client::Body;
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use seam_proto::SpiffeId;
use seam_proto::v1::discovery_client::DiscoveryClient;
use seam_proto::v1::discovery_server::DiscoveryServer;
use seam_proto::v1::{ServiceUpdate, Subscribe, WatchRequest, service_update, watch_request};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tower_test::mock::{self, SendResponse};

use super::ClusterSource;
use crate::ca::CertificateAuthority;
use crate::discovery::DiscoveryService;
use crate::metrics::Metrics;
use crate::registry::ProxyRegistry;
use crate::source::ModelSource;
use crate::tls;

/// How long any one expected change may take (backoff after a watch error included).
const PATIENCE: Duration = Duration::from_secs(30);

/// The collections the source watches, by the path their requests use.
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PODS: &str = "/api/v1/pods";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";

type Objects = BTreeMap<&'static str, BTreeMap<String, Value>>;

/// The fake API server's objects and the watches waiting for changes.
#[derive(Default)]
struct Cluster {
    objects: Objects,
    version: u64,
    watches: BTreeMap<&'static str, SendResponse<Response<Body>>>,
    /// Answers for the next LISTs of a collection, before the objects (e.g. a 500).
    failures: BTreeMap<&'static str, Vec<u16>>,
}

struct FakeApi {
    cluster: Arc<Mutex<Cluster>>,
    parked: Arc<Notify>,
}

fn collection(path: &str) -> Option<&'static str> {
    [SERVICES, SLICES, PODS, ROUTES]
        .into_iter()
        .find(|collection| path == *collection)
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

impl FakeApi {
    /// A client whose requests the fake answers, until the client is dropped.
    fn start(cluster: Arc<Mutex<Cluster>>) -> (kube::Client, Self) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let parked = Arc::new(Notify::new());
        let api = Self {
            cluster: cluster.clone(),
            parked: parked.clone(),
        };
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                let Some(collection) = collection(&path) else {
                    respond.send_response(json_response(404, &status(404, "NotFound", &path)));
                    continue;
                };
                if collection == ROUTES {
                    // The Gateway API CRDs are not installed in this cluster.
                    let message = "the server could not find the requested resource";
                    respond.send_response(json_response(404, &status(404, "NotFound", message)));
                    continue;
                }
                let mut cluster = cluster.lock();
                if query.contains("watch=true") {
                    cluster.watches.insert(collection, respond);
                    parked.notify_waiters();
                    continue;
                }
                if let Some(code) = cluster.failures.get_mut(collection).and_then(Vec::pop) {
                    let message = "etcdserver: request timed out";
                    respond.send_response(json_response(
                        code,
                        &status(code, "InternalError", message),
                    ));
                    continue;
                }
                let items: Vec<Value> = cluster
                    .objects
                    .get(collection)
                    .map(|objects| objects.values().cloned().collect())
                    .unwrap_or_default();
                let list = json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "metadata": { "resourceVersion": cluster.version.to_string() },
                    "items": items,
                });
                respond.send_response(json_response(200, &list));
            }
        });
        (kube::Client::new(service, "default"), api)
    }

    /// Waits for the source's watch on `collection`, then answers it with `events`
    /// (`(type, object)`), applying them to the objects first.
    async fn emit(&self, collection: &'static str, events: &[(&str, Value)]) {
        let respond = self.parked_watch(collection).await;
        let mut cluster = self.cluster.lock();
        let mut lines = Vec::new();
        for (kind, object) in events {
            cluster.version += 1;
            let mut object = object.clone();
            object["metadata"]["resourceVersion"] = json!(cluster.version.to_string());
            let key = object["metadata"]["name"].as_str().unwrap().to_owned();
            let objects = cluster.objects.entry(collection).or_default();
            if *kind == "DELETED" {
                objects.remove(&key);
            } else {
                objects.insert(key, object.clone());
            }
            lines.extend(serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap());
            lines.push(b'\n');
        }
        respond.send_response(watch_body(lines));
    }

    /// Ends the source's watch on `collection` with a 410 Gone, as an API server does
    /// when the version watched from is too old: the watcher must list again.
    async fn expire(&self, collection: &'static str) {
        let respond = self.parked_watch(collection).await;
        let gone = json!({
            "type": "ERROR",
            "object": status(410, "Expired", "too old resource version: 1 (42)"),
        });
        let mut body = serde_json::to_vec(&gone).unwrap();
        body.push(b'\n');
        respond.send_response(watch_body(body));
    }

    async fn parked_watch(&self, collection: &'static str) -> SendResponse<Response<Body>> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.parked.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(respond) = self.cluster.lock().watches.remove(collection) {
                    return respond;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the source never watched {collection}"))
    }
}

fn watch_body(lines: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(lines))
        .unwrap()
}

fn service(name: &str, cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "shop", "uid": format!("uid-{name}") },
        "spec": {
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
            "ports": [ { "name": "http", "port": 80, "protocol": "TCP", "targetPort": "http" } ]
        }
    })
}

/// The slice of `web`, with `(ip, pod, ready)` endpoints.
fn slice(endpoints: &[(&str, &str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, ready)| {
            json!({
                "addresses": [ip],
                "conditions": { "ready": ready, "serving": ready, "terminating": false },
                "targetRef": { "kind": "Pod", "name": pod, "namespace": "shop" }
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc12", "namespace": "shop",
            "labels": { "kubernetes.io/service-name": "web" }
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [ { "name": "http", "port": 8080, "protocol": "TCP" } ]
    })
}

fn pod(name: &str, account: &str, sidecar: bool) -> Value {
    let mut init = Vec::new();
    if sidecar {
        init.push(json!({ "name": "seam-proxy", "image": "seam:dev", "restartPolicy": "Always" }));
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": {
            "serviceAccountName": account,
            "initContainers": init,
            "containers": [ { "name": "app", "image": "web:1" } ]
        }
    })
}

/// Connects to the control plane over TLS, as `seam-control-plane` (its certificate's
/// DNS name), with the proxy's client certificate.
#[derive(Clone)]
struct TlsConnect {
    address: SocketAddr,
    connector: TlsConnector,
}

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.address).await?;
            let name = ServerName::try_from("seam-control-plane")
                .expect("a DNS name")
                .to_owned();
            Ok(TokioIo::new(this.connector.connect(name, tcp).await?))
        })
    }
}

/// A discovery stream as a proxy of namespace `shop` opens it, over TLS with its
/// workload certificate.
struct Subscriber {
    updates: tonic::Streaming<ServiceUpdate>,
    _requests: mpsc::Sender<WatchRequest>,
}

impl Subscriber {
    async fn open(ca: &CertificateAuthority, address: SocketAddr, authority: &str) -> Self {
        let identity = SpiffeId::workload("seam.local", "shop", "client").unwrap();
        let (issued, key) = ca
            .issue_with_key(&identity, &[], Duration::from_secs(3600))
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for root in ca.trust_bundle() {
            roots.add(root).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![issued.der], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connect = TlsConnect {
            address,
            connector: TlsConnector::from(Arc::new(config)),
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_with_connector(connect)
            .await
            .expect("the discovery service is reachable over TLS");
        let (requests, receiver) = mpsc::channel(8);
        let subscribe = watch_request::Kind::Subscribe(Subscribe {
            authority: authority.to_owned(),
        });
        requests
            .send(WatchRequest {
                kind: Some(subscribe),
            })
            .await
            .unwrap();
        let updates = DiscoveryClient::new(channel)
            .watch(ReceiverStream::new(receiver))
            .await
            .expect("the discovery stream opens")
            .into_inner();
        Self {
            updates,
            _requests: requests,
        }
    }

    /// Reads updates until one shows `expected`: the endpoints (address, and identity or
    /// `plain`), or `None` for "no such service". Returns that update's version.
    async fn until(&mut self, expected: Option<&[(&str, &str)]>) -> u64 {
        let expected: Option<Vec<(String, String)>> = expected.map(|endpoints| {
            endpoints
                .iter()
                .map(|(address, identity)| ((*address).to_owned(), (*identity).to_owned()))
                .collect()
        });
        let mut seen = Vec::new();
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(update) = self.updates.message().await.expect("the stream stays up") {
                let got = match update.state {
                    Some(service_update::State::Service(service)) => Some(
                        service
                            .endpoints
                            .iter()
                            .map(|endpoint| {
                                let identity = if endpoint.plaintext {
                                    "plain".to_owned()
                                } else {
                                    endpoint.identity.clone()
                                };
                                (endpoint.address.clone(), identity)
                            })
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                };
                if got == expected {
                    return update.version;
                }
                seen.push(got);
            }
            panic!("the discovery stream ended");
        })
        .await;
        found.unwrap_or_else(|_| panic!("never saw {expected:?}; saw {seen:?}"))
    }
}

/// The cluster at start: `web` with one ready, meshed pod.
fn starting_cluster() -> Cluster {
    let mut cluster = Cluster {
        version: 100,
        ..Cluster::default()
    };
    for (collection, name, object) in [
        (SERVICES, "web", service("web", "10.96.0.10")),
        (SLICES, "web-abc12", slice(&[("10.0.0.1", "web-1", true)])),
        (PODS, "web-1", pod("web-1", "web", true)),
    ] {
        cluster
            .objects
            .entry(collection)
            .or_default()
            .insert(name.to_owned(), object);
    }
    cluster
}

#[tokio::test]
async fn a_proxy_sees_every_change_of_the_cluster_through_the_watchers() {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let metrics = Arc::new(Metrics::new());

    // The first LIST of EndpointSlices fails (a 500): the watcher retries after a
    // backoff, and nothing is published until it has listed them.
    let mut cluster = starting_cluster();
    cluster.failures.insert(SLICES, vec![500]);
    let cluster = Arc::new(Mutex::new(cluster));
    let (client, api) = FakeApi::start(cluster.clone());
    let source = ClusterSource::new("seam.local", "cluster.local", metrics.clone());
    let _watching = AbortOnDropHandle::new(source.start(client, None));

    // The control plane's discovery service over TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tls_config, _renewal) =
        tls::serving_config(ca.clone(), Duration::from_secs(3600)).unwrap();
    let discovery = DiscoveryService::new(
        source.subscribe(),
        Arc::new(ProxyRegistry::default()),
        metrics.clone(),
        CancellationToken::new(),
    );
    let incoming = ReceiverStream::new(tls::accept_tls(listener, tls_config, metrics));
    let _server = AbortOnDropHandle::new(tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(discovery))
            .serve_with_incoming(incoming),
    ));

    // `web:80` from a proxy of namespace shop: the Service's port 80 goes to the pods'
    // named port http, 8080.
    let mut proxy = Subscriber::open(&ca, address, "web:80").await;
    let web = "spiffe://seam.local/ns/shop/sa/web";
    let first = proxy.until(Some(&[("10.0.0.1:8080", web)])).await;
    assert!(source.problems().is_empty(), "{:?}", source.problems());

    // Added: a second pod, without a sidecar (so plaintext), and its slice entry.
    api.emit(PODS, &[("ADDED", pod("web-2", "web", false))])
        .await;
    let two = slice(&[("10.0.0.1", "web-1", true), ("10.0.0.2", "web-2", true)]);
    api.emit(SLICES, &[("MODIFIED", two)]).await;
    let added = proxy
        .until(Some(&[("10.0.0.1:8080", web), ("10.0.0.2:8080", "plain")]))
        .await;
    assert!(added > first);

    // Updated: the first pod is no longer ready.
    let one = slice(&[("10.0.0.1", "web-1", false), ("10.0.0.2", "web-2", true)]);
    api.emit(SLICES, &[("MODIFIED", one)]).await;
    proxy.until(Some(&[("10.0.0.2:8080", "plain")])).await;

    // Deleted: the Service goes, and its name with it.
    api.emit(SERVICES, &[("DELETED", service("web", "10.96.0.10"))])
        .await;
    proxy.until(None).await;

    // A watch error: the Services watch expires (410 Gone) while web comes back
    // unannounced; the watcher lists again, and the proxy sees web again.
    cluster
        .lock()
        .objects
        .entry(SERVICES)
        .or_default()
        .insert("web".into(), service("web", "10.96.0.10"));
    api.expire(SERVICES).await;
    proxy.until(Some(&[("10.0.0.2:8080", "plain")])).await;
}

#[tokio::test]
async fn a_bad_policy_is_a_problem_and_the_service_keeps_serving() {
    let cluster = Arc::new(Mutex::new(starting_cluster()));
    let (client, api) = FakeApi::start(cluster);
    let source = ClusterSource::new("seam.local", "cluster.local", Arc::new(Metrics::new()));
    let _watching = AbortOnDropHandle::new(source.start(client, None));
    let mut model = source.subscribe();
    tokio::time::timeout(PATIENCE, model.wait_for(|model| model.version > 0))
        .await
        .expect("the cluster is read")
        .unwrap();

    assert!(ModelSource::Cluster(source.clone()).is_ready());

    let mut bad = service("web", "10.96.0.10");
    bad["metadata"]["annotations"] =
        json!({ "seam.io/policy": "timeout: 3s\nretries: {attempts: lots}\n" });
    api.emit(SERVICES, &[("MODIFIED", bad)]).await;
    // The model does not change (the policy in force is the default still): wait for
    // the problem itself.
    let mut problems = source.watch_problems();
    let problems =
        tokio::time::timeout(PATIENCE, problems.wait_for(|problems| !problems.is_empty()))
            .await
            .expect("the bad policy is reported")
            .unwrap()
            .clone();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].namespace.as_str(), problems[0].name.as_str()),
        ("shop", "web")
    );
    assert!(problems[0].bad_policy);
    assert!(
        problems[0].message.contains("retries.attempts"),
        "{}",
        problems[0].message
    );
    let current = source.current();
    let web = &current.services()["web.shop"];
    assert_eq!(web.endpoints.len(), 1);
    assert_eq!(web.policy, crate::model::Policy::default());
}

#[test]
fn the_source_is_not_ready_before_the_cluster_is_read() {
    let source = ClusterSource::new("seam.local", "cluster.local", Arc::new(Metrics::new()));
    let source = ModelSource::Cluster(source);
    assert!(!source.is_ready());
    assert_eq!(source.current().version, 0);
}
