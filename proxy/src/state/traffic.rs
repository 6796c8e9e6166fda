//! Fault injection and traffic mirroring as a route carries them: delays and aborts the
//! caller's proxy injects into a share of the route's requests, and the service that
//! gets copies of a share of them. Each share is a [`Chance`], drawn per request from
//! the thread's own generator (no lock, no allocation). Data and draws; no I/O.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rand::Rng;

use super::policy::Target;

/// A probability, from 0 to 1. Never NaN (so it is `Eq`): only
/// [`Chance::from_percent`] makes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chance(f64);

impl Eq for Chance {}

impl Chance {
    /// `percent` (0 to 100, fractions allowed) as a chance; `None` outside that range.
    pub fn from_percent(percent: f64) -> Option<Self> {
        (0.0..=100.0)
            .contains(&percent)
            .then_some(Self(percent / 100.0))
    }

    /// Whether this request is one of the share. 100 % is always and 0 % never, without
    /// a draw.
    pub fn draw(self) -> bool {
        if self.0 >= 1.0 {
            true
        } else if self.0 <= 0.0 {
            false
        } else {
            rand::rng().random::<f64>() < self.0
        }
    }
}

/// What the caller's proxy does to a share of a route's requests; the delay and the
/// abort are drawn each on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultDelay {
    pub fixed: Duration,
    pub chance: Chance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultAbort {
    pub answer: AbortAnswer,
    pub chance: Chance,
}

/// How an aborted request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortAnswer {
    Http(StatusCode),
    /// A gRPC status (1 to 16), answered as HTTP 200 trailers-only.
    Grpc(u32),
}

/// What one request drew from a [`Fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawn {
    pub delay: Option<Duration>,
    pub abort: Option<AbortAnswer>,
}

impl Fault {
    /// Draws the delay and the abort for one request; `None` when neither came up.
    pub fn draw(&self) -> Option<Drawn> {
        let delay = self
            .delay
            .as_ref()
            .filter(|delay| delay.chance.draw())
            .map(|delay| delay.fixed);
        let abort = self
            .abort
            .as_ref()
            .filter(|abort| abort.chance.draw())
            .map(|abort| abort.answer);
        (delay.is_some() || abort.is_some()).then_some(Drawn { delay, abort })
    }
}

/// The service a share of a route's requests is copied to, with its endpoints.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub target: Arc<Target>,
    pub chance: Chance,
}

impl PartialEq for Mirror {
    fn eq(&self, other: &Self) -> bool {
        self.chance == other.chance
            && self.target.service == other.target.service
            && self.target.endpoints == other.target.endpoints
    }
}

impl Eq for Mirror {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chance_is_a_percent_from_0_to_100() {
        assert_eq!(Chance::from_percent(0.5), Some(Chance(0.005)));
        for bad in [-0.5, 100.5, f64::NAN, f64::INFINITY] {
            assert_eq!(Chance::from_percent(bad), None, "{bad}");
        }
    }

    #[test]
    fn all_and_nothing_are_exact_and_a_share_is_near_its_percent() {
        let chance = |percent| Chance::from_percent(percent).unwrap();
        assert!((0..1_000).all(|_| chance(100.0).draw()));
        assert!((0..1_000).all(|_| !chance(0.0).draw()));
        // 10 % of 100,000: mean 10,000, sigma ~95; ±6 sigma cannot fail by chance.
        let hits = (0..100_000).filter(|_| chance(10.0).draw()).count();
        assert!((9_430..=10_570).contains(&hits), "{hits}");
    }

    #[test]
    fn delay_and_abort_are_drawn_independently() {
        let fault = Fault {
            delay: Some(FaultDelay {
                fixed: Duration::from_millis(20),
                chance: Chance::from_percent(100.0).unwrap(),
            }),
            abort: Some(FaultAbort {
                answer: AbortAnswer::Grpc(14),
                chance: Chance::from_percent(0.0).unwrap(),
            }),
        };
        assert_eq!(
            fault.draw(),
            Some(Drawn {
                delay: Some(Duration::from_millis(20)),
                abort: None
            })
        );
        let never = Fault {
            delay: None,
            abort: Some(FaultAbort {
                answer: AbortAnswer::Http(StatusCode::SERVICE_UNAVAILABLE),
                chance: Chance::from_percent(0.0).unwrap(),
            }),
        };
        assert_eq!(never.draw(), None);
        // Half and half: all four combinations come up.
        let half = Fault {
            delay: Some(FaultDelay {
                chance: Chance::from_percent(50.0).unwrap(),
                ..fault.delay.clone().unwrap()
            }),
            abort: Some(FaultAbort {
                chance: Chance::from_percent(50.0).unwrap(),
                ..fault.abort.clone().unwrap()
            }),
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let drawn = half.draw();
            seen.insert(drawn.map(|d| (d.delay.is_some(), d.abort.is_some())));
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
    }
}
