//! The mesh's certificate authority: loads its roots from the state directory (or, in
//! Kubernetes, a Secret: see `store::CaStore`) or creates one on first start (key files
//! mode 0600), and signs short-lived workload certificates
//! whose only name is a SPIFFE id, directly with the signing root. The trust bundle may
//! hold several roots: a rotation introduces a new root (trusted, not signing), promotes
//! it (signing, the old one still trusted) and retires the old one; `rotation` decides
//! when each step is safe, this module only performs them.
//!
//! Replicas sharing a state directory share the CA: the first to start creates it under
//! the store's lock, each step is taken under that lock on the state read back (so a
//! step another replica already took is not taken twice), and `follow` re-reads the
//! store every few seconds so every replica signs with the current root.

pub mod follow;
pub(crate) mod store;

use store::DirectoryStore;
pub use store::{CaState, CaStore};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
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
        "the CA in {dir} is for trust domain {found:?}, not {wanted:?}; use another --state-dir (or --ca-secret) or --trust-domain {found}"
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
    #[error("a root rotation is already in progress (phase {0:?})")]
    RotationInProgress(RotationPhase),
    #[error("cannot {0} a root now: the rotation is in phase {1:?}")]
    NoRotationStep(&'static str, RotationPhase),
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
    /// Where the state is kept; every change is saved there before it takes effect.
    store: Box<dyn CaStore>,
    roots: ArcSwap<Roots>,
    /// Bumped whenever the trust bundle or the signing root changes.
    changes: watch::Sender<u64>,
    /// Serialises rotation steps and pick-ups within this process (each reads, writes
    /// files, then swaps); the store's lock does the same across replicas.
    rotating: Mutex<()>,
}

/// The roots in force: which one signs, which the mesh trusts, and where a rotation is.
struct Roots {
    issuer: Issuer<'static, KeyPair>,
    /// Every trusted root, the signing one first.
    bundle: Vec<CertificateDer<'static>>,
    /// An introduced root that does not sign yet, with its key.
    next: Option<(CertificateDer<'static>, KeyPair)>,
}

impl Roots {
    fn state(&self) -> CaState {
        CaState {
            bundle_pem: store::bundle_pem(&self.bundle),
            key_pem: self.issuer.key().serialize_pem(),
            next_key_pem: self.next.as_ref().map(|(_, key)| key.serialize_pem()),
        }
    }
}

/// Where a root rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    /// One root, trusted and signing.
    Idle,
    /// A new root is trusted too; the old one still signs.
    Introduced,
    /// The new root signs; the old one is still trusted, until its leaves have expired.
    Promoted,
}

impl CertificateAuthority {
    /// Loads the CA from `state_dir`, or creates it when the directory holds none.
    pub fn load_or_create(state_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let store = DirectoryStore {
            dir: state_dir.to_owned(),
        };
        store::create_dir(state_dir)?;
        // Replicas starting at once on an empty directory: the first to get the lock
        // creates the CA, the others find it.
        let locked = store.lock()?;
        if !store::exists(state_dir)? {
            store.save(&Self::new_state(trust_domain)?)?;
            tracing::info!(path = %state_dir.join(store::BUNDLE_FILE).display(), trust_domain, "created the mesh root CA");
        }
        let state = store::read(state_dir)?;
        let ca = Self::from_state(&state, trust_domain, Box::new(store))?;
        drop(locked);
        tracing::info!(path = %state_dir.join(store::BUNDLE_FILE).display(), trust_domain, phase = ?ca.phase(), roots = ca.trust_bundle().len(), "loaded the mesh root CA");
        Ok(ca)
    }

    /// The state of a new CA for `trust_domain`: one root, signing.
    pub fn new_state(trust_domain: &str) -> Result<CaState, CaError> {
        let (cert, key) = new_root(trust_domain)?;
        Ok(CaState {
            bundle_pem: store::bundle_pem(std::slice::from_ref(&cert)),
            key_pem: key.serialize_pem(),
            next_key_pem: None,
        })
    }

    /// The CA that `state` describes, saving its later changes to `store`.
    pub fn from_state(
        state: &CaState,
        trust_domain: &str,
        store: Box<dyn CaStore>,
    ) -> Result<Self, CaError> {
        let (roots, finished_promotion) = roots_of(state, trust_domain, &store.location())?;
        if finished_promotion {
            store.save(&roots.state())?;
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            store,
            roots: ArcSwap::from_pointee(roots),
            changes: watch::Sender::new(0),
            rotating: Mutex::new(()),
        })
    }

    /// Puts in force what the store holds now, when another replica changed it; true if
    /// it did. Errors (a half-restored directory) leave the roots in force as they are.
    pub fn pick_up_stored(&self) -> Result<bool, CaError> {
        let _step = self.rotating.lock();
        let _store = self.store.lock()?;
        self.adopt_stored()
    }

    /// Holding both locks: adopts the stored state if it differs from the one in force.
    fn adopt_stored(&self) -> Result<bool, CaError> {
        let Some(stored) = self.store.read_back()? else {
            return Ok(false);
        };
        let (roots, finished_promotion) =
            roots_of(&stored, &self.trust_domain, &self.store.location())?;
        // Compared as parsed, so a bundle stored in another order is no change.
        if roots.state() == self.state() {
            return Ok(false);
        }
        if finished_promotion {
            self.store.save(&roots.state())?;
        }
        self.roots.store(Arc::new(roots));
        self.changes.send_modify(|generation| *generation += 1);
        tracing::info!(phase = ?self.phase(), roots = self.trust_bundle().len(), "picked up the mesh CA's state as another replica changed it");
        Ok(true)
    }
    /// The CA's state as its store keeps it.
    pub fn state(&self) -> CaState {
        self.roots.load().state()
    }

    /// Where a root rotation stands now.
    pub fn phase(&self) -> RotationPhase {
        let roots = self.roots.load();
        match (&roots.next, roots.bundle.len()) {
            (Some(_), _) => RotationPhase::Introduced,
            (None, 1) => RotationPhase::Idle,
            (None, _) => RotationPhase::Promoted,
        }
    }

    /// Resolves whenever the bundle or the signing root changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Rotation step 1: makes a new root and adds it to the trust bundle; the current root
    /// keeps signing, so proxies learn to trust the new one at their next renewal.
    pub fn introduce_root(&self) -> Result<(), CaError> {
        let _step = self.rotating.lock();
        let _store = self.store.lock()?;
        // Another replica may have taken this step already.
        self.adopt_stored()?;
        if self.phase() != RotationPhase::Idle {
            return Err(CaError::RotationInProgress(self.phase()));
        }
        let current = self.roots.load();
        let (cert, key) = new_root(&self.trust_domain)?;
        let mut bundle = current.bundle.clone();
        bundle.push(cert.clone());
        let issuer = Issuer::from_ca_cert_der(&bundle[0], clone_key(current.issuer.key())?)?;
        self.save_and_publish(Roots {
            issuer,
            bundle,
            next: Some((cert, key)),
        })?;
        tracing::info!("root rotation: introduced a new root; the current root still signs");
        Ok(())
    }

    /// Rotation step 2: the introduced root signs from now on; the old one stays trusted.
    pub fn promote_root(&self) -> Result<(), CaError> {
        let _step = self.rotating.lock();
        let _store = self.store.lock()?;
        self.adopt_stored()?;
        let current = self.roots.load();
        let Some((cert, key)) = &current.next else {
            return Err(CaError::NoRotationStep("promote", self.phase()));
        };
        let mut bundle = vec![cert.clone()];
        bundle.extend(current.bundle.iter().filter(|root| *root != cert).cloned());
        let issuer = Issuer::from_ca_cert_der(cert, clone_key(key)?)?;
        self.save_and_publish(Roots {
            issuer,
            bundle,
            next: None,
        })?;
        tracing::info!("root rotation: the new root signs now; the old root is still trusted");
        Ok(())
    }

    /// Rotation step 3: the old roots leave the trust bundle.
    pub fn retire_old_roots(&self) -> Result<(), CaError> {
        let _step = self.rotating.lock();
        let _store = self.store.lock()?;
        // Another replica may have taken this step already.
        self.adopt_stored()?;
        if self.phase() != RotationPhase::Promoted {
            return Err(CaError::NoRotationStep("retire", self.phase()));
        }
        let current = self.roots.load();
        let bundle = vec![current.bundle[0].clone()];
        let issuer = Issuer::from_ca_cert_der(&bundle[0], clone_key(current.issuer.key())?)?;
        self.save_and_publish(Roots {
            issuer,
            bundle,
            next: None,
        })?;
        tracing::info!("root rotation: retired the old root");
        Ok(())
    }

    /// Saves `roots` to the store, then puts them in force.
    fn save_and_publish(&self, roots: Roots) -> Result<(), CaError> {
        self.store.save(&roots.state())?;
        self.roots.store(Arc::new(roots));
        self.changes.send_modify(|generation| *generation += 1);
        Ok(())
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every root proxies should trust.
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        self.roots.load().bundle.clone()
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
        let cert = params.signed_by(public_key, &self.roots.load().issuer)?;
        Ok(IssuedCertificate {
            der: cert.der().clone(),
            serial_hex,
            not_after,
        })
    }
}

/// The roots `state` describes (stored at `location`), and whether loading it finished a
/// promotion cut short (the state must then be saved again).
fn roots_of(
    state: &CaState,
    trust_domain: &str,
    location: &Path,
) -> Result<(Roots, bool), CaError> {
    let location = location.to_owned();
    let bundle_path = location.join(store::BUNDLE_FILE);
    let invalid = |path: &Path, reason: String| CaError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let stored = store::parse(state, &location)?;
    let mut bundle = stored.bundle;
    for root in &bundle {
        let found = SpiffeId::from_certificate_der(root)
            .map_err(|err| invalid(&bundle_path, err.to_string()))?;
        if found.trust_domain() != trust_domain {
            return Err(CaError::TrustDomainMismatch {
                dir: location.clone(),
                found: found.trust_domain().to_owned(),
                wanted: trust_domain.to_owned(),
            });
        }
    }
    let signing = store::find_certificate(&bundle, &stored.signing_key).ok_or_else(|| {
        invalid(
            &location.join(store::KEY_FILE),
            "matches no certificate in ca.pem".into(),
        )
    })?;
    bundle.swap(0, signing);
    let mut finished_promotion = false;
    let next = match stored.next_key {
        None => None,
        // A promotion that stopped after replacing ca.key: it is done.
        Some(key) if store::find_certificate(&bundle[..1], &key).is_some() => {
            finished_promotion = true;
            None
        }
        Some(key) => {
            let index = store::find_certificate(&bundle, &key).ok_or_else(|| {
                invalid(
                    &location.join(store::NEXT_KEY_FILE),
                    "matches no certificate in ca.pem; remove it to abandon the rotation".into(),
                )
            })?;
            Some((bundle[index].clone(), key))
        }
    };
    let issuer = Issuer::from_ca_cert_der(&bundle[0], stored.signing_key)
        .map_err(|err| invalid(&bundle_path, err.to_string()))?;
    let roots = Roots {
        issuer,
        bundle,
        next,
    };
    Ok((roots, finished_promotion))
}

/// Makes a new self-signed root for `trust_domain`.
fn new_root(trust_domain: &str) -> Result<(CertificateDer<'static>, KeyPair), CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let now = SystemTime::now();
    params.distinguished_name = distinguished_name(&format!(
        "Seam root CA {trust_domain} {}",
        humantime::format_rfc3339_seconds(now)
    ));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![uri_san(&trust_domain_id(trust_domain)?)?];
    params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
    params.not_after = (now + ROOT_LIFETIME).into();
    params.serial_number = Some(random_serial());
    let root = params.self_signed(&key)?;
    Ok((root.der().clone(), key))
}

/// A copy of a key pair (rcgen's `KeyPair` is not `Clone`).
fn clone_key(key: &KeyPair) -> Result<KeyPair, CaError> {
    Ok(KeyPair::try_from(key.serialized_der())?)
}

fn trust_domain_id(trust_domain: &str) -> Result<SpiffeId, CaError> {
    SpiffeId::trust_domain_id(trust_domain).map_err(|err| CaError::Invalid {
        path: PathBuf::from("--trust-domain"),
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn a_promotion_cut_short_after_the_new_key_was_written_is_finished_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        ca.introduce_root().unwrap();
        // The crash: ca.key already holds the new root's key, ca-next.key is still there.
        fs::copy(dir.path().join("ca-next.key"), dir.path().join("ca.key")).unwrap();
        let reloaded = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        assert_eq!(reloaded.phase(), RotationPhase::Promoted);
        assert_eq!(reloaded.trust_bundle().len(), 2);
        assert!(!dir.path().join("ca-next.key").exists());
        let again = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        assert_eq!(again.state(), reloaded.state());
    }
}
