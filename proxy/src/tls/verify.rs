//! Verifying a server by SPIFFE id: the chain must lead to one of the current mesh roots
//! and the leaf's URI SAN must be exactly the identity expected for that peer, whatever
//! host name or address was dialed.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme,
};
use seam_proto::SpiffeId;

/// The peer proved a different identity than the one it was expected to have.
#[derive(Debug, thiserror::Error)]
#[error("peer identity mismatch: expected {expected}, the peer presented {presented}")]
pub struct PeerIdentityMismatch {
    pub expected: SpiffeId,
    pub presented: String,
}

#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<ArcSwap<RootCertStore>>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: Arc<ArcSwap<RootCertStore>>,
        expected: SpiffeId,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            roots,
            expected,
            algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots.load(),
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = SpiffeId::from_certificate_der(end_entity).map_err(|err| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
        })?;
        if presented != self.expected {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PeerIdentityMismatch {
                    expected: self.expected.clone(),
                    presented: presented.to_string(),
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
