//! Endpoints without a Seam proxy (in Kubernetes, a pod with no sidecar): the control
//! plane publishes them with `plaintext` set and no identity, and a caller's proxy sends
//! them plain HTTP/1.1, HTTP/2 with prior knowledge, and raw TCP for opaque streams, counts
//! them `tls="false"`, and lists them in its `/callers` for `seamctl verify`. An endpoint
//! marked plaintext that still names an identity is refused with the reason (a NACK).
//!
//! A mesh file cannot say "plaintext", so the caller's proxy talks to a small in-test
//! control plane front: `Identity` is relayed to the real control plane (which checks the
//! join token and signs), and `Discovery` answers each subscription from a table this test
//! sets. The front serves TLS with a leaf the mesh CA signed for the control plane's SPIFFE
//! id, so the proxy checks it as it checks the real one. Everything else is real: the
//! proxy binary, the apps it reaches, the sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use seam_proto::SpiffeId;
use seam_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use seam_proto::v1::identity_server::{Identity, IdentityServer};
use seam_proto::v1::{
    self, CertifyRequest, CertifyResponse, Nack, ServiceUpdate, Subscribe, WatchRequest,
    service_update, watch_request,
};
use seam_tests::client::{h2c_get, http1_get};
use seam_tests::mesh::metric_value;
use seam_tests::mesh_ca::{LeafName, MeshCa};
use seam_tests::proxy::ProxyOptions;
use seam_tests::streams::{StreamApp, talk_lines};
use seam_tests::{EchoServer, TestMesh, certify, wait};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(15);

/// Relays Certify to the real control plane.
struct IdentityRelay {
    control_plane: SocketAddr,
    ca_path: PathBuf,
}

#[tonic::async_trait]
impl Identity for IdentityRelay {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let mut client = certify::identity_client(self.control_plane, &self.ca_path)
            .await
            .map_err(|err| Status::unavailable(format!("{err:#}")))?;
        client.certify(request.into_inner()).await
    }
}

/// Answers every subscription from a fixed table (version 1; unknown: not found) and
/// keeps the NACKs the proxy sends back.
struct DiscoveryTable {
    services: BTreeMap<String, v1::Service>,
    nacks: Arc<Mutex<Vec<Nack>>>,
}

#[tonic::async_trait]
impl Discovery for DiscoveryTable {
    type WatchStream = ReceiverStream<Result<ServiceUpdate, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut incoming = request.into_inner();
        let (updates, stream) = mpsc::channel(16);
        let services = self.services.clone();
        let nacks = self.nacks.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                match message.kind {
                    Some(watch_request::Kind::Subscribe(Subscribe { authority })) => {
                        let state = match services.get(&authority) {
                            Some(service) => service_update::State::Service(service.clone()),
                            None => service_update::State::NotFound(v1::NotFound {}),
                        };
                        let update = ServiceUpdate {
                            authority,
                            version: 1,
                            state: Some(state),
                        };
                        if updates.send(Ok(update)).await.is_err() {
                            return;
                        }
                    }
                    Some(watch_request::Kind::Nack(nack)) => nacks.lock().push(nack),
                    _ => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Starts the front on `127.0.0.1:0`, serving TLS as the control plane's identity.
async fn start_front(
    mesh: &TestMesh,
    services: BTreeMap<String, v1::Service>,
    nacks: Arc<Mutex<Vec<Nack>>>,
) -> anyhow::Result<SocketAddr> {
    seam_tests::tls::install_crypto_provider();
    let state_dir = mesh.ca_path().parent().expect("state dir").to_owned();
    let control_plane_id = SpiffeId::control_plane("seam.local")?;
    let leaf = MeshCa::load(&state_dir)?.fresh_leaf(LeafName::Spiffe(control_plane_id.as_str()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(leaf.chain, leaf.key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (accepted, incoming) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let _ = accepted.send(acceptor.accept(tcp).await).await;
            });
        }
    });
    let identity = IdentityRelay {
        control_plane: mesh.grpc_addr(),
        ca_path: mesh.ca_path(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(identity))
            .add_service(DiscoveryServer::new(DiscoveryTable { services, nacks }))
            .serve_with_incoming(ReceiverStream::new(incoming)),
    );
    Ok(addr)
}

/// A service whose one endpoint is `address` with `identity`, marked `plaintext` or not.
fn service(name: &str, address: SocketAddr, identity: &str, plaintext: bool) -> v1::Service {
    v1::Service {
        name: name.into(),
        endpoints: vec![v1::Endpoint {
            address: address.to_string(),
            identity: identity.into(),
            plaintext,
        }],
        ..v1::Service::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_endpoint_is_reached_over_http1_http2_and_tcp_without_tls() {
    let mesh = TestMesh::start(&["web"]).await.expect("mesh");
    let app = EchoServer::start("web").await.expect("web app");
    // The plain upstreams: no proxy in front of them.
    let legacy = EchoServer::start("legacy").await.expect("legacy app");
    let db = StreamApp::echo(TcpListener::bind("127.0.0.1:0").await.expect("bind")).expect("db");
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let services = BTreeMap::from([
        (
            "web".to_owned(),
            v1::Service {
                name: "web".into(),
                ..v1::Service::default()
            },
        ),
        (
            "legacy".to_owned(),
            service("legacy", legacy.addr(), "", true),
        ),
        ("db".to_owned(), service("db", db.addr(), "", true)),
        (
            "mislabelled".to_owned(),
            service(
                "mislabelled",
                legacy.addr(),
                "spiffe://seam.local/ns/default/sa/legacy",
                true,
            ),
        ),
    ]);
    let front = start_front(&mesh, services, nacks.clone())
        .await
        .expect("control plane front");
    // Every setting through the environment, so the flag below overrides the kit's
    // control plane address with the front's.
    let web = mesh
        .start_proxy_with(
            ProxyOptions::new("web", app.addr())
                .settings_via_env()
                .args(&[
                    "--control-plane",
                    &front.to_string(),
                    "--tcp-upstream",
                    "127.0.0.1:0=db",
                    "--access-log",
                    "json",
                ]),
        )
        .await
        .expect("web's proxy");

    let reply = http1_get(web.outbound(), "legacy", "/one", &[])
        .await
        .expect("HTTP/1.1 to legacy");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json().expect("echo JSON");
    assert_eq!(seen["name"], "legacy");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["path"], "/one");
    // The caller's identity travels only in mTLS; a plain upstream gets none.
    assert_eq!(seen["client_id"], serde_json::Value::Null);

    let reply = h2c_get(web.outbound(), "legacy", "/two", &[])
        .await
        .expect("HTTP/2 to legacy");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json().expect("echo JSON");
    assert_eq!(seen["version"], "HTTP/2.0", "HTTP/2 with prior knowledge");
    assert_eq!(seen["path"], "/two");

    let tcp = TcpStream::connect(web.tcp_upstream("db"))
        .await
        .expect("connect");
    let (heard, last) = talk_lines(tcp, false, &["select 1"])
        .await
        .expect("opaque TCP to db");
    assert_eq!(heard, ["select 1"]);
    assert_eq!(last, "bye after 1");
    assert_eq!(
        db.connections(),
        1,
        "a raw TCP connection, no TLS in between"
    );

    let metrics = web.metrics().await.expect("metrics");
    let plain = metric_value(
        &metrics,
        "seam_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "legacy"),
            ("status", "200"),
            ("tls", "false"),
        ],
    );
    assert_eq!(plain, Some(2.0), "{metrics}");
    let streams = metric_value(
        &metrics,
        "seam_opaque_streams_total",
        &[
            ("direction", "outbound"),
            ("service", "db"),
            ("peer", "plaintext"),
        ],
    );
    assert_eq!(streams, Some(1.0), "{metrics}");

    let logged = wait::until("two access log lines", WAIT, || async {
        let lines: Vec<serde_json::Value> = web
            .stdout_lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        anyhow::ensure!(lines.len() >= 2, "{lines:?}");
        Ok(lines)
    })
    .await
    .expect("access log");
    for line in &logged[..2] {
        assert_eq!(line["upstream"], legacy.addr().to_string(), "{line}");
        assert_eq!(line["peer_identity"], serde_json::Value::Null, "{line}");
        assert_eq!(line["tls"], false, "{line}");
    }

    let callers = web.admin_json("/callers").await.expect("/callers");
    assert_eq!(
        callers["plaintext_callees"],
        serde_json::json!([
            {"service": "db", "requests": 0, "streams": 1},
            {"service": "legacy", "requests": 2, "streams": 0},
        ]),
        "{callers}"
    );

    // Plaintext with an identity is a contradiction: refused, with the reason.
    let outbound = web.outbound();
    let _pending = tokio::spawn(async move { http1_get(outbound, "mislabelled", "/", &[]).await });
    let nack = wait::until("the proxy refuses the mislabelled endpoint", WAIT, || {
        let nacks = nacks.clone();
        async move {
            let nacks = nacks.lock();
            let nack = nacks
                .first()
                .ok_or_else(|| anyhow::anyhow!("no NACK yet"))?;
            Ok(nack.clone())
        }
    })
    .await
    .expect("a NACK");
    assert_eq!(nack.authority, "mislabelled");
    assert!(
        nack.reason.contains(&legacy.addr().to_string())
            && nack
                .reason
                .contains("plaintext endpoint must have no identity"),
        "{}",
        nack.reason
    );
}
