//! Turning the `seam.v1` fault and mirror of a policy into the proxy's own
//! [`Fault`] and [`Mirror`], refusing anything out of range with a reason for the NACK.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use seam_proto::v1;

use super::convert::{InvalidUpdate, endpoints_from_proto};
use crate::state::policy::Target;
use crate::state::traffic::{AbortAnswer, Chance, Fault, FaultAbort, FaultDelay, Mirror};

pub fn fault_from_proto(fault: v1::Fault) -> Result<Fault, InvalidUpdate> {
    let invalid = |reason: String| InvalidUpdate::Policy(reason);
    let delay = fault
        .delay
        .map(|delay| {
            if delay.fixed_ms == 0 {
                return Err(invalid("fault.delay.fixed must be more than 0".into()));
            }
            Ok(FaultDelay {
                fixed: Duration::from_millis(delay.fixed_ms),
                chance: chance(delay.percent, "fault.delay.percent")?,
            })
        })
        .transpose()?;
    let abort = fault
        .abort
        .map(|abort| {
            let answer = match abort.answer {
                Some(v1::fault_abort::Answer::HttpStatus(status)) => u16::try_from(status)
                    .ok()
                    .filter(|status| (200..=599).contains(status))
                    .and_then(|status| StatusCode::from_u16(status).ok())
                    .map(AbortAnswer::Http)
                    .ok_or_else(|| {
                        invalid(format!("fault.abort.status {status} is not 200 to 599"))
                    })?,
                Some(v1::fault_abort::Answer::GrpcStatus(status)) if (1..=16).contains(&status) => {
                    AbortAnswer::Grpc(status)
                }
                Some(v1::fault_abort::Answer::GrpcStatus(status)) => {
                    return Err(invalid(format!(
                        "fault.abort.grpc_status {status} is not 1 to 16"
                    )));
                }
                None => return Err(invalid("fault.abort has no status".into())),
            };
            Ok(FaultAbort {
                answer,
                chance: chance(abort.percent, "fault.abort.percent")?,
            })
        })
        .transpose()?;
    if delay.is_none() && abort.is_none() {
        return Err(invalid("fault has neither delay nor abort".into()));
    }
    Ok(Fault { delay, abort })
}

pub fn mirror_from_proto(mirror: v1::Mirror) -> Result<Mirror, InvalidUpdate> {
    if mirror.service.is_empty() {
        return Err(InvalidUpdate::Policy("mirror names no service".into()));
    }
    Ok(Mirror {
        chance: chance(mirror.percent, "mirror.percent")?,
        target: Arc::new(Target::new(
            mirror.service.into(),
            endpoints_from_proto(mirror.endpoints)?,
        )),
    })
}

fn chance(percent: f64, key: &str) -> Result<Chance, InvalidUpdate> {
    Chance::from_percent(percent)
        .ok_or_else(|| InvalidUpdate::Policy(format!("{key} {percent} is not 0 to 100")))
}

#[cfg(test)]
mod tests;
