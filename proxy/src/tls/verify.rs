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

/// Why a peer's certificate does not prove the identity expected of it.
#[derive(thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer identity mismatch: expected {expected}, the peer presented {presented}")]
    Mismatch {
        expected: SpiffeId,
        presented: String,
    },
    #[error("peer identity unreadable: {0}")]
    Unreadable(seam_proto::SpiffeIdError),
}

/// rustls shows this error with `{:?}`: make that the readable message.
impl std::fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn invalid(error: PeerIdentityError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
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
        let presented = SpiffeId::from_certificate_der(end_entity)
            .map_err(|err| invalid(PeerIdentityError::Unreadable(err)))?;
        if presented != self.expected {
            return Err(invalid(PeerIdentityError::Mismatch {
                expected: self.expected.clone(),
                presented: presented.to_string(),
            }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    struct Ca {
        cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(trust_domain: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}").try_into().unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, id: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn verifier(ca: &Ca, expected: &str) -> SpiffeServerVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.clone()).unwrap();
        SpiffeServerVerifier::new(
            Arc::new(ArcSwap::from_pointee(roots)),
            expected.parse().unwrap(),
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify(verifier: &SpiffeServerVerifier, cert: &CertificateDer<'_>) -> Result<(), String> {
        let name = ServerName::try_from("any.name.at.all").unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn accepts_the_expected_id_under_the_roots_whatever_the_name_dialed() {
        let ca = ca("seam.local");
        let api = "spiffe://seam.local/ns/default/sa/api";
        assert_eq!(verify(&verifier(&ca, api), &leaf(&ca, api)), Ok(()));
    }

    #[test]
    fn refuses_another_identity_from_the_same_mesh() {
        let ca = ca("seam.local");
        let err = verify(
            &verifier(&ca, "spiffe://seam.local/ns/default/sa/api"),
            &leaf(&ca, "spiffe://seam.local/ns/default/sa/web"),
        )
        .unwrap_err();
        assert!(err.contains("peer identity mismatch"), "{err}");
        assert!(err.contains("sa/web"), "{err}");
    }

    #[test]
    fn refuses_the_right_id_signed_by_a_foreign_ca() {
        let mesh = ca("seam.local");
        let foreign = ca("seam.local");
        let api = "spiffe://seam.local/ns/default/sa/api";
        // Both CAs carry rcgen's default name, so rustls finds the issuer by name and
        // then refuses its signature; a differently named CA is refused as unknown.
        let err = verify(&verifier(&mesh, api), &leaf(&foreign, api)).unwrap_err();
        assert!(
            err.contains("BadSignature") || err.contains("UnknownIssuer"),
            "{err}"
        );
    }
}
