//! How much the proxy logs about what peers on the network do to it. Every refused
//! connection, handshake and request is counted in metrics; a log line for each as well
//! would let a flood of bad connections become a flood of log lines. So the first few
//! refusals of each window are logged one by one (with their details, which is what an
//! operator debugging one client needs), the rest only counted, and at the end of a window
//! in which some were left out one summary line says how many and of which kind.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Refusals logged one by one per window, of all kinds together.
pub const LINES_PER_WINDOW: u32 = 20;

#[derive(Debug)]
pub struct RefusalLog {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    /// Refusals not logged in this window, by kind.
    left_out: BTreeMap<&'static str, u64>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                left_out: BTreeMap::new(),
            }),
        }
    }
}

impl RefusalLog {
    /// Whether a refusal of `kind` may be logged now; if not, it is counted for the
    /// window's summary. A window that has ended is summed up first.
    pub fn admit(&self, kind: &'static str) -> bool {
        let mut window = self.window.lock();
        window.roll_if_over(Instant::now());
        if window.logged < LINES_PER_WINDOW {
            window.logged += 1;
            true
        } else {
            *window.left_out.entry(kind).or_default() += 1;
            false
        }
    }

    /// Ends the window if it is over, logging its summary. `admit` does this on the next
    /// refusal; a task calls it every window so that the summary of a flood that stopped
    /// still comes.
    pub fn flush(&self) {
        self.window.lock().roll_if_over(Instant::now());
    }

    /// Flushes every window until the proxy stops.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut ticks = tokio::time::interval(WINDOW);
        loop {
            ticks.tick().await;
            self.flush();
        }
    }
}

impl Window {
    fn roll_if_over(&mut self, now: Instant) {
        if now.duration_since(self.started) < WINDOW {
            return;
        }
        if !self.left_out.is_empty() {
            let total: u64 = self.left_out.values().sum();
            let kinds: Vec<String> = self
                .left_out
                .iter()
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect();
            tracing::warn!(
                total,
                kinds = kinds.join(", "),
                "more refusals than are logged one by one ({LINES_PER_WINDOW} per {WINDOW:?}); \
                 these were only counted (seam_connections_refused_total, \
                 seam_tls_handshakes_refused_total, seam_authorization_denied_total)"
            );
        }
        self.started = now;
        self.logged = 0;
        self.left_out.clear();
    }

    #[cfg(test)]
    fn left_out(&self) -> u64 {
        self.left_out.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_logs_a_few_lines_then_counts_until_the_next_window() {
        let log = RefusalLog::default();
        let admitted = (0..10_000)
            .filter(|i| log.admit(if i % 2 == 0 { "plaintext" } else { "limit" }))
            .count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        assert_eq!(
            log.window.lock().left_out(),
            10_000 - u64::from(LINES_PER_WINDOW)
        );

        tokio::time::advance(WINDOW).await;
        log.flush();
        assert_eq!(log.window.lock().left_out(), 0, "summed up and reset");
        assert!(log.admit("plaintext"), "a new window logs again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_does_not_end_early() {
        let log = RefusalLog::default();
        for _ in 0..=LINES_PER_WINDOW {
            log.admit("unknown_protocol");
        }
        tokio::time::advance(WINDOW - Duration::from_millis(1)).await;
        log.flush();
        assert_eq!(log.window.lock().left_out(), 1);
        assert!(!log.admit("unknown_protocol"));
    }
}
