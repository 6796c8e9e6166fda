//! The mesh's certificate authority: loads the root from the state directory or creates it
//! on first start (key file mode 0600), and signs short-lived workload certificates whose
//! only name is a SPIFFE id. Leaves are signed directly by the root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use seam_proto::SpiffeId;
use time::OffsetDateTime;

/// How long a root created by the control plane is valid.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start this far in the past, so peers with slightly slow clocks accept them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA in {path} is unusable: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "the CA in {dir} is for trust domain {found:?}, not {wanted:?}; use another --state-dir or --trust-domain {found}"
    )]
    TrustDomainMismatch {
        dir: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("the certificate signing request is invalid: {0}")]
    BadRequest(rcgen::Error),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

/// A signed certificate and when it expires.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub der: CertificateDer<'static>,
    pub serial_hex: String,
    pub not_after: SystemTime,
}

pub struct CertificateAuthority {
    trust_domain: String,
    root: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Loads `ca.pem` and `ca.key` from `state_dir`, or creates both when neither exists.
    pub fn load_or_create(state_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let cert_path = state_dir.join("ca.pem");
        let key_path = state_dir.join("ca.key");
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(state_dir, &cert_path, &key_path, trust_domain),
            (false, false) => Self::create(state_dir, &cert_path, &key_path, trust_domain),
            _ => Err(CaError::Invalid {
                path: state_dir.to_owned(),
                reason: "only one of ca.pem and ca.key exists; restore the other or remove both to create a new CA".into(),
            }),
        }
    }

    fn create(
        state_dir: &Path,
        cert_path: &Path,
        key_path: &Path,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io {
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))
            .map_err(io("restrict", state_dir))?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("Seam root CA {trust_domain}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&trust_domain_id(state_dir, trust_domain)?)?];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
        params.not_after = (now + ROOT_LIFETIME).into();
        params.serial_number = Some(random_serial());
        let root = params.self_signed(&key)?;

        // The key is written first and with mode 0600 from the moment it exists.
        let mut key_file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_path)
            .map_err(io("create", key_path))?;
        key_file
            .write_all(key.serialize_pem().as_bytes())
            .map_err(io("write", key_path))?;
        fs::write(cert_path, root.pem()).map_err(io("write", cert_path))?;
        tracing::info!(path = %cert_path.display(), trust_domain, "created the mesh root CA");
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            root: root.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    fn load(
        state_dir: &Path,
        cert_path: &Path,
        key_path: &Path,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        let invalid = |path: &Path, reason: String| CaError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let mode = fs::metadata(key_path)
            .map_err(|source| CaError::Io {
                action: "inspect",
                path: key_path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(invalid(
                key_path,
                format!(
                    "the key is readable by others (mode {:o}); chmod 600 it",
                    mode & 0o777
                ),
            ));
        }
        let root = CertificateDer::from_pem_file(cert_path)
            .map_err(|err| invalid(cert_path, err.to_string()))?;
        let key_pem = fs::read_to_string(key_path).map_err(|source| CaError::Io {
            action: "read",
            path: key_path.to_owned(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|err| invalid(key_path, err.to_string()))?;
        let found = SpiffeId::from_certificate_der(&root)
            .map_err(|err| invalid(cert_path, err.to_string()))?;
        if found.trust_domain() != trust_domain {
            return Err(CaError::TrustDomainMismatch {
                dir: state_dir.to_owned(),
                found: found.trust_domain().to_owned(),
                wanted: trust_domain.to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&root, key)
            .map_err(|err| invalid(cert_path, err.to_string()))?;
        tracing::info!(path = %cert_path.display(), trust_domain, "loaded the mesh root CA");
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            root,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every root proxies should trust.
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        vec![self.root.clone()]
    }

    /// Signs the key in a CSR for `identity`, ignoring whatever names the CSR asks for.
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let request =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CaError::BadRequest)?;
        self.sign(&request.public_key, identity, &[], lifetime)
    }

    /// Makes a key and a certificate for `identity` (and `dns_names`), for the control
    /// plane's own listener.
    pub fn issue_with_key(
        &self,
        identity: &SpiffeId,
        dns_names: &[&str],
        lifetime: Duration,
    ) -> Result<(IssuedCertificate, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let issued = self.sign(&key, identity, dns_names, lifetime)?;
        let key =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| CaError::Invalid {
                path: PathBuf::from("<generated key>"),
                reason: reason.to_owned(),
            })?;
        Ok((issued, key))
    }

    fn sign(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        identity: &SpiffeId,
        dns_names: &[&str],
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name =
            distinguished_name(identity.service_account().unwrap_or(identity.as_str()));
        params.subject_alt_names = std::iter::once(uri_san(identity))
            .chain(
                dns_names
                    .iter()
                    .map(|name| Ok(SanType::DnsName((*name).try_into()?))),
            )
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = OffsetDateTime::from(now - CLOCK_SKEW_ALLOWANCE);
        params.not_after = OffsetDateTime::from(not_after);
        let serial = random_serial();
        let serial_hex = hex(serial.as_ref());
        params.serial_number = Some(serial);
        let cert = params.signed_by(public_key, &self.issuer)?;
        Ok(IssuedCertificate {
            der: cert.der().clone(),
            serial_hex,
            not_after,
        })
    }
}

fn trust_domain_id(state_dir: &Path, trust_domain: &str) -> Result<SpiffeId, CaError> {
    SpiffeId::trust_domain_id(trust_domain).map_err(|err| CaError::Invalid {
        path: state_dir.to_owned(),
        reason: err.to_string(),
    })
}

fn uri_san(id: &SpiffeId) -> Result<SanType, rcgen::Error> {
    Ok(SanType::URI(id.as_str().try_into()?))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Seam");
    name.push(DnType::CommonName, common_name);
    name
}

/// 16 random bytes with the top bit clear, so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_root_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let created = CertificateAuthority::load_or_create(&state, "seam.local").unwrap();
        let mode = fs::metadata(state.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = CertificateAuthority::load_or_create(&state, "seam.local").unwrap();
        assert_eq!(created.trust_bundle(), loaded.trust_bundle());

        let err = CertificateAuthority::load_or_create(&state, "other.local")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("trust domain \"seam.local\""), "{err}");

        fs::set_permissions(state.join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = CertificateAuthority::load_or_create(&state, "seam.local")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("readable by others"), "{err}");
    }

    #[test]
    fn signs_only_the_identity_it_is_told_whatever_the_request_asks() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        asked.subject_alt_names.push(SanType::URI(
            "spiffe://seam.local/ns/default/sa/admin"
                .try_into()
                .unwrap(),
        ));
        let csr = asked.serialize_request(&key).unwrap();
        let identity = SpiffeId::workload("seam.local", "default", "api").unwrap();
        let issued = ca
            .sign_request(csr.der(), &identity, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            SpiffeId::from_certificate_der(&issued.der).unwrap(),
            identity
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        let names = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1);

        let err = ca
            .sign_request(b"garbage", &identity, Duration::from_secs(60))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("certificate signing request is invalid")
        );
    }
}
