//! `--source kubernetes`: the mesh CA's state lives in a Secret (`--ca-secret`, default
//! `seam-ca`, in the control plane's `--namespace`) instead of the state directory, so a
//! restarted or rescheduled control plane keeps the same root. The Secret holds the same
//! bytes under the same names as the directory (`ca.pem`, `ca.key`, `ca-next.key`). The
//! first start creates it; when two replicas race, the one whose create fails with 409
//! reads and uses the winner's. Rotation steps are written back in the background (read,
//! replace with that resourceVersion, again on conflict), latest state first, and the
//! Secret is read back every few seconds (`read_back`) so that replicas follow each
//! other's rotation steps. No key material is ever logged.

mod read_back;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::ca::store::{BUNDLE_FILE, KEY_FILE, NEXT_KEY_FILE};
use crate::ca::{CaError, CaState, CaStore, CertificateAuthority};

/// How often a conflicting replace is read and tried again before backing off.
const CONFLICT_ATTEMPTS: usize = 5;
/// The backoff between failed writes, doubling up to the maximum.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("cannot read the CA Secret {secret}: {source}")]
    Read {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create the CA Secret {secret}: {source}")]
    Create {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the CA Secret {secret} has no {key:?} in its data (or it is not UTF-8); restore it or delete the Secret to create a new CA"
    )]
    MissingKey { secret: String, key: &'static str },
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// Loads the CA from Secret `namespace/name`, creating the Secret (and the CA) when it
/// does not exist yet. Later changes (root rotation) are written back to it.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<CertificateAuthority, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = format!("{namespace}/{name}");
    let read = |source| CaSecretError::Read {
        secret: secret.clone(),
        source,
    };
    let state = match api.get_opt(name).await.map_err(read)? {
        Some(found) => state_of(&found, &secret)?,
        None => {
            let state = CertificateAuthority::new_state(trust_domain)?;
            match api
                .create(&PostParams::default(), &secret_of(name, &state))
                .await
            {
                Ok(_) => {
                    tracing::info!(%secret, trust_domain, "created the mesh root CA in a Secret");
                    state
                }
                // Another replica created it first: all replicas must share its root.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(%secret, "another replica created the CA Secret first; using its root");
                    state_of(&api.get(name).await.map_err(read)?, &secret)?
                }
                Err(source) => return Err(CaSecretError::Create { secret, source }),
            }
        }
    };
    let progress = Arc::new(Mutex::new(read_back::Progress::default()));
    let (changes, latest) = watch::channel((0, state.clone()));
    let writer = tokio::spawn(write_changes(
        api.clone(),
        name.to_owned(),
        latest,
        progress.clone(),
    ));
    let reader = tokio::spawn(read_back::run(api, name.to_owned(), progress.clone()));
    let store = SecretStore {
        location: PathBuf::from(format!("Secret {secret}")),
        changes,
        progress,
        _writer: AbortOnDropHandle::new(writer),
        _reader: AbortOnDropHandle::new(reader),
    };
    let ca = CertificateAuthority::from_state(&state, trust_domain, Box::new(store))?;
    tracing::info!(%secret, trust_domain, phase = ?ca.phase(), roots = ca.trust_bundle().len(), "loaded the mesh root CA");
    Ok(ca)
}

/// Hands each new state to the task that writes the Secret, and answers `read_back`
/// from the task that reads it.
struct SecretStore {
    location: PathBuf,
    /// The latest state saved, with its generation.
    changes: watch::Sender<(u64, CaState)>,
    progress: Arc<Mutex<read_back::Progress>>,
    _writer: AbortOnDropHandle<()>,
    _reader: AbortOnDropHandle<()>,
}

impl CaStore for SecretStore {
    /// In the background: a step that is in force but not yet written is safe, since
    /// every rotation step only adds trust the previous state already allowed for
    /// (after a restart the previous step is simply taken again).
    fn save(&self, state: &CaState) -> Result<(), CaError> {
        // Under the lock, so generations reach the writer in the order they were taken.
        let mut progress = self.progress.lock();
        let generation = progress.saved();
        self.changes.send_replace((generation, state.clone()));
        Ok(())
    }

    fn location(&self) -> PathBuf {
        self.location.clone()
    }

    /// The state the reader task last read, never older than our own latest save (see
    /// `read_back`'s module for why no lock across replicas is needed); `None` while that
    /// save is not written yet. Never waits for the API server.
    fn read_back(&self) -> Result<Option<CaState>, CaError> {
        Ok(self.progress.lock().latest())
    }
}

/// Writes every new state to the Secret, retrying with backoff until it is written or
/// a newer state replaces it.
async fn write_changes(
    api: Api<Secret>,
    name: String,
    mut latest: watch::Receiver<(u64, CaState)>,
    progress: Arc<Mutex<read_back::Progress>>,
) {
    while latest.changed().await.is_ok() {
        let mut retry_in = RETRY_FIRST;
        loop {
            let (generation, state) = latest.borrow_and_update().clone();
            match replace(&api, &name, &state).await {
                Ok(()) => {
                    progress.lock().written(generation);
                    tracing::info!(secret = name, "saved the mesh CA's new state to its Secret");
                    break;
                }
                Err(err) => {
                    tracing::warn!(secret = name, error = %err, retry_in = ?retry_in, "cannot save the mesh CA's new state to its Secret");
                    tokio::select! {
                        () = tokio::time::sleep(retry_in) => {}
                        changed = latest.changed() => if changed.is_err() { return },
                    }
                    retry_in = (retry_in * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Reads the Secret and replaces its data with `state`, under the resourceVersion read;
/// reads again when someone else changed it in between, and creates it again when it
/// was deleted.
async fn replace(api: &Api<Secret>, name: &str, state: &CaState) -> Result<(), kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Someone deleted it: the CA in force is the one to keep.
        let Some(mut secret) = api.get_opt(name).await? else {
            return api
                .create(&PostParams::default(), &secret_of(name, state))
                .await
                .map(|_| ());
        };
        secret.data = Some(data_of(state));
        secret.string_data = None;
        match api.replace(name, &PostParams::default(), &secret).await {
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_ATTEMPTS => {}
            other => return other.map(|_| ()),
        }
    }
}

fn secret_of(name: &str, state: &CaState) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "seam".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data_of(state)),
        ..Secret::default()
    }
}

fn data_of(state: &CaState) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        (
            BUNDLE_FILE.to_owned(),
            ByteString(state.bundle_pem.clone().into_bytes()),
        ),
        (
            KEY_FILE.to_owned(),
            ByteString(state.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some(next) = &state.next_key_pem {
        data.insert(
            NEXT_KEY_FILE.to_owned(),
            ByteString(next.clone().into_bytes()),
        );
    }
    data
}

fn state_of(found: &Secret, secret: &str) -> Result<CaState, CaSecretError> {
    let data = found.data.as_ref();
    let text = |key: &'static str| {
        data.and_then(|data| data.get(key))
            .map(|bytes| String::from_utf8(bytes.0.clone()))
            .transpose()
            .map_err(|_| CaSecretError::MissingKey {
                secret: secret.to_owned(),
                key,
            })
    };
    let required = |key| {
        text(key)?.ok_or_else(|| CaSecretError::MissingKey {
            secret: secret.to_owned(),
            key,
        })
    };
    Ok(CaState {
        bundle_pem: required(BUNDLE_FILE)?,
        key_pem: required(KEY_FILE)?,
        next_key_pem: text(NEXT_KEY_FILE)?,
    })
}

#[cfg(test)]
mod tests;
