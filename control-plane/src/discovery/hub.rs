//! The push hub: what every watched authority resolves to now, computed once per model
//! version for all the proxies that watch it. A watched authority is a [`Watch`] (the
//! authority and the namespace it is resolved from). When the model changes, the hub
//! resolves each watched authority once, compares it with what it resolved to before,
//! and for those that changed builds the one `ServiceUpdate` every watcher shares and
//! marks it in the watchers' outboxes; proxies whose subscriptions did not change are not
//! woken at all. Sessions keep no copy of what they sent, only a pointer to the shared
//! update until their stream sends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use seam_proto::v1::ServiceUpdate;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::encode::to_proto;
use super::outbox::Outbox;
use crate::metrics::Metrics;
use crate::model::{MeshModel, Resolution};

/// Model changes closer together than this are pushed as one: a mesh file rewritten
/// several times in a row, or a burst of endpoint changes, costs one resolution pass and
/// one update per proxy instead of one per change. Short against the one-second
/// convergence goal; the file source already waits for a burst of file events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// An authority as one namespace's proxies see it (Kubernetes names are relative to the
/// caller's namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Watch {
    pub authority: String,
    pub namespace: Option<String>,
}

/// A session's outbox, known by the session's id.
pub type Watcher = (u64, Arc<Outbox>);

pub struct Hub {
    state: Mutex<State>,
}

struct State {
    model: Arc<MeshModel>,
    watched: HashMap<Watch, Watched>,
}

struct Watched {
    resolution: Arc<Resolution>,
    /// The version of the model `resolution` comes from.
    resolved_in: u64,
    /// The update every watcher is sent, stamped with the version it last changed in
    /// (or, for a new subscription, the version in force then).
    update: Arc<ServiceUpdate>,
    watchers: HashMap<u64, Arc<Outbox>>,
}

/// A watched authority's new resolution and the update that says it.
struct Change {
    resolution: Arc<Resolution>,
    update: Arc<ServiceUpdate>,
}

impl Change {
    /// What `watch` resolves to in `model`, if that is not `old`.
    fn between(model: &MeshModel, watch: &Watch, old: &Resolution) -> Option<Self> {
        let resolution = model.resolve_for(&watch.authority, watch.namespace.as_deref());
        (resolution != *old).then(|| Self {
            update: Arc::new(to_proto(&watch.authority, model.version, &resolution)),
            resolution: Arc::new(resolution),
        })
    }
}

impl Watched {
    /// Takes `change` in; returns the update to mark and who to mark it for.
    fn take(&mut self, change: Change) -> (Arc<ServiceUpdate>, Vec<Arc<Outbox>>) {
        self.resolution = change.resolution;
        self.update = change.update.clone();
        (change.update, self.watchers.values().cloned().collect())
    }
}

impl Hub {
    pub fn new(model: Arc<MeshModel>) -> Self {
        Self {
            state: Mutex::new(State {
                model,
                watched: HashMap::new(),
            }),
        }
    }

    /// Adds a watcher of `watch` and marks the current update in its outbox, so the
    /// stream answers the subscription at once.
    pub fn subscribe(&self, watch: &Watch, (id, outbox): Watcher) {
        let mut state = self.state.lock();
        let model = state.model.clone();
        let watched = state.watched.entry(watch.clone()).or_insert_with(|| {
            let resolution = model.resolve_for(&watch.authority, watch.namespace.as_deref());
            let update = Arc::new(to_proto(&watch.authority, model.version, &resolution));
            Watched {
                resolution: Arc::new(resolution),
                resolved_in: model.version,
                update,
                watchers: HashMap::new(),
            }
        });
        // A subscription is answered with the version in force, as an update after a
        // change would be.
        if watched.update.version != model.version {
            let mut restamped = (*watched.update).clone();
            restamped.version = model.version;
            watched.update = Arc::new(restamped);
        }
        watched.watchers.insert(id, outbox.clone());
        let update = watched.update.clone();
        drop(state);
        outbox.mark(update);
    }

    /// Removes a watcher; an authority nobody watches is forgotten.
    pub fn unsubscribe(&self, watch: &Watch, id: u64) {
        let mut state = self.state.lock();
        if let Some(watched) = state.watched.get_mut(watch) {
            watched.watchers.remove(&id);
            if watched.watchers.is_empty() {
                state.watched.remove(watch);
            }
        }
    }

    /// What `watch` resolves to now, if anyone watches it.
    #[cfg(test)]
    pub fn current(&self, watch: &Watch) -> Option<Arc<ServiceUpdate>> {
        let state = self.state.lock();
        state
            .watched
            .get(watch)
            .map(|watched| watched.update.clone())
    }

    /// How many distinct authorities are watched.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.state.lock().watched.len()
    }

    /// Takes `model` as the one in force: resolves every watched authority against it once
    /// and marks the new update in the outbox of each watcher of those that changed.
    /// Resolving, comparing and encoding happen outside the lock, so subscriptions are
    /// not held up by a large model. Returns how many authorities changed.
    pub fn apply(&self, model: Arc<MeshModel>) -> usize {
        let before: Vec<(Watch, Arc<Resolution>)> = {
            let state = self.state.lock();
            state
                .watched
                .iter()
                .map(|(watch, watched)| (watch.clone(), watched.resolution.clone()))
                .collect()
        };
        let resolved: Vec<(Watch, Option<Change>)> = before
            .into_iter()
            .map(|(watch, old)| {
                let change = Change::between(&model, &watch, &old);
                (watch, change)
            })
            .collect();
        let mut marks = Vec::new();
        let mut state = self.state.lock();
        for (watch, change) in resolved {
            if let Some(watched) = state.watched.get_mut(&watch) {
                watched.resolved_in = model.version;
                if let Some(change) = change {
                    marks.push(watched.take(change));
                }
            }
        }
        // Subscribed while this model was being resolved: answered from the model before
        // it, so resolved again now (few, if any).
        for (watch, watched) in &mut state.watched {
            if watched.resolved_in != model.version {
                watched.resolved_in = model.version;
                if let Some(change) = Change::between(&model, watch, &watched.resolution) {
                    marks.push(watched.take(change));
                }
            }
        }
        state.model = model;
        drop(state);
        let count = marks.len();
        for (update, watchers) in marks {
            for outbox in watchers {
                outbox.mark(update.clone());
            }
        }
        count
    }

    /// Follows the model until it ends or `shutdown`: each change (bursts debounced)
    /// applied once for every session.
    pub async fn follow(
        self: Arc<Self>,
        mut model: watch::Receiver<Arc<MeshModel>>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = model.changed() => if changed.is_err() { return },
            }
            tokio::time::sleep(DEBOUNCE).await;
            let latest = model.borrow_and_update().clone();
            let started = std::time::Instant::now();
            let hub = self.clone();
            // Resolving every watched authority is CPU work: keep it off the workers that
            // serve the streams.
            let outcome = tokio::task::spawn_blocking(move || hub.apply(latest)).await;
            if outcome.is_ok_and(|changed| changed > 0) {
                metrics
                    .discovery_push_duration
                    .observe(started.elapsed().as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests;
