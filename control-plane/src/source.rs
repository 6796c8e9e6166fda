//! The mesh file as a source: loads it at start, watches its directory (editors and
//! config-map mounts replace files by rename), reloads on change, and publishes each new
//! model. A refused file is logged and reported, and the last good model stays in force.
//! It also holds the last good addresses of the file's DNS names, which the resolver
//! (`crate::dns`) hands in: a change of them publishes a new model the same way.
//! [`ModelSource`] is either source as the admin API and the dashboard see it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use notify::event::{AccessKind, AccessMode, EventKind};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::kubernetes::mapping::Problem;
use crate::kubernetes::watch::ClusterSource;
use crate::mesh_file::{self, MeshFileError, MeshSpec};
use crate::metrics::{Metrics, ResultLabel};
use crate::model::{DnsName, MeshModel, Resolutions};

/// Changes often come as a burst of events (truncate, write, rename): wait this long for
/// the burst to end before reading the file. Changes during a reload are read together by
/// the next one.
const SETTLE_TIME: Duration = Duration::from_millis(20);

pub struct MeshSource {
    path: PathBuf,
    trust_domain: String,
    model: watch::Sender<Arc<MeshModel>>,
    /// The DNS names the file in force uses, for the resolver to follow.
    names: watch::Sender<BTreeSet<DnsName>>,
    state: Mutex<ReloadState>,
    metrics: Arc<Metrics>,
}

struct ReloadState {
    /// The text last read, accepted or not, so unchanged files are not parsed again.
    last_text: Option<String>,
    last_error: Option<MeshFileError>,
    /// The file in force.
    spec: MeshSpec,
    /// The last good addresses of the file's DNS names.
    resolutions: Resolutions,
    /// Why the latest addresses of the names could not make a model, if they could not.
    resolution_error: Option<MeshFileError>,
}

impl MeshSource {
    /// Loads the mesh file; a file that cannot be used at start is an error. Its DNS
    /// names are not resolved yet: their endpoints come with the resolver's first answers.
    pub fn load(
        path: &Path,
        trust_domain: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, MeshFileError> {
        let spec = mesh_file::load(path, trust_domain)?;
        let mut model = spec.model(&Resolutions::new())?;
        model.version = 1;
        metrics.mesh_version.set(1);
        metrics
            .mesh_reloads
            .get_or_create(&ResultLabel { result: "accepted" })
            .inc();
        tracing::info!(path = %path.display(), services = model.services().len(), "loaded the mesh file");
        Ok(Arc::new(Self {
            path: path.to_owned(),
            trust_domain: trust_domain.to_owned(),
            model: watch::Sender::new(Arc::new(model)),
            names: watch::Sender::new(spec.names()),
            state: Mutex::new(ReloadState {
                last_text: std::fs::read_to_string(path).ok(),
                last_error: None,
                spec,
                resolutions: Resolutions::new(),
                resolution_error: None,
            }),
            metrics,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshModel>> {
        self.model.subscribe()
    }

    pub fn current(&self) -> Arc<MeshModel> {
        self.model.borrow().clone()
    }

    /// The DNS names of the file in force, changing with it.
    pub fn names(&self) -> watch::Receiver<BTreeSet<DnsName>> {
        self.names.subscribe()
    }

    /// Why the latest change to the file was refused, if it was; else why the latest
    /// addresses of its DNS names could not be used, if they could not.
    pub fn last_error(&self) -> Option<String> {
        let state = self.lock_state();
        state
            .last_error
            .as_ref()
            .or(state.resolution_error.as_ref())
            .map(ToString::to_string)
    }

    /// Watches the file's directory and reloads on every change, until the returned task
    /// is dropped or aborted.
    pub fn watch(self: &Arc<Self>) -> notify::Result<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let file_name = self.path.file_name().map(ToOwned::to_owned);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Only events that may change the mesh file itself (by name, as renames
                // replace the inode). Opening it is an event too, and reloading opens it.
                let touches_file = event.is_ok_and(|event| {
                    may_change_content(&event.kind)
                        && event
                            .paths
                            .iter()
                            .any(|path| path.file_name() == file_name.as_deref())
                });
                if touches_file {
                    let _ = tx.send(());
                }
            })?;
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        watcher.watch(&directory, notify::RecursiveMode::NonRecursive)?;
        let source = self.clone();
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                tokio::time::sleep(SETTLE_TIME).await;
                while rx.try_recv().is_ok() {}
                // Reading and parsing a large file would hold up a runtime worker that
                // serves discovery streams.
                let source = source.clone();
                if tokio::task::spawn_blocking(move || source.reload())
                    .await
                    .is_err()
                {
                    tracing::error!(
                        "reloading the mesh file panicked; the last good model stays in force"
                    );
                }
            }
        }))
    }

    /// Reads the file again and publishes the model if it is valid and different. The
    /// names it shares with the file in force keep their addresses; new names get theirs
    /// from the resolver, which is told at once.
    pub fn reload(&self) {
        let text = std::fs::read_to_string(&self.path).ok();
        let mut state = self.lock_state();
        if text.is_some() && text == state.last_text {
            return;
        }
        state.last_text = text;
        let parsed = match &state.last_text {
            Some(text) => mesh_file::parse_spec(&self.path, text, &self.trust_domain),
            None => mesh_file::load(&self.path, &self.trust_domain),
        }
        .and_then(|spec| {
            let names = spec.names();
            let mut resolutions = state.resolutions.clone();
            resolutions.retain(|name, _| names.contains(name));
            let model = spec.model(&resolutions)?;
            Ok((spec, names, resolutions, model))
        });
        match parsed {
            Ok((spec, names, resolutions, model)) => {
                state.last_error = None;
                state.resolution_error = None;
                state.spec = spec;
                state.resolutions = resolutions;
                self.metrics
                    .mesh_reloads
                    .get_or_create(&ResultLabel { result: "accepted" })
                    .inc();
                self.names.send_if_modified(|current| {
                    let changed = *current != names;
                    *current = names;
                    changed
                });
                self.publish(model, "mesh file changed");
            }
            Err(err) => {
                self.metrics
                    .mesh_reloads
                    .get_or_create(&ResultLabel { result: "rejected" })
                    .inc();
                tracing::error!(error = %err, "mesh file refused; the last good model stays in force");
                state.last_error = Some(err);
            }
        }
    }

    /// Takes new addresses for some DNS names (from the resolver) and publishes the model
    /// they make, if it differs. Names the file in force no longer uses are ignored. If
    /// the addresses cannot make a model (one is another service's), the last good model
    /// stays in force and `/mesh` says why.
    pub fn resolved(&self, changes: Vec<(DnsName, Vec<IpAddr>)>) {
        let mut state = self.lock_state();
        let names = state.spec.names();
        let mut changed = false;
        for (name, addresses) in changes {
            if names.contains(&name) && state.resolutions.get(&name) != Some(&addresses) {
                state.resolutions.insert(name, addresses);
                changed = true;
            }
        }
        // The same answers make the same model (or the same refusal): skip rebuilding it.
        if !changed {
            return;
        }
        match state.spec.model(&state.resolutions) {
            Ok(model) => {
                state.resolution_error = None;
                self.publish(model, "endpoints by DNS name changed");
            }
            Err(err) => {
                if state.resolution_error.as_ref() != Some(&err) {
                    tracing::error!(
                        error = %err,
                        "the addresses of a dns: endpoint cannot be used; the last good model stays in force"
                    );
                }
                state.resolution_error = Some(err);
            }
        }
    }

    /// Publishes `model` as the next version, unless it serves what the current one does.
    fn publish(&self, model: MeshModel, why: &str) {
        if model.services() != self.current().services() {
            publish_next(&self.model, &self.metrics, model, why);
        }
    }

    fn lock_state(&self) -> parking_lot::MutexGuard<'_, ReloadState> {
        self.state.lock()
    }
}

/// Publishes `model` through `sender` as the version after the current one, and says so
/// (the `seam_mesh_version` gauge, a log line). Both sources call it once they have decided
/// the model serves something new.
pub(crate) fn publish_next(
    sender: &watch::Sender<Arc<MeshModel>>,
    metrics: &Metrics,
    mut model: MeshModel,
    why: &str,
) {
    model.version = sender.borrow().version + 1;
    metrics
        .mesh_version
        .set(i64::try_from(model.version).unwrap_or(i64::MAX));
    tracing::info!(
        version = model.version,
        services = model.services().len(),
        "{why}"
    );
    sender.send_replace(Arc::new(model));
}

/// Where the model in force comes from: the mesh file, or a Kubernetes cluster. Both
/// publish the same `watch::Receiver<Arc<MeshModel>>`.
#[derive(Clone)]
pub enum ModelSource {
    File(Arc<MeshSource>),
    Cluster(Arc<ClusterSource>),
}

impl ModelSource {
    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshModel>> {
        match self {
            Self::File(source) => source.subscribe(),
            Self::Cluster(source) => source.subscribe(),
        }
    }

    pub fn current(&self) -> Arc<MeshModel> {
        match self {
            Self::File(source) => source.current(),
            Self::Cluster(source) => source.current(),
        }
    }

    /// Resolves once the source has a model to serve: at once for the mesh file (read at
    /// start), once every kind has been listed for a cluster. Until then the control plane
    /// serves no proxy (an empty model would tell them every service is gone) and its
    /// `/ready` says so.
    pub fn ready(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut model = self.subscribe();
        async move {
            let _ = model.wait_for(|model| model.version > 0).await;
        }
    }

    /// Whether the source has a model to serve (see [`ready`](Self::ready)).
    pub fn is_ready(&self) -> bool {
        self.current().version > 0
    }

    /// `file` or `kubernetes` (as `--source` says).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Cluster(_) => "kubernetes",
        }
    }

    /// The mesh file, for the file source.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(source) => Some(source.path()),
            Self::Cluster(_) => None,
        }
    }

    /// Why the latest mesh file was refused (file source only).
    pub fn last_error(&self) -> Option<String> {
        match self {
            Self::File(source) => source.last_error(),
            Self::Cluster(_) => None,
        }
    }

    /// The objects of the cluster served without what is wrong with them (none for the
    /// file source, which refuses a bad file whole).
    pub fn problems(&self) -> Arc<Vec<Problem>> {
        match self {
            Self::File(_) => Arc::new(Vec::new()),
            Self::Cluster(source) => source.problems(),
        }
    }
}

/// Whether a file event may have changed what the file holds: not opening, reading or
/// closing it after reading, which every reload itself does (reacting to those made each
/// reload trigger the next, every few milliseconds, from the first change on).
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests;
