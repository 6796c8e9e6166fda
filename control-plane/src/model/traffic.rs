//! Fault injection and traffic mirroring as the model holds them: what a route's caller
//! does to some of its requests before they leave (delay them, answer them itself), and
//! which other service gets copies of some of them. A share of requests is a
//! [`Percent`]; the mirror names its service here and gets that service's endpoints
//! when an authority is resolved (`resolve`), like a weighted backend.

use std::fmt;
use std::time::Duration;

/// A share of requests, 0 to 100, fractions allowed. Never NaN (so it is `Eq`): only
/// [`Percent::new`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Eq for Percent {}

impl Percent {
    /// `value` as a share, or `None` unless it is a number from 0 to 100.
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=100.0).contains(&value).then_some(Self(value))
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", self.0)
    }
}

/// What the caller's proxy does to a share of a route's requests. At least one of the
/// two is set; each is drawn on its own, so a request may be delayed and then aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultDelay {
    pub fixed: Duration,
    pub percent: Percent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultAbort {
    pub answer: AbortAnswer,
    pub percent: Percent,
}

/// How an aborted request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortAnswer {
    /// This HTTP status, 200 to 599.
    Http(u16),
    /// This gRPC status, 1 to 16, as HTTP 200 trailers-only.
    Grpc(u32),
}

/// A mirror as written: the service that gets the copies, and the share copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRef {
    pub service: String,
    pub percent: Percent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_is_a_number_from_0_to_100() {
        for good in [0.0, 0.5, 10.0, 100.0] {
            assert_eq!(Percent::new(good).map(Percent::value), Some(good));
        }
        for bad in [-0.1, 100.01, f64::NAN, f64::INFINITY] {
            assert_eq!(Percent::new(bad), None, "{bad}");
        }
    }
}
