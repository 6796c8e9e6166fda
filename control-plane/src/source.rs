//! The mesh file as a source: loads it at start, watches its directory (editors and
//! config-map mounts replace files by rename), reloads on change, and publishes each new
//! model. A refused file is logged and reported, and the last good model stays in force.
//! It also holds the last good addresses of the file's DNS names, which the resolver
//! (`crate::dns`) hands in: a change of them publishes a new model the same way.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use notify::event::{AccessKind, AccessMode, EventKind};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::mesh_file::{self, MeshFileError, MeshSpec};
use crate::metrics::{Metrics, ResultLabel};
use crate::model::{DnsName, MeshModel, Resolutions};

/// Changes often come as a burst of events (truncate, write, rename): wait this long for
/// the burst to end before reading the file.
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
                source.reload();
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
        for (name, addresses) in changes {
            if names.contains(&name) {
                state.resolutions.insert(name, addresses);
            }
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
    fn publish(&self, mut model: MeshModel, why: &str) {
        let current = self.current();
        if model.services() == current.services() {
            return;
        }
        model.version = current.version + 1;
        self.metrics
            .mesh_version
            .set(i64::try_from(model.version).unwrap_or(i64::MAX));
        tracing::info!(
            version = model.version,
            services = model.services().len(),
            "{why}"
        );
        self.model.send_replace(Arc::new(model));
    }

    fn lock_state(&self) -> parking_lot::MutexGuard<'_, ReloadState> {
        self.state.lock()
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
mod tests {
    use super::*;

    #[test]
    fn opening_or_reading_the_file_is_not_a_change() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};
        let cases = [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (EventKind::Access(AccessKind::Read), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Remove(RemoveKind::File), true),
            (EventKind::Any, true),
        ];
        for (kind, changes) in cases {
            assert_eq!(may_change_content(&kind), changes, "{kind:?}");
        }
    }

    #[test]
    fn a_bad_change_keeps_the_last_good_model_and_a_fix_clears_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, "services:\n  api:\n    join_token: t\n").unwrap();
        let metrics = Arc::new(Metrics::new());
        let source = MeshSource::load(&path, "seam.local", metrics.clone()).unwrap();
        let mut models = source.subscribe();

        std::fs::write(
            &path,
            "services:\n  api:\n    join_token: t\n    endpoints: [bad]\n",
        )
        .unwrap();
        source.reload();
        let error = source.last_error().unwrap();
        assert!(error.contains("mesh.yaml:4:"), "{error}");
        assert_eq!(source.current().version, 1);
        assert!(!models.has_changed().unwrap());
        assert!(
            metrics
                .encode()
                .contains("seam_mesh_reloads_total{result=\"rejected\"} 1")
        );

        std::fs::write(
            &path,
            "services:\n  api:\n    join_token: t\n    endpoints: [\"127.0.0.1:1\"]\n",
        )
        .unwrap();
        source.reload();
        assert_eq!(source.last_error(), None);
        assert!(models.has_changed().unwrap());
        let model = models.borrow_and_update().clone();
        assert_eq!(model.version, 2);
        assert_eq!(model.services()["api"].endpoints.len(), 1);

        // The same content again is not a new version.
        source.reload();
        assert!(!models.has_changed().unwrap());
    }

    #[test]
    fn new_addresses_publish_a_version_and_the_same_ones_or_a_failure_do_not() {
        use crate::dns::Answer;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        let file = "services:\n  api:\n    join_token: t\n    endpoints: [\"dns:api:4143\"]\n";
        std::fs::write(&path, file).unwrap();
        let source = MeshSource::load(&path, "seam.local", Arc::new(Metrics::new())).unwrap();
        let mut models = source.subscribe();
        let api = DnsName::parse("api").unwrap();
        assert_eq!(*source.names().borrow(), BTreeSet::from([api.clone()]));
        assert!(source.current().services()["api"].endpoints.is_empty());

        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|ip| ip.parse().unwrap()).collect() };
        let apply = |answer: Answer| {
            if let Some(addresses) = answer.addresses() {
                source.resolved(vec![(api.clone(), addresses)]);
            }
        };
        let endpoints = |model: &MeshModel| -> Vec<String> {
            model.services()["api"]
                .endpoints
                .iter()
                .map(|endpoint| endpoint.address.to_string())
                .collect()
        };

        apply(Answer::Addresses {
            ips: ips(&["10.0.0.1", "10.0.0.2"]),
            ttl: None,
        });
        let model = models.borrow_and_update().clone();
        assert_eq!(model.version, 2);
        assert_eq!(endpoints(&model), ["10.0.0.1:4143", "10.0.0.2:4143"]);

        // The same answer again, and a failed lookup: nothing new, the addresses stay.
        apply(Answer::Addresses {
            ips: ips(&["10.0.0.1", "10.0.0.2"]),
            ttl: None,
        });
        apply(Answer::Failed {
            why: "timeout".into(),
        });
        assert!(!models.has_changed().unwrap());
        assert_eq!(
            endpoints(&source.current()),
            ["10.0.0.1:4143", "10.0.0.2:4143"]
        );

        // The name is gone (scaled to 0): no endpoints.
        apply(Answer::NoAddresses {
            why: "NXDOMAIN".into(),
        });
        let model = models.borrow_and_update().clone();
        assert_eq!(model.version, 3);
        assert!(endpoints(&model).is_empty());

        // A file edit keeps the addresses of the names it still uses and lists new ones.
        apply(Answer::Addresses {
            ips: ips(&["10.0.0.1"]),
            ttl: None,
        });
        std::fs::write(
            &path,
            format!("{file}    timeout: 2s\n  web:\n    join_token: w\n    endpoints: [\"dns:web:80\"]\n"),
        )
        .unwrap();
        source.reload();
        assert_eq!(source.last_error(), None);
        let model = models.borrow_and_update().clone();
        assert_eq!(model.version, 5);
        assert_eq!(endpoints(&model), ["10.0.0.1:4143"]);
        let web = DnsName::parse("web").unwrap();
        assert_eq!(*source.names().borrow(), BTreeSet::from([api.clone(), web]));
    }
}
