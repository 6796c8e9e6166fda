//! The proxy's TLS material and the rustls configs built from it. The workload
//! certificate and the trust roots live in [`TlsState`], swapped whole when identity
//! renews; configs read them at each handshake, so a renewal reaches new connections at
//! once and leaves open ones alone.

pub mod refusal;
mod verify;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use seam_proto::SpiffeId;

pub use verify::SpiffeServerVerifier;

/// ALPN ids of the two HTTP versions spoken between proxies.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// The ALPN id of an opaque stream between proxies (any TCP protocol, a `CONNECT` tunnel):
/// the callee's inbound copies its bytes to the app rather than reading HTTP.
pub const ALPN_OPAQUE: &[u8] = b"seam-tcp";

/// The certificate this proxy presents.
#[derive(Debug)]
pub struct WorkloadCertificate {
    pub spiffe_id: SpiffeId,
    pub key: Arc<CertifiedKey>,
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The issuing root's name and key id (authority key identifier, hex), so operators
    /// can tell which root of a rotation a certificate comes from.
    pub issuer: String,
    pub issuer_key_id: Option<String>,
}

/// The current certificate and roots, and the inbound config built from them.
pub struct TlsState {
    provider: Arc<CryptoProvider>,
    certificate: ArcSwapOption<WorkloadCertificate>,
    roots: Arc<ArcSwap<RootCertStore>>,
    inbound: ArcSwapOption<ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("trust roots are unusable: {0}")]
    Roots(String),
}

impl TlsState {
    /// Starts with the trust anchors given on the command line and no certificate.
    pub fn new(provider: Arc<CryptoProvider>, anchors: RootCertStore) -> Arc<Self> {
        Arc::new(Self {
            provider,
            certificate: ArcSwapOption::empty(),
            roots: Arc::new(ArcSwap::from_pointee(anchors)),
            inbound: ArcSwapOption::empty(),
        })
    }

    pub fn certificate(&self) -> Option<Arc<WorkloadCertificate>> {
        self.certificate.load_full()
    }

    /// Swaps in a new certificate and trust bundle.
    pub fn install(
        self: &Arc<Self>,
        certificate: WorkloadCertificate,
        roots: RootCertStore,
    ) -> Result<(), TlsError> {
        let roots = Arc::new(roots);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone())
                .build()
                .map_err(|err| TlsError::Roots(err.to_string()))?;
        let mut inbound = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| TlsError::Roots(err.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(CurrentCertificate(self.clone())));
        inbound.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec(), ALPN_OPAQUE.to_vec()];
        self.roots.store(roots);
        self.certificate.store(Some(Arc::new(certificate)));
        self.inbound.store(Some(Arc::new(inbound)));
        Ok(())
    }

    /// The config for accepting mTLS from other proxies; none until a certificate exists.
    pub fn inbound_config(&self) -> Option<Arc<ServerConfig>> {
        self.inbound.load_full()
    }

    /// A client config that presents our certificate (when we have one) and accepts only a
    /// server proving `expected` under the current roots.
    pub fn client_config(self: &Arc<Self>, expected: SpiffeId, alpn: &[u8]) -> Arc<ClientConfig> {
        let verifier = SpiffeServerVerifier::new(
            self.roots.clone(),
            expected,
            self.provider.signature_verification_algorithms,
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(CurrentCertificate(self.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        // Peers are named by SPIFFE id, not by host name: there is nothing useful to send.
        config.enable_sni = false;
        Arc::new(config)
    }
}

/// Resolves to whatever certificate the proxy holds at handshake time.
struct CurrentCertificate(Arc<TlsState>);

impl std::fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCertificate")
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certificate.load().as_ref().map(|c| c.key.clone())
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.certificate.load().as_ref().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.certificate.load().is_some()
    }
}
