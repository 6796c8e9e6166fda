//! The simulated proxies: one real discovery stream each (its own TCP + TLS connection
//! with a real mesh certificate, a tonic client), subscribed to a few services and ACKing
//! every update as a proxy does. Each subscription is a [`Slot`] recording the latest
//! generation it was sent and when, which is all the measurement reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use futures_util::StreamExt;
use prost::Message;
use seam_proto::v1::discovery_client::DiscoveryClient;
use seam_proto::v1::{Ack, Hello, Subscribe, WatchRequest, service_update, watch_request};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::mesh::{generation_of, index_of};

/// One subscription of one proxy.
pub struct Slot {
    pub service: usize,
    /// The latest generation received (`u32::MAX`: none yet).
    pub generation: AtomicU32,
    /// When it arrived, in nanoseconds after [`Fleet::epoch`].
    pub arrived_nanos: AtomicU64,
}

/// Every proxy's subscriptions and the traffic they received.
pub struct Fleet {
    pub epoch: Instant,
    /// `proxies` rows of `subscriptions` slots.
    pub slots: Vec<Slot>,
    pub subscriptions: usize,
    pub updates: AtomicU64,
    pub bytes: AtomicU64,
    /// Streams that ended (the control plane ended them, or the connection broke).
    pub ended: AtomicU64,
}

impl Fleet {
    /// The slots of proxy `proxy`: `subscriptions` services spread so that consecutive
    /// proxies cover consecutive services and every service gets subscribers.
    pub fn new(proxies: usize, services: usize, subscriptions: usize) -> Self {
        let subscriptions = subscriptions.min(services);
        let stride = (services / subscriptions).max(1);
        let slots = (0..proxies)
            .flat_map(|proxy| {
                (0..subscriptions).map(move |n| Slot {
                    service: (proxy + n * stride) % services,
                    generation: AtomicU32::new(u32::MAX),
                    arrived_nanos: AtomicU64::new(0),
                })
            })
            .collect();
        Self {
            epoch: Instant::now(),
            slots,
            subscriptions,
            updates: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }

    pub fn proxies(&self) -> usize {
        self.slots.len() / self.subscriptions
    }

    pub fn slots_of(&self, proxy: usize) -> &[Slot] {
        &self.slots[proxy * self.subscriptions..(proxy + 1) * self.subscriptions]
    }

    fn record(&self, proxy: usize, service: usize, generation: u32) {
        let arrived = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for slot in self.slots_of(proxy) {
            if slot.service == service {
                slot.arrived_nanos.store(arrived, Ordering::Relaxed);
                slot.generation.store(generation, Ordering::Release);
            }
        }
    }
}

/// A mesh certificate and key, as tonic takes them.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: Vec<u8>,
    pub identity: Identity,
}

/// Obtains a mesh certificate for service `index` from the control plane's Identity
/// service, with its join token, as a proxy does.
pub async fn credentials(
    grpc: SocketAddr,
    ca_pem_path: &std::path::Path,
    service: &str,
    join_token: &str,
) -> anyhow::Result<Credentials> {
    let mut client = seam_tests::certify::identity_client(grpc, ca_pem_path).await?;
    let (key, response) = seam_tests::certify::certify(&mut client, service, join_token)
        .await
        .with_context(|| format!("Certify for {service} failed"))?;
    let chain: String = response
        .certificate_chain_der
        .iter()
        .map(|der| pem("CERTIFICATE", der))
        .collect();
    Ok(Credentials {
        ca_pem: std::fs::read(ca_pem_path)?,
        identity: Identity::from_pem(chain, key.serialize_pem()),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let base64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Opens every proxy's stream, `concurrency` handshakes at a time, and keeps each one
/// reading (and ACKing) in a task of its own. Returns once every stream is open.
pub async fn connect(
    fleet: &Arc<Fleet>,
    grpc: SocketAddr,
    credentials: &[Credentials],
    concurrency: usize,
) -> anyhow::Result<()> {
    let opened = futures_util::stream::iter(0..fleet.proxies())
        .map(|proxy| {
            let credentials = credentials[proxy % credentials.len()].clone();
            let fleet = fleet.clone();
            async move { open(fleet, proxy, grpc, credentials).await }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

async fn open(
    fleet: Arc<Fleet>,
    proxy: usize,
    grpc: SocketAddr,
    credentials: Credentials,
) -> anyhow::Result<()> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
        .identity(credentials.identity)
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{grpc}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("proxy {proxy} cannot connect to {grpc}"))?;
    let (requests, outgoing) = mpsc::unbounded_channel();
    let send = |kind| {
        let _ = requests.send(WatchRequest { kind: Some(kind) });
    };
    send(watch_request::Kind::Hello(Hello {
        admin_addr: String::new(),
        proxy_version: "seam-bench".into(),
    }));
    for slot in fleet.slots_of(proxy) {
        send(watch_request::Kind::Subscribe(Subscribe {
            authority: super::mesh::service_name(slot.service),
        }));
    }
    let mut updates = DiscoveryClient::new(channel)
        .watch(UnboundedReceiverStream::new(outgoing))
        .await
        .with_context(|| format!("proxy {proxy}: Watch refused"))?
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(update)) = updates.message().await {
            fleet.updates.fetch_add(1, Ordering::Relaxed);
            fleet
                .bytes
                .fetch_add(update.encoded_len() as u64, Ordering::Relaxed);
            let generation = match &update.state {
                Some(service_update::State::Service(service)) => service
                    .endpoints
                    .first()
                    .and_then(|endpoint| generation_of(&endpoint.address)),
                _ => None,
            };
            if let (Some(service), Some(generation)) = (index_of(&update.authority), generation) {
                fleet.record(proxy, service, generation);
            }
            let _ = requests.send(WatchRequest {
                kind: Some(watch_request::Kind::Ack(Ack {
                    authority: update.authority,
                    version: update.version,
                })),
            });
        }
        fleet.ended.fetch_add(1, Ordering::Relaxed);
    });
    Ok(())
}
