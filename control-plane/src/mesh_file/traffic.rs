//! The `fault` and `mirror` keys of a service or route in the mesh file: their YAML
//! shape, and their reading into the model's [`Fault`] and [`MirrorRef`]. Each is
//! checked whole where it is written (shares from 0 to 100, an HTTP status from 200 to
//! 599 or a gRPC status from 1 to 16, a mirror naming another service of the file).
//!
//! ```yaml
//! fault:
//!   delay: { fixed: 200ms, percent: 10 }
//!   abort: { status: 503, percent: 5 }    # or { grpc_status: 14, percent: 5 }
//! mirror: { service: api-v2, percent: 10 }
//! ```

use std::collections::HashSet;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::policy::{Refusal, duration};
use crate::model::{AbortAnswer, Fault, FaultAbort, FaultDelay, MirrorRef, Percent};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    delay: Option<Spanned<DelaySpec>>,
    abort: Option<Spanned<AbortSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelaySpec {
    fixed: Spanned<String>,
    percent: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortSpec {
    status: Option<Spanned<u32>>,
    grpc_status: Option<Spanned<u32>>,
    percent: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    service: Spanned<String>,
    percent: Spanned<f64>,
}

/// Reads a `fault` key.
pub fn fault(spec: Spanned<FaultSpec>) -> Result<Fault, Refusal> {
    let at = spec.referenced;
    let spec = spec.value;
    if spec.delay.is_none() && spec.abort.is_none() {
        return Err((at, "fault needs delay, abort or both".into()));
    }
    let delay = spec
        .delay
        .map(|delay| {
            let delay = delay.value;
            Ok::<_, Refusal>(FaultDelay {
                fixed: duration(&delay.fixed, "fault.delay.fixed")?,
                percent: percent(&delay.percent, "fault.delay.percent")?,
            })
        })
        .transpose()?;
    let abort = spec
        .abort
        .map(|abort| {
            let at = abort.referenced;
            let abort = abort.value;
            let answer = match (abort.status, abort.grpc_status) {
                (Some(status), None) => {
                    if !(200..=599).contains(&status.value) {
                        return Err((
                            status.referenced,
                            format!(
                                "fault.abort.status is {}; it must be an HTTP status from 200 to 599",
                                status.value
                            ),
                        ));
                    }
                    AbortAnswer::Http(
                        u16::try_from(status.value).expect("checked to be at most 599"),
                    )
                }
                (None, Some(grpc)) => {
                    if !(1..=16).contains(&grpc.value) {
                        return Err((
                            grpc.referenced,
                            format!(
                                "fault.abort.grpc_status is {}; it must be a gRPC status from 1 to 16",
                                grpc.value
                            ),
                        ));
                    }
                    AbortAnswer::Grpc(grpc.value)
                }
                (Some(_), Some(_)) | (None, None) => {
                    return Err((
                        at,
                        "fault.abort needs exactly one of status and grpc_status".into(),
                    ));
                }
            };
            Ok(FaultAbort {
                answer,
                percent: percent(&abort.percent, "fault.abort.percent")?,
            })
        })
        .transpose()?;
    Ok(Fault { delay, abort })
}

/// Reads a `mirror` key of `service`; `services` are all the names in the file.
pub fn mirror(
    service: &str,
    spec: Spanned<MirrorSpec>,
    services: &HashSet<String>,
) -> Result<MirrorRef, Refusal> {
    let spec = spec.value;
    let name = spec.service;
    if name.value == service {
        return Err((
            name.referenced,
            format!("{service:?} mirrors to itself; a mirror must be another service"),
        ));
    }
    if !services.contains(&name.value) {
        return Err((
            name.referenced,
            format!(
                "{service:?} mirrors to {:?}, which is not a service in this file",
                name.value
            ),
        ));
    }
    Ok(MirrorRef {
        service: name.value,
        percent: percent(&spec.percent, "mirror.percent")?,
    })
}

fn percent(value: &Spanned<f64>, key: &str) -> Result<Percent, Refusal> {
    Percent::new(value.value).ok_or_else(|| {
        (
            value.referenced,
            format!(
                "{key} is {}; it must be a number from 0 to 100",
                value.value
            ),
        )
    })
}

#[cfg(test)]
mod tests;
