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

use parking_lot::Mutex;
use seam_proto::v1::ServiceUpdate;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::encode::to_proto;
use super::outbox::Outbox;
use crate::metrics::Metrics;
use crate::model::{MeshModel, Resolution};

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
    /// The model in force: a subscription is answered from it, even before the hub has
    /// applied it (while a pass runs), as the admin API already shows it.
    latest: watch::Receiver<Arc<MeshModel>>,
    state: Mutex<HashMap<Watch, Watched>>,
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

/// An update to mark and the outboxes to mark it in.
type Marks = (Arc<ServiceUpdate>, Vec<Arc<Outbox>>);

impl Watched {
    fn new(model: &MeshModel, watch: &Watch) -> Self {
        let resolution = model.resolve_for(&watch.authority, watch.namespace.as_deref());
        Self {
            update: Arc::new(to_proto(&watch.authority, model.version, &resolution)),
            resolution: Arc::new(resolution),
            resolved_in: model.version,
            watchers: HashMap::new(),
        }
    }

    /// Brings the resolution up to `model` unless it is there already; returns the new
    /// update and its watchers if it changed.
    fn catch_up(&mut self, model: &MeshModel, watch: &Watch) -> Option<Marks> {
        if self.resolved_in >= model.version {
            return None;
        }
        self.resolved_in = model.version;
        let change = Change::between(model, watch, &self.resolution)?;
        Some(self.take(change))
    }

    /// Takes `change` in; returns the update to mark and who to mark it for.
    fn take(&mut self, change: Change) -> Marks {
        self.resolution = change.resolution;
        self.update = change.update.clone();
        (change.update, self.watchers.values().cloned().collect())
    }
}

fn mark_all(marks: Vec<Marks>) {
    for (update, watchers) in marks {
        for outbox in watchers {
            outbox.mark(update.clone());
        }
    }
}

impl Hub {
    pub fn new(latest: watch::Receiver<Arc<MeshModel>>) -> Self {
        Self {
            latest,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a watcher of `watch` and marks the update for the model in force in its
    /// outbox, so the stream answers the subscription at once.
    pub fn subscribe(&self, watch: &Watch, (id, outbox): Watcher) {
        let latest = self.latest.borrow().clone();
        let mut state = self.state.lock();
        let watched = state
            .entry(watch.clone())
            .or_insert_with(|| Watched::new(&latest, watch));
        // Watched already, but the hub has not applied the model in force yet: its other
        // watchers get the change now too.
        let changed = watched.catch_up(&latest, watch);
        // A subscription is answered with the version in force, as an update after a
        // change would be.
        if watched.update.version != latest.version {
            let mut restamped = (*watched.update).clone();
            restamped.version = latest.version;
            watched.update = Arc::new(restamped);
        }
        watched.watchers.insert(id, outbox.clone());
        let update = watched.update.clone();
        drop(state);
        mark_all(changed.into_iter().collect());
        outbox.mark(update);
    }

    /// Removes a watcher; an authority nobody watches is forgotten.
    pub fn unsubscribe(&self, watch: &Watch, id: u64) {
        let mut state = self.state.lock();
        if let Some(watched) = state.get_mut(watch) {
            watched.watchers.remove(&id);
            if watched.watchers.is_empty() {
                state.remove(watch);
            }
        }
    }

    /// What `watch` resolves to now, if anyone watches it.
    #[cfg(test)]
    pub fn current(&self, watch: &Watch) -> Option<Arc<ServiceUpdate>> {
        let state = self.state.lock();
        state.get(watch).map(|watched| watched.update.clone())
    }

    /// How many distinct authorities are watched.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.state.lock().len()
    }

    /// Takes `model` as the one in force: resolves every watched authority against it once
    /// and marks the new update in the outbox of each watcher of those that changed.
    /// Resolving, comparing and encoding happen outside the lock, so subscriptions are
    /// not held up by a large model. Returns how many authorities changed.
    pub fn apply(&self, model: Arc<MeshModel>) -> usize {
        let before: Vec<(Watch, Arc<Resolution>)> = {
            let state = self.state.lock();
            state
                .iter()
                .filter(|(_, watched)| watched.resolved_in < model.version)
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
            // Gone, or brought up to this model (or a later one) by a subscription.
            let Some(watched) = state
                .get_mut(&watch)
                .filter(|watched| watched.resolved_in < model.version)
            else {
                continue;
            };
            watched.resolved_in = model.version;
            if let Some(change) = change {
                marks.push(watched.take(change));
            }
        }
        // Subscribed while this model was being resolved, from an older one: few, if any.
        for (watch, watched) in state.iter_mut() {
            marks.extend(watched.catch_up(&model, watch));
        }
        drop(state);
        let count = marks.len();
        mark_all(marks);
        count
    }

    /// Follows the model until it ends or `shutdown`: each change applied once for every
    /// session, at once. No timer of its own: the sources already wait for a burst to
    /// settle (the mesh file 20 ms, Kubernetes 100 ms), and the changes published while a
    /// pass runs are taken together by the next one (the `watch` keeps only the latest),
    /// so a burst costs one pass per pass-time, while a lone change pays no delay.
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
