//! The `rate_limit:` key of a service or route: its YAML shape and its reading into the
//! model's [`RateLimit`]. The numbers are for the whole service (the control plane divides
//! them among the instances when it builds what it pushes). Rates are requests per second,
//! more than 0, kept in thousandths; `burst` is at least 1 (an override may give its
//! own); `per_caller` may not exceed
//! the total; an override names its callers as `allow` does.

use std::collections::HashSet;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::policy::Refusal;
use crate::model::{MilliRate, RateLimit, RateOverride};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    requests_per_second: Option<Spanned<f64>>,
    burst: Option<Spanned<i64>>,
    per_caller: Option<Spanned<f64>>,
    #[serde(default)]
    overrides: Vec<Spanned<OverrideSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    callers: Vec<Spanned<String>>,
    requests_per_second: Spanned<f64>,
    /// The override's own burst; absent: the rate limit's.
    burst: Option<Spanned<i64>>,
}

/// Reads the `rate_limit` of `service`; `services` are all the names in the file.
pub fn read(
    service: &str,
    spec: Spanned<RateLimitSpec>,
    services: &HashSet<String>,
    trust_domain: &str,
) -> Result<RateLimit, Refusal> {
    let at = spec.referenced;
    let spec = spec.value;
    let total = spec
        .requests_per_second
        .map(|rate| milli_rate(&rate, "rate_limit.requests_per_second"))
        .transpose()?;
    let per_caller = spec
        .per_caller
        .map(|rate| milli_rate(&rate, "rate_limit.per_caller"))
        .transpose()?;
    if let (Some(total), Some(per_caller)) = (total, per_caller)
        && per_caller > total
    {
        return Err((
            at,
            format!(
                "rate_limit of {service:?}: per_caller ({per_caller}) is more than requests_per_second ({total})"
            ),
        ));
    }
    let burst = spec
        .burst
        .map(|burst| burst_of(&burst, "rate_limit.burst"))
        .transpose()?;
    let mut overrides = Vec::with_capacity(spec.overrides.len());
    for entry in spec.overrides {
        let entry_at = entry.referenced;
        let entry = entry.value;
        if entry.callers.is_empty() {
            return Err((
                entry_at,
                format!("a rate_limit override of {service:?} names no callers"),
            ));
        }
        let callers = super::allow::callers(
            "rate_limit.overrides",
            service,
            &entry.callers,
            services,
            trust_domain,
        )
        .map_err(|err| (err.location, err.reason))?;
        let rate = milli_rate(
            &entry.requests_per_second,
            "rate_limit.overrides.requests_per_second",
        )?;
        let burst = entry
            .burst
            .map(|burst| burst_of(&burst, "rate_limit.overrides.burst"))
            .transpose()?;
        overrides.push(RateOverride {
            callers,
            rate,
            burst,
        });
    }
    if total.is_none() && per_caller.is_none() && overrides.is_empty() {
        return Err((
            at,
            format!(
                "rate_limit of {service:?} sets no limit: give requests_per_second, per_caller or overrides"
            ),
        ));
    }
    Ok(RateLimit {
        total,
        per_caller,
        burst,
        overrides,
    })
}

/// A burst: a whole number of requests, at least 1.
fn burst_of(burst: &Spanned<i64>, key: &str) -> Result<u32, Refusal> {
    if burst.value < 1 {
        return Err((
            burst.referenced,
            format!("{key} is {}; it must be at least 1", burst.value),
        ));
    }
    u32::try_from(burst.value).map_err(|_| {
        (
            burst.referenced,
            format!("{key} is {}; it must be at most {}", burst.value, u32::MAX),
        )
    })
}

/// A rate in requests per second, more than 0, as thousandths.
fn milli_rate(rate: &Spanned<f64>, key: &str) -> Result<MilliRate, Refusal> {
    let millis = rate.value * 1000.0;
    if !millis.is_finite() || millis < 1.0 {
        return Err((
            rate.referenced,
            format!(
                "{key} is {}; it must be a rate of at least 0.001 requests per second",
                rate.value
            ),
        ));
    }
    if millis > u64::MAX as f64 / 2.0 {
        return Err((
            rate.referenced,
            format!("{key} is {}; too large", rate.value),
        ));
    }
    // Rounded to whole thousandths: finer rates are not meaningful for a proxy.
    Ok(MilliRate(millis.round() as u64))
}

#[cfg(test)]
mod tests;
