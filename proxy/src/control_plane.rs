//! The gRPC channel to the control plane: TCP to whatever `--control-plane` names, TLS that
//! accepts only a server proving the control plane's SPIFFE id under the mesh roots, and
//! our workload certificate as client certificate once we have one.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
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
}

impl ControlPlane {
    pub fn new(address: String, trust_domain: &str, tls: Arc<TlsState>) -> anyhow::Result<Self> {
        Ok(Self {
            address,
            identity: SpiffeId::control_plane(trust_domain)?,
            tls,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens a new channel (one TCP+TLS connection, HTTP/2 with keep-alive pings).
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        // The client config is built per channel so it carries the certificate and roots
        // in force now; a renewal is picked up at the next connection.
        let connector = TlsConnector::from(self.tls.client_config(self.identity.clone(), ALPN_H2));
        Endpoint::from_shared(format!("http://{}", self.address))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |uri: Uri| {
                let connector = connector.clone();
                async move {
                    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                    let port = uri.port_u16().unwrap_or(443);
                    let tcp = TcpStream::connect((host, port)).await?;
                    tcp.set_nodelay(true)?;
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
