//! Certificates for the peers (HAProxy, nginx) from the same mesh CA that signs Seam's
//! proxies: the control plane creates the CA in its state directory, and the bench signs
//! ECDSA P-256 leaves with it, each carrying the SPIFFE id of its hop and a DNS name the
//! peers' own name checks can use. So every contender speaks TLS 1.3 with the same kind
//! of key, the same chain length and client certificates between its hops.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The DNS name hop 2's peer certificate carries (hop 1 verifies it).
pub const HOP2_DNS_NAME: &str = "hop2.bench.seam.local";

/// PEM files of one leaf.
#[derive(Clone, Debug)]
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file (HAProxy's `crt`).
    pub combined: PathBuf,
}

/// The mesh CA, loaded from the control plane's state directory.
pub struct MeshCa {
    ca_pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl MeshCa {
    /// Loads `ca.pem` and `ca.key` as the control plane wrote them.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let ca_pem = state_dir.join("ca.pem");
        let key_path = state_dir.join("ca.key");
        let root = CertificateDer::from_pem_file(&ca_pem)
            .with_context(|| format!("cannot read {}", ca_pem.display()))?;
        let key_text = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_text)
            .with_context(|| format!("{} holds no usable key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_der(&root, key)
            .with_context(|| format!("{} is not a usable CA", ca_pem.display()))?;
        Ok(Self { ca_pem, issuer })
    }

    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// Makes a P-256 key and a certificate for `spiffe_id` (and `dns_name`), valid for a
    /// day, for both client and server use, and writes them into `dir` as `name.*`.
    pub fn issue(
        &self,
        dir: &Path,
        name: &str,
        spiffe_id: &str,
        dns_name: &str,
    ) -> anyhow::Result<LeafFiles> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.subject_alt_names = vec![
            SanType::URI(spiffe_id.try_into()?),
            SanType::DnsName(dns_name.try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + Duration::from_secs(24 * 3600)).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = LeafFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            combined: dir.join(format!("{name}.pem")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        std::fs::write(
            &files.combined,
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )?;
        Ok(files)
    }
}
