//! Discovery end to end over a real TLS gRPC stream: a proxy that subscribes and then
//! stops reading is let go once its unread updates have waited the stall bound, while a
//! proxy that reads the same updates stays connected; an update far larger than a
//! stream's codec buffers arrives whole.

use std::sync::Arc;
use std::time::Duration;

use seam_proto::SpiffeId;
use seam_proto::v1::discovery_client::DiscoveryClient;
use seam_proto::v1::discovery_server::DiscoveryServer;
use seam_proto::v1::{ServiceUpdate, Subscribe, WatchRequest, watch_request};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::DiscoveryService;
use crate::ca::CertificateAuthority;
use crate::ca::store::bundle_pem;
use crate::mesh_file;
use crate::metrics::Metrics;
use crate::model::MeshModel;
use crate::registry::ProxyRegistry;
use crate::tls;

/// `api` with 200 endpoints at port `1000 + generation`: each update is several KiB, so a
/// few fill a 64 KiB HTTP/2 window.
fn model(generation: u64) -> Arc<MeshModel> {
    model_with_endpoints(generation, 200)
}

fn model_with_endpoints(generation: u64, count: usize) -> Arc<MeshModel> {
    let endpoints: Vec<String> = (0..count)
        .map(|n| format!("\"10.0.{}.{}:{}\"", n / 250, n % 250 + 1, 1000 + generation))
        .collect();
    let text = format!(
        "services:\n  api:\n    join_token: t\n    endpoints: [{}]\n",
        endpoints.join(", ")
    );
    let mut model = mesh_file::parse(std::path::Path::new("mesh.yaml"), &text, "seam.local")
        .expect("a valid mesh file");
    model.version = generation + 1;
    Arc::new(model)
}

/// Opens a discovery stream subscribed to `api`, with a 64 KiB HTTP/2 window.
async fn subscriber(
    ca: &CertificateAuthority,
    address: std::net::SocketAddr,
) -> (tonic::Streaming<ServiceUpdate>, mpsc::Sender<WatchRequest>) {
    let identity = SpiffeId::workload("seam.local", "default", "web").unwrap();
    let (issued, key) = ca
        .issue_with_key(&identity, &[], Duration::from_secs(3600))
        .unwrap();
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.secret_der().to_vec()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle_pem(&ca.trust_bundle())))
        .identity(Identity::from_pem(bundle_pem(&[issued.der]), key_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("the discovery service is reachable over TLS");
    let (requests, receiver) = mpsc::channel(8);
    let subscribe = watch_request::Kind::Subscribe(Subscribe {
        authority: "api".into(),
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
    (updates, requests)
}

/// Serves `discovery` over real TLS on a port of its own, until the handle is dropped.
async fn serve(
    ca: &Arc<CertificateAuthority>,
    discovery: DiscoveryService,
    metrics: &Arc<Metrics>,
) -> (std::net::SocketAddr, [AbortOnDropHandle<()>; 2]) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tls_config, renewal) = tls::serving_config(ca.clone(), Duration::from_secs(3600)).unwrap();
    let incoming = ReceiverStream::new(tls::accept_tls(listener, tls_config, metrics.clone()));
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(discovery))
            .serve_with_incoming(incoming)
            .await;
    });
    (
        address,
        [
            AbortOnDropHandle::new(server),
            AbortOnDropHandle::new(renewal),
        ],
    )
}

#[tokio::test]
async fn a_service_with_ten_thousand_endpoints_arrives_whole() {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let metrics = Arc::new(Metrics::new());
    let (_models, receiver) = watch::channel(model_with_endpoints(0, 10_000));
    let discovery = DiscoveryService::new(
        receiver,
        Arc::new(ProxyRegistry::default()),
        metrics.clone(),
        CancellationToken::new(),
    );
    let (address, _server) = serve(&ca, discovery, &metrics).await;

    let (mut updates, _requests) = subscriber(&ca, address).await;
    let update = tokio::time::timeout(Duration::from_secs(30), updates.message())
        .await
        .expect("the update arrives")
        .expect("the stream carries it")
        .expect("the stream is open");
    let Some(seam_proto::v1::service_update::State::Service(service)) = update.state else {
        panic!("api resolves to a service: {update:?}");
    };
    assert_eq!(service.endpoints.len(), 10_000);
    assert!(
        service
            .endpoints
            .iter()
            .all(|e| e.address.ends_with(":1000")),
        "every endpoint as the model has it"
    );
}

#[tokio::test]
async fn a_proxy_that_stops_reading_is_let_go_and_one_that_reads_stays() {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(ProxyRegistry::default());
    let (models, receiver) = watch::channel(model(0));
    let bound = Duration::from_millis(500);
    let discovery = DiscoveryService::new(
        receiver,
        registry.clone(),
        metrics.clone(),
        CancellationToken::new(),
    )
    .with_stall_bound(bound);
    let (address, _server) = serve(&ca, discovery, &metrics).await;

    let (mut stalled, _stalled_requests) = subscriber(&ca, address).await;
    let (mut reader, _reader_requests) = subscriber(&ca, address).await;
    let reading = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut read = 0u64;
        while let Ok(Some(_)) = reader.message().await {
            read += 1;
        }
        read
    }));
    assert!(
        stalled.message().await.unwrap().is_some(),
        "the first answer"
    );

    // Changes keep coming (bounded: 400 at most, paced so each is pushed on its own) until
    // the stalled stream's session ends.
    let mut generation = 0;
    while registry.snapshot().len() == 2 && generation < 400 {
        generation += 1;
        models.send_replace(model(generation));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let proxies = registry.snapshot();
    assert_eq!(
        proxies.len(),
        1,
        "the stalled proxy is let go, the reader stays"
    );
    assert!(
        metrics
            .encode()
            .contains("seam_discovery_stalled_streams_total 1")
    );
    assert!(!reading.is_finished(), "the reader's stream is still open");

    // Reading again, the stalled proxy finds what was buffered, then the end of the stream
    // with the reason: it reconnects and subscribes again.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stalled stream ends once read");
    let status = ended.expect("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("unread"), "{status:?}");
}
