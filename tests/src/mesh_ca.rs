//! Leaves signed by a test mesh's *own* CA (its `ca.pem` and `ca.key` from the state
//! directory), with the flaws real clients come with: expired, or naming an identity the
//! mesh never issues. Only tests that attack the proxies use it; the proxies themselves
//! never see the CA key.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rcgen::{CertificateParams, DnType, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::ClientIdentity;

/// The mesh CA of a running test mesh, loaded from its state directory.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
}

/// What name a test leaf carries.
pub enum LeafName<'a> {
    /// A `spiffe://` URI SAN.
    Spiffe(&'a str),
    /// Only a DNS SAN, no SPIFFE id at all.
    Dns(&'a str),
}

impl MeshCa {
    /// Reads `ca.pem` (the first certificate: the signing root) and `ca.key`.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let cert = CertificateDer::from_pem_file(state_dir.join("ca.pem"))
            .context("reading the mesh CA certificate")?;
        let key_pem =
            std::fs::read_to_string(state_dir.join("ca.key")).context("reading the mesh CA key")?;
        let key = KeyPair::from_pem(&key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_der(&cert, key)?,
        })
    }

    /// A client leaf named `name`, valid from `not_before` to `not_after`.
    pub fn leaf(
        &self,
        name: LeafName<'_>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> anyhow::Result<ClientIdentity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "test leaf");
        params.subject_alt_names.push(match name {
            LeafName::Spiffe(id) => SanType::URI(id.try_into()?),
            LeafName::Dns(host) => SanType::DnsName(host.try_into()?),
        });
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientIdentity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A leaf valid for the next hour.
    pub fn fresh_leaf(&self, name: LeafName<'_>) -> anyhow::Result<ClientIdentity> {
        let now = SystemTime::now();
        self.leaf(
            name,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
    }
}
