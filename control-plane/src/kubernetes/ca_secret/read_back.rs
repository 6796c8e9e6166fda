//! Reading the CA Secret back for `CaStore::read_back`, which must not block the
//! runtime: a task re-reads the Secret every `FOLLOW_EVERY` and keeps the latest state
//! read, so that a rotation step another replica wrote is picked up by `ca::follow`.
//!
//! A read must never undo this replica's own step: `save` only hands the state to the
//! background writer, so until that write lands the Secret still holds the older state.
//! Every save bumps a generation; the writer records the generation it has written. A
//! read counts only if it started once our latest save was written and no save came
//! since; while our own save is unwritten there is nothing to read back.
//!
//! No lock across replicas is needed here, unlike the state directory's `flock`: the
//! steps after the operator's `rotate` (promote, retire) are computed from the same
//! stored state on every replica, so replicas taking one at once write the same bytes.
//! Two `rotate`s on two replicas within one period both introduce a root; the last write
//! wins and the other replica picks the winner's root up within a period. An introduced
//! root never signs, so nothing was signed by the losing root and nothing is lost: its
//! proxies trusted one extra root for a few seconds.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use parking_lot::Mutex;

use super::state_of;
use crate::ca::CaState;
use crate::ca::follow::FOLLOW_EVERY;

/// What this replica saved, wrote and read, shared by the store, its writer and its
/// reader.
#[derive(Default)]
pub(super) struct Progress {
    /// Bumped by every save.
    saved: u64,
    /// The latest saved generation the writer has written to the Secret.
    written: u64,
    /// The latest state read, with the generation saved when its read started; only
    /// reads started once that generation was written are kept.
    read: Option<(u64, CaState)>,
}

/// Taken when a read starts: the generation saved then, if it was already written.
pub(super) struct ReadTicket {
    generation: Option<u64>,
}

impl Progress {
    /// A new state was handed to the writer: returns its generation.
    pub(super) fn saved(&mut self) -> u64 {
        self.saved += 1;
        self.saved
    }

    /// The writer wrote the state of `generation`.
    pub(super) fn written(&mut self, generation: u64) {
        self.written = self.written.max(generation);
    }

    pub(super) fn read_started(&self) -> ReadTicket {
        ReadTicket {
            generation: (self.written == self.saved).then_some(self.saved),
        }
    }

    /// Keeps `state` if the read was started once our latest save was written.
    pub(super) fn read_finished(&mut self, ticket: ReadTicket, state: CaState) {
        if let Some(generation) = ticket.generation {
            self.read = Some((generation, state));
        }
    }

    /// The latest state read, unless our own latest save is newer than that read.
    pub(super) fn latest(&self) -> Option<CaState> {
        match &self.read {
            Some((generation, state))
                if *generation == self.saved && self.written == self.saved =>
            {
                Some(state.clone())
            }
            _ => None,
        }
    }
}

/// Reads Secret `name` every `FOLLOW_EVERY` into `progress`, for as long as the task
/// runs. Failures are logged once until a read succeeds again; the state in force keeps
/// serving meanwhile.
pub(super) async fn run(api: Api<Secret>, name: String, progress: Arc<Mutex<Progress>>) {
    let secret = format!("{}/{name}", api.namespace().unwrap_or_default());
    // The state was read at load: the first read back is one period later.
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + FOLLOW_EVERY, FOLLOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let ticket = progress.lock().read_started();
        let read = match api.get_opt(&name).await {
            Ok(Some(found)) => state_of(&found, &secret).map_err(|err| err.to_string()),
            // Deleted: the writer creates it again at our next save; nothing to follow.
            Ok(None) => continue,
            Err(err) => Err(err.to_string()),
        };
        match read {
            Ok(state) => {
                if failing {
                    tracing::info!(%secret, "reading the CA Secret back again");
                }
                failing = false;
                progress.lock().read_finished(ticket, state);
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%secret, %error, "cannot read the CA Secret back; keeping the roots in force");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(key: &str) -> CaState {
        CaState {
            bundle_pem: "bundle".into(),
            key_pem: key.into(),
            next_key_pem: None,
        }
    }

    #[test]
    fn a_read_counts_only_when_started_after_our_latest_save_was_written() {
        let mut progress = Progress::default();
        assert_eq!(progress.latest(), None, "nothing read yet");
        let ticket = progress.read_started();
        progress.read_finished(ticket, state("first"));
        assert_eq!(progress.latest(), Some(state("first")));

        // A read in flight when we save, answered with the old state: never kept.
        let before_save = progress.read_started();
        let generation = progress.saved();
        assert_eq!(progress.latest(), None, "our save is not written yet");
        progress.read_finished(before_save, state("stale"));
        assert_eq!(progress.latest(), None);
        // A read started while the write is pending: also dropped.
        let while_writing = progress.read_started();
        progress.written(generation);
        progress.read_finished(while_writing, state("stale"));
        assert_eq!(progress.latest(), None, "the first read predates our save");

        let after_write = progress.read_started();
        progress.read_finished(after_write, state("another replica's"));
        assert_eq!(progress.latest(), Some(state("another replica's")));
    }

    #[test]
    fn an_older_write_finishing_does_not_release_a_newer_save() {
        let mut progress = Progress::default();
        let first = progress.saved();
        let second = progress.saved();
        progress.written(first);
        let ticket = progress.read_started();
        progress.read_finished(ticket, state("first"));
        assert_eq!(
            progress.latest(),
            None,
            "the second save is still unwritten"
        );
        progress.written(second);
        progress.written(first);
        let ticket = progress.read_started();
        progress.read_finished(ticket, state("second"));
        assert_eq!(progress.latest(), Some(state("second")));
    }
}
