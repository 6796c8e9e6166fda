//! The mesh file as a source: loads it at start, watches its directory (editors and
//! config-map mounts replace files by rename), reloads on change, and publishes each new
//! model. A refused file is logged and reported, and the last good model stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use notify::event::{AccessKind, AccessMode, EventKind};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::mesh_file::{self, MeshFileError};
use crate::metrics::{Metrics, ResultLabel};
use crate::model::MeshModel;

/// Changes often come as a burst of events (truncate, write, rename): wait this long for
/// the burst to end before reading the file.
const SETTLE_TIME: Duration = Duration::from_millis(20);

pub struct MeshSource {
    path: PathBuf,
    trust_domain: String,
    model: watch::Sender<Arc<MeshModel>>,
    state: Mutex<ReloadState>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct ReloadState {
    /// The text last read, accepted or not, so unchanged files are not parsed again.
    last_text: Option<String>,
    last_error: Option<MeshFileError>,
}

impl MeshSource {
    /// Loads the mesh file; a file that cannot be used at start is an error.
    pub fn load(
        path: &Path,
        trust_domain: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, MeshFileError> {
        let mut model = mesh_file::load(path, trust_domain)?;
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
            state: Mutex::new(ReloadState {
                last_text: std::fs::read_to_string(path).ok(),
                last_error: None,
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

    /// Why the latest change to the file was refused, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.lock_state()
            .last_error
            .as_ref()
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

    /// Reads the file again and publishes the model if it is valid and different.
    pub fn reload(&self) {
        let text = std::fs::read_to_string(&self.path).ok();
        let mut state = self.lock_state();
        if text.is_some() && text == state.last_text {
            return;
        }
        state.last_text = text;
        let parsed = match &state.last_text {
            Some(text) => mesh_file::parse(&self.path, text, &self.trust_domain),
            None => mesh_file::load(&self.path, &self.trust_domain),
        };
        match parsed {
            Ok(mut model) => {
                state.last_error = None;
                self.metrics
                    .mesh_reloads
                    .get_or_create(&ResultLabel { result: "accepted" })
                    .inc();
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
                    "mesh file changed"
                );
                self.model.send_replace(Arc::new(model));
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
}
