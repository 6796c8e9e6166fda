//! The gRPC channel to the control plane: TCP to one of the replicas `--control-plane`
//! names (resolved anew at every attempt, each tried in turn: see `addresses`), TLS that
//! accepts only a server proving the control plane's SPIFFE id under the mesh roots, and
//! our workload certificate as client certificate once we have one. The discovery stream
//! and the certify client share one `ControlPlane`, so both skip a replica that just
//! failed.

mod addresses;

pub use addresses::ControlPlaneAddress;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use seam_proto::SpiffeId;
use seam_proto::report::error_chain;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{ALPN_H2, TlsState};

/// How long one replica gets to accept TCP and finish the TLS handshake before the next
/// is tried (a dead pod's address may swallow packets rather than refuse).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no control plane address resolves: {0}")]
    Unresolved(String),
    #[error("no control plane replica answered: {0}")]
    NoReplica(String),
}

#[derive(Clone)]
pub struct ControlPlane {
    addresses: Arc<[ControlPlaneAddress]>,
    /// Where in the resolved list this proxy starts, chosen at random once, so that the
    /// proxies of a mesh spread over its replicas.
    first_choice: usize,
    identity: SpiffeId,
    tls: Arc<TlsState>,
    /// This proxy's own address on its latest connection to the control plane: how the
    /// control plane's side of the network reaches it.
    local_ip: Arc<Mutex<Option<IpAddr>>>,
    /// The replica that failed last (a refused connection, a stream that broke): the
    /// next attempt tries it last.
    failed_last: Arc<Mutex<Option<SocketAddr>>>,
    /// The replica the discovery stream is on, while it is up.
    discovery_replica: Arc<Mutex<Option<SocketAddr>>>,
}

impl ControlPlane {
    pub fn new(
        addresses: Vec<ControlPlaneAddress>,
        trust_domain: &str,
        tls: Arc<TlsState>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!addresses.is_empty(), "--control-plane names no address");
        Ok(Self {
            addresses: addresses.into(),
            first_choice: rand::random::<u16>().into(),
            identity: SpiffeId::control_plane(trust_domain)?,
            tls,
            local_ip: Arc::default(),
            failed_last: Arc::default(),
            discovery_replica: Arc::default(),
        })
    }

    /// The proxy's own IP address on its latest connection to the control plane.
    pub fn local_ip(&self) -> Option<IpAddr> {
        *self.local_ip.lock()
    }

    /// The addresses as configured, for `/config` and errors.
    pub fn addresses(&self) -> Vec<String> {
        self.addresses.iter().map(ToString::to_string).collect()
    }

    /// The replica the discovery stream is connected to, if it is.
    pub fn discovery_replica(&self) -> Option<SocketAddr> {
        *self.discovery_replica.lock()
    }

    /// Records the replica the discovery stream opened on.
    pub fn discovery_opened(&self, replica: SocketAddr) {
        *self.discovery_replica.lock() = Some(replica);
    }

    /// The discovery stream ended: its replica is tried last next time.
    pub fn discovery_ended(&self) {
        if let Some(replica) = self.discovery_replica.lock().take() {
            self.failed(replica);
        }
    }

    /// `replica` failed: the next attempt tries it last.
    pub fn failed(&self, replica: SocketAddr) {
        *self.failed_last.lock() = Some(replica);
    }

    /// Opens a new channel (one TCP+TLS connection, HTTP/2 with keep-alive pings) to the
    /// first replica that answers, resolving every configured name now; returns it with
    /// the replica's address.
    pub async fn connect(&self) -> Result<(Channel, SocketAddr), ConnectError> {
        let (resolved, unresolved) = addresses::resolve(&self.addresses).await;
        if resolved.is_empty() {
            return Err(ConnectError::Unresolved(unresolved.join("; ")));
        }
        if !unresolved.is_empty() {
            tracing::warn!(
                unresolved = unresolved.join("; "),
                "some control plane addresses do not resolve; trying the others"
            );
        }
        let failed_last = *self.failed_last.lock();
        let mut failures = Vec::new();
        for replica in addresses::attempt_order(&resolved, self.first_choice, failed_last) {
            match self.connect_to(replica).await {
                Ok(channel) => return Ok((channel, replica)),
                Err(err) => {
                    tracing::debug!(%replica, error = %error_chain(&err), "control plane replica did not answer");
                    self.failed(replica);
                    failures.push(format!("{replica}: {}", error_chain(&err)));
                }
            }
        }
        Err(ConnectError::NoReplica(failures.join("; ")))
    }

    async fn connect_to(&self, replica: SocketAddr) -> Result<Channel, tonic::transport::Error> {
        // The client config is built per channel so it carries the certificate and roots
        // in force now; a renewal is picked up at the next connection.
        let connector = TlsConnector::from(self.tls.client_config(self.identity.clone(), ALPN_H2));
        let local_ip = self.local_ip.clone();
        Endpoint::from_shared(format!("http://{replica}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                let local_ip = local_ip.clone();
                async move {
                    let tcp = TcpStream::connect(replica).await?;
                    tcp.set_nodelay(true)?;
                    *local_ip.lock() = Some(tcp.local_addr()?.ip());
                    let name = ServerName::try_from("seam-control-plane")
                        .expect("a valid DNS name")
                        .to_owned();
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
    }
}
