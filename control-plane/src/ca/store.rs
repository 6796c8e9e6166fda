//! The CA's files in the state directory, written so a crash at any point leaves a state
//! the next start understands:
//!
//! - `ca.pem`: every root the mesh trusts (the trust bundle proxies are given), the
//!   signing root first;
//! - `ca.key`: the signing root's key, mode 0600;
//! - `ca-next.key`: during a rotation's first phase only, the key of the root that was
//!   introduced but does not sign yet, mode 0600.
//!
//! - `ca.lock`: empty; replicas sharing the directory hold an exclusive `flock` on it
//!   while they create the CA, take a rotation step or read the files back, so two
//!   replicas starting at once make one root, and no one reads a half-written change.
//!
//! Which certificate signs is decided by matching keys, not by order, and every file is
//! replaced by writing a temporary file and renaming it over the old one. `CaStore` is
//! the seam between the CA and where its state lives: this directory, or in Kubernetes
//! a Secret holding the same bytes (`kubernetes::ca_secret`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::CaError;

pub const BUNDLE_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca.key";
pub const NEXT_KEY_FILE: &str = "ca-next.key";
pub const LOCK_FILE: &str = "ca.lock";

/// The mode of every file in the state directory.
const PRIVATE: u32 = 0o600;

/// The CA's state as the bytes the state directory's files hold; a Kubernetes Secret
/// holds the same bytes under the same names.
#[derive(Clone, PartialEq, Eq)]
pub struct CaState {
    /// `ca.pem`: every trusted root, PEM.
    pub bundle_pem: String,
    /// `ca.key`: the signing root's key, PEM.
    pub key_pem: String,
    /// `ca-next.key`: the key of an introduced, not yet signing root, PEM.
    pub next_key_pem: Option<String>,
}

/// Key material stays out of logs and panics.
impl std::fmt::Debug for CaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaState")
            .field("bundle_pem", &self.bundle_pem)
            .field("key_pem", &"<redacted>")
            .field(
                "next_key_pem",
                &self.next_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the CA's state is kept: the state directory, or (Kubernetes) a Secret.
pub trait CaStore: Send + Sync {
    /// Keeps `state`, the whole CA after a change. A store may finish in the background,
    /// as long as it ends with the latest state it was given.
    fn save(&self, state: &CaState) -> Result<(), CaError>;
    /// Names the store in errors, e.g. the directory's path.
    fn location(&self) -> PathBuf;
    /// Keeps other replicas sharing the store from changing or reading it until the
    /// guard is dropped; a store no other process writes needs none.
    fn lock(&self) -> Result<StoreLock, CaError> {
        Ok(StoreLock { _locked: None })
    }
    /// The state as the store holds it now, when other replicas may have changed it
    /// (`None`: the store cannot be read back). Call it holding [`CaStore::lock`].
    fn read_back(&self) -> Result<Option<CaState>, CaError> {
        Ok(None)
    }
}

/// Held while the store is being changed or read back; dropping it (closing the locked
/// file) lets others in.
pub struct StoreLock {
    _locked: Option<fs::File>,
}

/// The state directory of `--source file`.
pub struct DirectoryStore {
    pub dir: PathBuf,
}

impl CaStore for DirectoryStore {
    /// The key files first: a crash midway leaves keys that match no certificate in
    /// `ca.pem` yet (refused or recovered at load), never a bundle without its key.
    fn save(&self, state: &CaState) -> Result<(), CaError> {
        write_key(&self.dir, KEY_FILE, &state.key_pem)?;
        match &state.next_key_pem {
            Some(next) => write_key(&self.dir, NEXT_KEY_FILE, next)?,
            None => remove(&self.dir, NEXT_KEY_FILE)?,
        }
        replace(
            &self.dir.join(BUNDLE_FILE),
            state.bundle_pem.as_bytes(),
            PRIVATE,
        )
    }

    fn location(&self) -> PathBuf {
        self.dir.clone()
    }

    /// An exclusive `flock` on `ca.lock`: advisory, released by the kernel when the
    /// process dies, so a replica killed mid-step does not wedge the others.
    fn lock(&self) -> Result<StoreLock, CaError> {
        let path = self.dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE)
            .open(&path)
            .map_err(io("open", &path))?;
        file.lock().map_err(io("lock", &path))?;
        Ok(StoreLock {
            _locked: Some(file),
        })
    }

    fn read_back(&self) -> Result<Option<CaState>, CaError> {
        read(&self.dir).map(Some)
    }
}

/// What a `CaState` holds, parsed.
pub struct Stored {
    pub bundle: Vec<CertificateDer<'static>>,
    pub signing_key: KeyPair,
    /// The key of an introduced, not yet signing root.
    pub next_key: Option<KeyPair>,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

fn invalid(path: &Path, reason: String) -> CaError {
    CaError::Invalid {
        path: path.to_owned(),
        reason,
    }
}

/// Whether `state_dir` holds a CA (both files), none, or half of one (an error).
pub fn exists(state_dir: &Path) -> Result<bool, CaError> {
    match (
        state_dir.join(BUNDLE_FILE).exists(),
        state_dir.join(KEY_FILE).exists(),
    ) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        _ => Err(invalid(
            state_dir,
            "only one of ca.pem and ca.key exists; restore the other or remove both to create a new CA".into(),
        )),
    }
}

/// Creates the state directory, private to its owner.
pub fn create_dir(state_dir: &Path) -> Result<(), CaError> {
    fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))
        .map_err(io("restrict", state_dir))
}

pub fn read(state_dir: &Path) -> Result<CaState, CaError> {
    let bundle_path = state_dir.join(BUNDLE_FILE);
    let bundle_pem = fs::read_to_string(&bundle_path).map_err(io("read", &bundle_path))?;
    let key_pem = read_key(&state_dir.join(KEY_FILE))?;
    let next_path = state_dir.join(NEXT_KEY_FILE);
    let next_key_pem = if next_path.exists() {
        Some(read_key(&next_path)?)
    } else {
        None
    };
    Ok(CaState {
        bundle_pem,
        key_pem,
        next_key_pem,
    })
}

/// Parses a state kept at `location` (errors name its files there).
pub fn parse(state: &CaState, location: &Path) -> Result<Stored, CaError> {
    let bundle_path = location.join(BUNDLE_FILE);
    let bundle: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(state.bundle_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| invalid(&bundle_path, err.to_string()))?;
    if bundle.is_empty() {
        return Err(invalid(&bundle_path, "holds no certificate".into()));
    }
    let key = |pem: &str, name: &str| {
        KeyPair::from_pem(pem).map_err(|err| invalid(&location.join(name), err.to_string()))
    };
    Ok(Stored {
        bundle,
        signing_key: key(&state.key_pem, KEY_FILE)?,
        next_key: state
            .next_key_pem
            .as_deref()
            .map(|pem| key(pem, NEXT_KEY_FILE))
            .transpose()?,
    })
}

/// Reads a key file, refusing one that others may read.
fn read_key(path: &Path) -> Result<String, CaError> {
    let mode = fs::metadata(path)
        .map_err(io("inspect", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(invalid(
            path,
            format!(
                "the key is readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            ),
        ));
    }
    fs::read_to_string(path).map_err(io("read", path))
}

/// The index in `bundle` of the certificate whose public key is `key`'s.
pub fn find_certificate(bundle: &[CertificateDer<'_>], key: &KeyPair) -> Option<usize> {
    let wanted = key.subject_public_key_info();
    bundle.iter().position(|cert| {
        x509_parser::parse_x509_certificate(cert)
            .is_ok_and(|(_, parsed)| parsed.public_key().raw == wanted.as_slice())
    })
}

/// Replaces `path` with `bundle`, readable by all: certificates only, for proxies that
/// must not see the state directory (`--publish-trust-bundle`).
pub fn write_public_bundle(path: &Path, bundle: &[CertificateDer<'_>]) -> Result<(), CaError> {
    replace(path, bundle_pem(bundle).as_bytes(), 0o644)
}

/// Replaces the key file `name` with `key_pem`; the file is mode 0600 from its first byte.
fn write_key(state_dir: &Path, name: &str, key_pem: &str) -> Result<(), CaError> {
    replace(&state_dir.join(name), key_pem.as_bytes(), PRIVATE)
}

pub fn bundle_pem(bundle: &[CertificateDer<'_>]) -> String {
    bundle.iter().map(|cert| pem_of(cert)).collect()
}

fn remove(state_dir: &Path, name: &str) -> Result<(), CaError> {
    let path = state_dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io("remove", &path)(err)),
    }
}

fn pem_of(cert: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", cert.as_ref()))
}

/// Writes `contents` to a new file of `mode` (whatever the umask) beside `path` and
/// renames it over `path`. The temporary name is random: replicas sharing the directory
/// (in containers, often all pid 1) may publish the same file at the same moment.
fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let temporary: PathBuf = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io("create", &temporary))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of", &temporary))?;
    file.write_all(contents).map_err(io("write", &temporary))?;
    file.sync_all().map_err(io("sync", &temporary))?;
    fs::rename(&temporary, path).map_err(|err| {
        let _ = fs::remove_file(&temporary);
        io("rename into place", path)(err)
    })
}
