//! The idle sweep: a periodic task that makes the [`Directory`] forget, and the
//! discovery stream unsubscribe from, the authorities no request or connection has used
//! for `--idle-unsubscribe-after`. It keeps what one proxy asks of the control plane
//! proportional to what its app uses now, not to every name it ever sent.

use std::sync::Arc;
use std::time::Duration;

use crate::state::Directory;

/// The idle time is measured in this many ticks of the directory's coarse clock: an
/// authority is forgotten between 1 and 1¼ idle times after its last use.
pub const TICKS_PER_IDLE_TIME: u32 = 4;

/// Sweeps `directory` every quarter of `idle_after`, for as long as the proxy runs.
pub async fn sweep_forever(directory: Arc<Directory>, idle_after: Duration) {
    let mut ticks = tokio::time::interval(idle_after / TICKS_PER_IDLE_TIME);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the clock starts at the second.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let forgotten = directory.sweep(u64::from(TICKS_PER_IDLE_TIME));
        if !forgotten.is_empty() {
            tracing::debug!(
                count = forgotten.len(),
                authorities = ?forgotten,
                "unsubscribed from authorities unused for --idle-unsubscribe-after"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::state::{Resolution, SubscriptionChange};

    #[tokio::test(start_paused = true)]
    async fn an_unused_authority_is_unsubscribed_after_the_idle_time() {
        let (changes, mut sent) = mpsc::unbounded_channel();
        let directory = Arc::new(Directory::new(changes, 10));
        directory
            .resolve("api", Duration::ZERO)
            .await
            .expect("room for one");
        directory.apply("api", 1, Resolution::NotFound);
        assert_eq!(
            sent.recv().await,
            Some(SubscriptionChange::Subscribe("api".into()))
        );
        let started = tokio::time::Instant::now();
        tokio::spawn(sweep_forever(directory.clone(), Duration::from_secs(600)));
        assert_eq!(
            sent.recv().await,
            Some(SubscriptionChange::Unsubscribe("api".into()))
        );
        let waited = started.elapsed();
        assert!(
            (Duration::from_secs(600)..=Duration::from_secs(750)).contains(&waited),
            "unsubscribed after {waited:?}"
        );
        assert!(directory.authorities().is_empty());
    }
}
