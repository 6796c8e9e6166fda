//! Waiting for something to become true: poll a probe at a short interval until it
//! succeeds or an overall deadline passes. This is how the tests synchronise with the
//! binaries (readiness, `/mesh`, `/config`, log lines), instead of sleeping.

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::time::Instant;

/// How often a probe is retried.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `probe` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value.
/// An `Err` from the probe means "not yet" and describes what it saw; the last one is
/// part of the error returned when `timeout` passes, so a failure says where it stuck.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => "the last probe itself did not finish".to_string(),
        };
        if Instant::now() + POLL_INTERVAL >= deadline {
            return Err(anyhow!(
                "{what}: not reached within {timeout:?}; last observed: {last}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
