//! Backoff delays. [`Backoff`]: exponential with "equal" jitter (each delay between half
//! and all of its ceiling), for spacing retries of requests and accept errors.
//! [`DecorrelatedBackoff`]: "decorrelated" jitter, for reconnecting to the control plane,
//! where thousands of proxies lose their replica at the same instant and must not all
//! come back to the survivors in lockstep: each delay is drawn between the base and three
//! times the previous delay, so the herd spreads out after the first round while the
//! floor stays at the base (full jitter's draws near zero would hammer a replica still
//! starting).

use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// A random delay in [ceiling/2, ceiling], where the ceiling doubles each attempt up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// Decorrelated jitter: `delay = min(max, random(base, 3 × previous delay))`.
#[derive(Debug)]
pub struct DecorrelatedBackoff {
    base: Duration,
    max: Duration,
    previous: Duration,
}

impl DecorrelatedBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            previous: base,
        }
    }

    /// A random delay in [base, min(max, 3 × the previous delay)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.previous.saturating_mul(3).min(self.max).max(self.base);
        let delay = self.base + (ceiling - self.base).mul_f64(rand::random::<f64>());
        self.previous = delay;
        delay
    }

    pub fn reset(&mut self) {
        self.previous = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decorrelated_delays_stay_between_the_base_and_three_times_the_last() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..200 {
            let mut backoff = DecorrelatedBackoff::new(base, max);
            let mut previous = base;
            for _ in 0..20 {
                let delay = backoff.next_delay();
                assert!(delay >= base, "{delay:?} under the base");
                assert!(delay <= max, "{delay:?} over the cap");
                assert!(delay <= previous * 3, "{delay:?} after {previous:?}");
                previous = delay;
            }
            backoff.reset();
            assert!(backoff.next_delay() <= base * 3);
        }
    }

    #[test]
    fn decorrelated_delays_spread_and_reach_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        // Many proxies' first reconnect delays: spread over [base, 3 × base], not one value.
        let firsts: Vec<Duration> = (0..200)
            .map(|_| DecorrelatedBackoff::new(base, max).next_delay())
            .collect();
        let (low, high) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
        assert!(
            *high - *low > Duration::from_millis(100),
            "{low:?}..{high:?}"
        );
        // A long outage: the delays grow to the cap (and never beyond).
        let mut backoff = DecorrelatedBackoff::new(base, max);
        let longest = (0..200).map(|_| backoff.next_delay()).max().unwrap();
        assert!(longest > max / 2 && longest <= max, "{longest:?}");
    }

    #[test]
    fn grows_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
    }
}
