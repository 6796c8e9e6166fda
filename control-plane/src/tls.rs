//! TLS for the control plane's gRPC listener: a serving certificate issued by the mesh CA
//! (SPIFFE id of the control plane, DNS names `localhost` and `seam-control-plane`),
//! renewed in place before it expires and at once when the roots rotate; client certificates are optional at the handshake
//! (a proxy has none before its first `Certify`) and required by the Discovery service.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use seam_proto::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::accept::next_connection;
use crate::ca::{CaError, CertificateAuthority};
use crate::metrics::Metrics;

/// DNS names on the serving certificate, for tools such as grpcurl and plain gRPC clients.
const DNS_NAMES: &[&str] = &["localhost", "seam-control-plane"];
/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane's current serving certificate.
struct ServingCertificate(ArcSwap<CertifiedKey>);

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServingCertificate")
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn issue(ca: &CertificateAuthority, lifetime: Duration) -> Result<CertifiedKey, CaError> {
    let identity = SpiffeId::control_plane(ca.trust_domain()).map_err(|err| CaError::Invalid {
        path: "--trust-domain".into(),
        reason: err.to_string(),
    })?;
    let (issued, key) = ca.issue_with_key(&identity, DNS_NAMES, lifetime)?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|err| CaError::Invalid {
            path: "<serving key>".into(),
            reason: err.to_string(),
        })?;
    Ok(CertifiedKey::new(vec![issued.der], signing_key))
}

/// The listener's TLS config for the current roots: clients are verified against the
/// whole trust bundle, the serving certificate is `certificate`'s.
fn server_config(
    ca: &CertificateAuthority,
    certificate: Arc<ServingCertificate>,
) -> Result<Arc<ServerConfig>, CaError> {
    let mut roots = RootCertStore::empty();
    for root in ca.trust_bundle() {
        roots.add(root).map_err(|err| CaError::Invalid {
            path: "ca.pem".into(),
            reason: err.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|err| CaError::Invalid {
            path: "ca.pem".into(),
            reason: err.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS config, swapped whole when it changes.
pub type SharedServerConfig = Arc<ArcSwap<ServerConfig>>;

/// Builds the listener's TLS config and keeps it fresh for as long as the returned task
/// runs: the certificate is renewed at half its lifetime, and both the certificate and the
/// trusted client roots follow a root rotation at once.
pub fn serving_config(
    ca: Arc<CertificateAuthority>,
    lifetime: Duration,
) -> Result<(SharedServerConfig, tokio::task::JoinHandle<()>), CaError> {
    let certificate = Arc::new(ServingCertificate(ArcSwap::from_pointee(issue(
        &ca, lifetime,
    )?)));
    let config = Arc::new(ArcSwap::new(server_config(&ca, certificate.clone())?));
    let shared = config.clone();
    let mut changes = ca.subscribe();
    let renewal = tokio::spawn(async move {
        loop {
            let roots_changed = tokio::select! {
                () = tokio::time::sleep(lifetime / 2) => false,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
            };
            match issue(&ca, lifetime) {
                Ok(fresh) => certificate.0.store(Arc::new(fresh)),
                Err(err) => {
                    tracing::error!(error = %err, "cannot renew the control plane's serving certificate")
                }
            }
            if roots_changed {
                match server_config(&ca, certificate.clone()) {
                    Ok(fresh) => config.store(fresh),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot apply the new trust bundle to the gRPC listener")
                    }
                }
            }
        }
    });
    Ok((shared, renewal))
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop, handing the
/// finished streams to the gRPC server. A failed handshake is counted
/// (`seam_grpc_handshakes_refused_total`) and logged at debug only: anyone who can reach the
/// port can fail handshakes, and a line each at info would let them flood the log.
pub fn accept_tls(
    listener: TcpListener,
    config: SharedServerConfig,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (streams, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = next_connection(&listener, "grpc").await;
            let acceptor = TlsAcceptor::from(config.load_full());
            let streams = streams.clone();
            let refused = metrics.handshakes_refused.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = streams.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => {
                        refused.inc();
                        tracing::debug!(%peer, error = %err, "TLS handshake refused");
                    }
                    Err(_) => {
                        refused.inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    receiver
}
