//! The proxy's workload identity: makes a key pair locally (it never leaves the process),
//! asks the control plane to certify it with the service's join token (or, in Kubernetes,
//! the pod's projected ServiceAccount token, read anew each time), installs the
//! certificate and trust bundle, and renews at ~70% of the lifetime (with jitter), retrying
//! with decorrelated-jitter backoff (another control plane replica first, when there are
//! several) and keeping the current certificate until it expires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use seam_proto::SpiffeId;
use seam_proto::report::error_chain;
use seam_proto::v1::identity_client::IdentityClient;
use seam_proto::v1::{CertifyRequest, certify_request};
use tokio::sync::watch;

use crate::backoff::DecorrelatedBackoff;
use crate::control_plane::ControlPlane;
use crate::tls::{TlsState, WorkloadCertificate};

/// Renew when this share of the certificate's lifetime has passed.
const RENEW_AT: f64 = 0.7;
/// Spread renewals of many proxies by up to this share of the lifetime either way.
const RENEW_JITTER: f64 = 0.05;
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy shows the control plane to be certified.
#[derive(Debug, Clone)]
pub enum Proof {
    JoinToken(String),
    /// A projected ServiceAccount token, read from this file at every certification:
    /// the kubelet rewrites it before it expires.
    ServiceAccountTokenFile(PathBuf),
}

impl Proof {
    /// The proof as sent, reading the token file now.
    fn load(&self) -> anyhow::Result<certify_request::Proof> {
        match self {
            Self::JoinToken(token) => Ok(certify_request::Proof::JoinToken(token.clone())),
            Self::ServiceAccountTokenFile(path) => {
                let token = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "cannot read the ServiceAccount token from {} (--service-account-token-file)",
                        path.display()
                    )
                })?;
                let token = token.trim();
                if token.is_empty() {
                    bail!(
                        "the ServiceAccount token file {} is empty (--service-account-token-file)",
                        path.display()
                    );
                }
                Ok(certify_request::Proof::ServiceAccountToken(
                    token.to_owned(),
                ))
            }
        }
    }
}

pub struct IdentityManager {
    /// What the request names: the ServiceAccount (the service, in file mode).
    pub service: String,
    pub namespace: String,
    pub expected: SpiffeId,
    pub proof: Proof,
    pub control_plane: ControlPlane,
    pub tls: Arc<TlsState>,
    pub provider: Arc<CryptoProvider>,
    /// Set to true once the first certificate is installed.
    pub certified: watch::Sender<bool>,
}

impl IdentityManager {
    /// Certifies, then renews forever.
    pub async fn run(self) {
        let mut backoff =
            DecorrelatedBackoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match self.certify().await {
                Ok(certificate) => {
                    backoff.reset();
                    let wait = renewal_delay(SystemTime::now(), certificate.not_after);
                    tracing::info!(
                        spiffe_id = %certificate.spiffe_id, serial = %certificate.serial_hex,
                        renew_in = ?wait, "installed a workload certificate"
                    );
                    self.certified.send_replace(true);
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    let wait = backoff.next_delay();
                    let still_valid = self
                        .tls
                        .certificate()
                        .is_some_and(|c| c.not_after > SystemTime::now());
                    tracing::error!(
                        error = %error_chain(err.as_ref()), retry_in = ?wait, still_valid,
                        "cannot get a certificate from the control plane"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn certify(&self) -> anyhow::Result<Arc<WorkloadCertificate>> {
        let proof = self.proof.load()?;
        let key = KeyPair::generate().context("cannot generate a key pair")?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, self.service.as_str());
        params.distinguished_name = name;
        let csr = params
            .serialize_request(&key)
            .context("cannot make a certificate signing request")?;

        let (channel, replica) = self.control_plane.connect().await.with_context(|| {
            format!(
                "cannot connect to the control plane at {}",
                self.control_plane.addresses().join(", ")
            )
        })?;
        let request = CertifyRequest {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            csr_der: csr.der().to_vec(),
            proof: Some(proof),
        };
        let answer = tokio::time::timeout(
            CERTIFY_TIMEOUT,
            IdentityClient::new(channel).certify(request),
        )
        .await;
        let response = match answer {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                // A replica that went away mid-call answers `Unavailable`: the retry
                // goes to another one first. A refusal is the same on every replica.
                if status.code() == tonic::Code::Unavailable {
                    self.control_plane.failed(replica);
                }
                bail!(
                    "control plane refused: {} ({:?}; replica {replica})",
                    status.message(),
                    status.code()
                );
            }
            Err(_) => {
                self.control_plane.failed(replica);
                bail!("the control plane {replica} did not answer in time");
            }
        };

        let chain: Vec<CertificateDer<'static>> = response
            .certificate_chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let Some(leaf) = chain.first() else {
            bail!("the control plane sent an empty certificate chain");
        };
        let issued = SpiffeId::from_certificate_der(leaf)?;
        if issued != self.expected {
            bail!(
                "the control plane certified {issued}, but this proxy is {}",
                self.expected
            );
        }
        let Validity {
            not_before,
            not_after,
            serial_hex,
            issuer,
            issuer_key_id,
        } = validity(leaf)?;
        let mut roots = RootCertStore::empty();
        for root in response.trust_bundle_der {
            roots
                .add(CertificateDer::from(root))
                .context("the trust bundle holds an unusable root")?;
        }
        if roots.is_empty() {
            bail!("the control plane sent an empty trust bundle");
        }
        let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(private_key)
            .context("cannot load the generated key")?;
        let certificate = WorkloadCertificate {
            spiffe_id: issued,
            key: Arc::new(CertifiedKey::new(chain, signing_key)),
            serial_hex,
            not_before,
            not_after,
            issuer,
            issuer_key_id,
        };
        self.tls.install(certificate, roots)?;
        self.tls
            .certificate()
            .context("the certificate just installed is missing")
    }
}

/// What `/identity` shows about a certificate besides its SPIFFE id.
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
    serial_hex: String,
    issuer: String,
    issuer_key_id: Option<String>,
}

/// A certificate's validity period, serial number and issuer.
fn validity(der: &[u8]) -> anyhow::Result<Validity> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("unparsable certificate")?;
    let at = |seconds: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let validity = cert.validity();
    let issuer_key_id =
        cert.extensions()
            .iter()
            .find_map(|extension| match extension.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| hex::encode(id.0))
                }
                _ => None,
            });
    Ok(Validity {
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
        serial_hex: hex::encode(cert.raw_serial()),
        issuer: cert.issuer().to_string(),
        issuer_key_id,
    })
}

/// Never renew sooner than this after installing a certificate, whatever its dates say.
const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);

/// How long to wait, from `now`, before renewing a certificate valid until `not_after`.
/// The share is of the lifetime left now, not of `not_after − not_before`: the control
/// plane backdates `not_before` to absorb clock skew, which would otherwise eat into
/// short lifetimes and make a proxy renew in a loop.
fn renewal_delay(now: SystemTime, not_after: SystemTime) -> Duration {
    let remaining = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    let share = RENEW_AT + (rand::random::<f64>() * 2.0 - 1.0) * RENEW_JITTER;
    remaining.mul_f64(share).max(MIN_RENEWAL_DELAY)
}

/// Reads the trust anchors file; the trust domain comes from the first anchor's
/// `spiffe://<trust-domain>` URI SAN.
pub fn load_trust_anchors(path: &std::path::Path) -> anyhow::Result<(RootCertStore, String)> {
    use rustls::pki_types::pem::PemObject;
    let anchors: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read trust anchors from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds malformed PEM", path.display()))?;
    let first = anchors
        .first()
        .with_context(|| format!("{} holds no certificate", path.display()))?;
    let trust_domain = SpiffeId::from_certificate_der(first)
        .with_context(|| {
            format!(
                "the first trust anchor in {} names no trust domain",
                path.display()
            )
        })?
        .trust_domain()
        .to_owned();
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        roots
            .add(anchor)
            .with_context(|| format!("{} holds an unusable certificate", path.display()))?;
    }
    Ok((roots, trust_domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_read_at_each_certification_and_must_hold_a_token() {
        let path = std::env::temp_dir().join(format!("seam-sa-token-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let proof = Proof::ServiceAccountTokenFile(path.clone());
        let err = format!("{:#}", proof.load().unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(
            proof.load().unwrap(),
            certify_request::Proof::ServiceAccountToken("first".into())
        );
        // The kubelet rotated it: the next certification sends the new one.
        std::fs::write(&path, "second").unwrap();
        assert_eq!(
            proof.load().unwrap(),
            certify_request::Proof::ServiceAccountToken("second".into())
        );
        std::fs::write(&path, " \n").unwrap();
        let err = format!("{:#}", proof.load().unwrap_err());
        assert!(err.contains("is empty") && err.contains("token"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn renews_at_about_seventy_percent_of_the_lifetime_left() {
        let now = SystemTime::now();
        for _ in 0..100 {
            let delay = renewal_delay(now, now + Duration::from_secs(20));
            assert!(
                delay >= Duration::from_millis(13_000) && delay <= Duration::from_millis(15_000),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn never_renews_in_a_loop() {
        let now = SystemTime::now();
        let expired = now - Duration::from_secs(1);
        assert_eq!(renewal_delay(now, expired), MIN_RENEWAL_DELAY);
        assert_eq!(
            renewal_delay(now, now + Duration::from_millis(100)),
            MIN_RENEWAL_DELAY
        );
    }
}
