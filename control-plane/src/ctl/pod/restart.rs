//! When `seamctl pod` starts a crashed proxy again: soon after a first crash, so traffic
//! comes back quickly, then doubling up to a ceiling, so a proxy that cannot start (a bad
//! flag, a missing file) does not spin; a proxy that ran long enough before it died
//! counts as healthy again and starts over from the first delay. A pure policy, so the
//! schedule is tested without processes or clocks.

use std::time::Duration;

/// The restart schedule of one supervised process.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    first: Duration,
    ceiling: Duration,
    /// A run at least this long resets the schedule.
    healthy_after: Duration,
    /// Crashes in a row, each after a run shorter than `healthy_after`.
    consecutive_crashes: u32,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
    }
}

impl RestartBackoff {
    pub fn new(first: Duration, ceiling: Duration, healthy_after: Duration) -> Self {
        Self {
            first,
            ceiling,
            healthy_after,
            consecutive_crashes: 0,
        }
    }

    /// How long to wait before starting the process again, after it ran for `ran_for`.
    pub fn delay_after(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.healthy_after {
            self.consecutive_crashes = 0;
        }
        let doublings = self.consecutive_crashes.min(31);
        self.consecutive_crashes = self.consecutive_crashes.saturating_add(1);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.ceiling)
            .min(self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn quick_crashes_double_the_delay_up_to_the_ceiling() {
        let mut backoff = RestartBackoff::new(ms(100), ms(1000), ms(30_000));
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.delay_after(ms(50)).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn a_long_run_starts_the_schedule_over() {
        let mut backoff = RestartBackoff::new(ms(100), ms(10_000), ms(30_000));
        for _ in 0..5 {
            backoff.delay_after(ms(10));
        }
        assert_eq!(backoff.delay_after(ms(30_000)), ms(100));
        assert_eq!(backoff.delay_after(ms(10)), ms(200));
    }

    #[test]
    fn many_crashes_never_overflow() {
        let mut backoff = RestartBackoff::default();
        let mut last = Duration::ZERO;
        for _ in 0..200 {
            last = backoff.delay_after(Duration::ZERO);
        }
        assert_eq!(last, Duration::from_secs(10));
    }
}
