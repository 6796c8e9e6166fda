//! Label values that stay within fixed sets whatever the app or an upstream sends. An
//! upstream chooses its HTTP status and its `grpc-status`, so taken as they come each
//! new value would make a new series: the status label is a registered code as its
//! number, any other code of 100–599 as its class (`4xx`), and `other` beyond; the gRPC
//! label is one of the 17 defined codes (0–16), or `unknown` for a gRPC response whose
//! status is out of range, not a number, or missing.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The `status` label of a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusLabel {
    /// A code in the IANA registry (the ones `http` knows a reason phrase for).
    Registered(u16),
    /// Any other code from 100 to 599, by its first digit.
    Class(u16),
    /// Outside 100–599: not an HTTP status, though some servers send one.
    Other,
}

impl StatusLabel {
    pub fn of(status: u16) -> Self {
        let registered =
            http::StatusCode::from_u16(status).is_ok_and(|code| code.canonical_reason().is_some());
        if registered {
            Self::Registered(status)
        } else if (100..=599).contains(&status) {
            Self::Class(status / 100)
        } else {
            Self::Other
        }
    }
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            Self::Registered(code) => write!(encoder, "{code}"),
            Self::Class(class) => write!(encoder, "{class}xx"),
            Self::Other => encoder.write_str("other"),
        }
    }
}

/// The `grpc_status` label of a gRPC response.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum GrpcStatusLabel {
    /// One of the 17 codes gRPC defines, `OK` (0) to `UNAUTHENTICATED` (16).
    Code(u8),
    Unknown,
}

impl GrpcStatusLabel {
    /// The label for a gRPC response whose `grpc-status` read as `status` (`None`: it had
    /// none, or one that is not a number).
    pub fn of(status: Option<u32>) -> Self {
        match status.and_then(|code| u8::try_from(code).ok()) {
            Some(code @ 0..=16) => Self::Code(code),
            _ => Self::Unknown,
        }
    }
}

impl EncodeLabelValue for GrpcStatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(encoder, "{code}"),
            Self::Unknown => encoder.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn statuses_keep_registered_codes_and_fold_the_rest() {
        let cases = [
            (200, StatusLabel::Registered(200)),
            (429, StatusLabel::Registered(429)),
            (503, StatusLabel::Registered(503)),
            (299, StatusLabel::Class(2)),
            (499, StatusLabel::Class(4)),
            (599, StatusLabel::Class(5)),
            (600, StatusLabel::Other),
            (999, StatusLabel::Other),
            (0, StatusLabel::Other),
        ];
        for (status, label) in cases {
            assert_eq!(StatusLabel::of(status), label, "{status}");
        }
    }

    #[test]
    fn every_status_maps_into_a_small_fixed_set() {
        let labels: HashSet<StatusLabel> = (0..=u16::MAX).map(StatusLabel::of).collect();
        // The registry's codes (63 in `http` 1.x), five classes and `other`.
        assert!(labels.len() <= 80, "{} status labels", labels.len());
    }

    #[test]
    fn grpc_statuses_are_the_17_codes_or_unknown() {
        let cases = [
            (Some(0), GrpcStatusLabel::Code(0)),
            (Some(14), GrpcStatusLabel::Code(14)),
            (Some(16), GrpcStatusLabel::Code(16)),
            (Some(17), GrpcStatusLabel::Unknown),
            (Some(256), GrpcStatusLabel::Unknown),
            (Some(u32::MAX), GrpcStatusLabel::Unknown),
            (None, GrpcStatusLabel::Unknown),
        ];
        for (status, label) in cases {
            assert_eq!(GrpcStatusLabel::of(status), label, "{status:?}");
        }
        let labels: HashSet<GrpcStatusLabel> = (0..=1_000)
            .map(|code| GrpcStatusLabel::of(Some(code)))
            .collect();
        assert_eq!(labels.len(), 18, "17 codes and unknown");
    }
}
