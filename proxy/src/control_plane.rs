//! The gRPC channel to the control plane: TCP to whatever `--control-plane` names, TLS that
//! accepts only a server proving the control plane's SPIFFE id under the mesh roots, and
//! our workload certificate as client certificate once we have one.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use seam_proto::SpiffeId;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{ALPN_H2, TlsState};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ControlPlane {
    address: String,
    identity: SpiffeId,
    tls: Arc<TlsState>,
    /// This proxy's own address on its latest connection to the control plane: how the
    /// control plane's side of the network reaches it.
    local_ip: Arc<Mutex<Option<IpAddr>>>,
}

impl ControlPlane {
    pub fn new(address: String, trust_domain: &str, tls: Arc<TlsState>) -> anyhow::Result<Self> {
        Ok(Self {
            address,
            identity: SpiffeId::control_plane(trust_domain)?,
            tls,
            local_ip: Arc::default(),
        })
    }

    /// The proxy's own IP address on its latest connection to the control plane.
    pub fn local_ip(&self) -> Option<IpAddr> {
        *self.local_ip.lock()
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens a new channel (one TCP+TLS connection, HTTP/2 with keep-alive pings).
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        // The client config is built per channel so it carries the certificate and roots
        // in force now; a renewal is picked up at the next connection.
        let connector = TlsConnector::from(self.tls.client_config(self.identity.clone(), ALPN_H2));
        let local_ip = self.local_ip.clone();
        Endpoint::from_shared(format!("http://{}", self.address))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |uri: Uri| {
                let connector = connector.clone();
                let local_ip = local_ip.clone();
                async move {
                    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                    let port = uri.port_u16().unwrap_or(443);
                    let tcp = TcpStream::connect((host, port)).await?;
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
