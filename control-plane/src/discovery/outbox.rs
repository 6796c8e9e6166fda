//! One proxy's outbox: for each authority whose state it has not been sent yet, the
//! latest update (shared with every other proxy watching it). A change replaces what is
//! marked for the authority; the stream, when the proxy reads, takes the marks. So a slow
//! proxy gets the latest state per authority, never a queue of stale ones, and what waits
//! for it is at most one pointer per subscription. How long marks have waited unread is
//! kept, so a proxy that stops reading can be let go (see [`Outbox::stalled`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use seam_proto::v1::ServiceUpdate;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::Status;

pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the stream when there is something to send.
    ready: Notify,
    /// Wakes the stall watch when marks start waiting.
    pending: Notify,
}

#[derive(Default)]
struct State {
    dirty: BTreeMap<String, Arc<ServiceUpdate>>,
    /// Since when marks have waited for the stream to take them.
    waiting_since: Option<Instant>,
    /// The status the stream ends with, once the session is over.
    closed: Option<Status>,
    /// Whether the stream has yielded the closing status.
    finished: bool,
}

/// What the stream does next.
pub enum Next {
    /// Send these updates.
    Send(Vec<Arc<ServiceUpdate>>),
    /// End the stream with this status.
    Fail(Status),
    /// End the stream.
    End,
    /// Nothing yet: wait for [`Outbox::ready`].
    Wait,
}

impl Outbox {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            pending: Notify::new(),
        }
    }

    /// Marks `update` to be sent, in place of any update of its authority not sent yet.
    pub fn mark(&self, update: Arc<ServiceUpdate>) {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return;
        }
        match state.dirty.get_mut(&update.authority) {
            Some(marked) => *marked = update,
            None => {
                state.dirty.insert(update.authority.clone(), update);
            }
        }
        if state.waiting_since.is_none() {
            state.waiting_since = Some(Instant::now());
            self.pending.notify_one();
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Forgets a mark (the proxy unsubscribed).
    pub fn unmark(&self, authority: &str) {
        self.state.lock().dirty.remove(authority);
    }

    /// Ends the stream with `status` after what is marked now is dropped.
    pub fn close(&self, status: Status) {
        let mut state = self.state.lock();
        state.dirty.clear();
        state.waiting_since = None;
        state.closed.get_or_insert(status);
        drop(state);
        self.ready.notify_one();
    }

    /// What the stream does next; marks taken are no longer waiting.
    pub fn take(&self) -> Next {
        let mut state = self.state.lock();
        if state.finished {
            return Next::End;
        }
        if let Some(status) = state.closed.clone() {
            state.finished = true;
            return Next::Fail(status);
        }
        state.waiting_since = None;
        if state.dirty.is_empty() {
            return Next::Wait;
        }
        Next::Send(std::mem::take(&mut state.dirty).into_values().collect())
    }

    /// Resolves when there may be something to take.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Resolves once marks have waited `bound` without the stream taking them: the proxy
    /// stopped reading (its HTTP/2 window is full, so the stream is not polled).
    pub async fn stalled(&self, bound: Duration) {
        loop {
            let waiting_since = self.state.lock().waiting_since;
            match waiting_since {
                Some(since) if since.elapsed() >= bound => return,
                Some(since) => tokio::time::sleep_until(since + bound).await,
                None => self.pending.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(authority: &str, version: u64) -> Arc<ServiceUpdate> {
        Arc::new(ServiceUpdate {
            authority: authority.to_owned(),
            version,
            state: None,
        })
    }

    fn sent(next: Next) -> Vec<(String, u64)> {
        match next {
            Next::Send(updates) => updates
                .iter()
                .map(|update| (update.authority.clone(), update.version))
                .collect(),
            _ => panic!("expected updates to send"),
        }
    }

    #[test]
    fn marks_coalesce_to_the_latest_update_per_authority() {
        let outbox = Outbox::new();
        for version in 1..=100 {
            outbox.mark(update("api", version));
            outbox.mark(update("web", version));
        }
        assert_eq!(
            sent(outbox.take()),
            [("api".to_owned(), 100), ("web".to_owned(), 100)]
        );
        assert!(matches!(outbox.take(), Next::Wait));
        outbox.mark(update("api", 101));
        outbox.unmark("api");
        assert!(matches!(outbox.take(), Next::Wait));
    }

    #[test]
    fn a_closed_outbox_fails_once_then_ends() {
        let outbox = Outbox::new();
        outbox.mark(update("api", 1));
        outbox.close(Status::unavailable("bye"));
        outbox.mark(update("web", 1));
        assert!(matches!(outbox.take(), Next::Fail(status) if status.message() == "bye"));
        assert!(matches!(outbox.take(), Next::End));
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_only_when_marks_wait_past_the_bound() {
        let bound = Duration::from_secs(30);
        let outbox = std::sync::Arc::new(Outbox::new());
        let watch = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.stalled(bound).await }
        });
        // Idle for longer than the bound with nothing to send: not stalled.
        tokio::time::sleep(bound * 2).await;
        assert!(!watch.is_finished());
        // Marks taken in time reset the wait.
        outbox.mark(update("api", 1));
        tokio::time::sleep(bound / 2).await;
        let _ = outbox.take();
        tokio::time::sleep(bound).await;
        assert!(!watch.is_finished());
        // Marks left unread for the bound: stalled.
        outbox.mark(update("api", 2));
        let started = Instant::now();
        watch.await.expect("the stall watch ends");
        assert!(started.elapsed() >= bound);
    }
}
