//! What one `GET /tap` asks for, parsed from its query string, and the filter it puts on
//! the proxy's finished requests. Parsing is strict: an unknown parameter, a repeated one
//! or a bad value is refused with a message naming it, so a typo never widens a tap.

use std::num::NonZeroU32;

use http::{HeaderName, Method};

use super::event::TapEvent;
use crate::metrics::Direction;

/// Events per second a tap gets when `max_rps` is not given.
pub const DEFAULT_MAX_RPS: u32 = 100;
/// The highest `max_rps` a tap may ask for.
pub const MAX_MAX_RPS: u32 = 10_000;
/// The most header names one tap may ask to see.
pub const MAX_HEADERS: usize = 16;

const PARAMETERS: &str = "direction, to, path_prefix, method, max_rps, headers";

/// A parsed tap request: the filter, the event rate and the request headers to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapQuery {
    pub filter: TapFilter,
    pub max_rps: NonZeroU32,
    /// Request headers whose values the events carry (lowercase names).
    pub headers: Vec<HeaderName>,
}

/// Which finished requests a tap shows; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapFilter {
    pub direction: Option<Direction>,
    /// Outbound requests counted under this service (the callee).
    pub to: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<Method>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("unknown tap parameter {0:?} (known: {PARAMETERS})")]
    Unknown(String),
    #[error("tap parameter {0:?} is given twice")]
    Repeated(String),
    #[error("tap parameter {name:?}: {reason}")]
    Bad { name: &'static str, reason: String },
}

fn bad(name: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::Bad {
        name,
        reason: reason.into(),
    }
}

impl TapQuery {
    /// Parses a query string (`None`: no `?` at all, which taps everything).
    pub fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut filter = TapFilter::default();
        let mut max_rps = None;
        let mut headers = None;
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if seen.iter().any(|earlier| *earlier == name) {
                return Err(QueryError::Repeated(name.into_owned()));
            }
            seen.push(name.clone().into_owned());
            match name.as_ref() {
                "direction" => filter.direction = Some(parse_direction(&value)?),
                "to" => filter.to = Some(non_empty("to", &value)?.to_owned()),
                "path_prefix" => {
                    if !value.starts_with('/') {
                        return Err(bad(
                            "path_prefix",
                            format!("{value:?} does not start with /"),
                        ));
                    }
                    filter.path_prefix = Some(value.into_owned());
                }
                "method" => filter.method = Some(parse_method(&value)?),
                "max_rps" => max_rps = Some(parse_max_rps(&value)?),
                "headers" => headers = Some(parse_headers(&value)?),
                _ => return Err(QueryError::Unknown(name.into_owned())),
            }
        }
        if filter.to.is_some() && filter.direction == Some(Direction::Inbound) {
            return Err(bad(
                "to",
                "names the callee of outbound requests; it cannot go with direction=inbound",
            ));
        }
        Ok(Self {
            filter,
            max_rps: max_rps.unwrap_or(NonZeroU32::new(DEFAULT_MAX_RPS).expect("100 is not 0")),
            headers: headers.unwrap_or_default(),
        })
    }
}

fn non_empty<'a>(name: &'static str, value: &'a str) -> Result<&'a str, QueryError> {
    if value.is_empty() {
        Err(bad(name, "is empty"))
    } else {
        Ok(value)
    }
}

fn parse_direction(value: &str) -> Result<Direction, QueryError> {
    match value {
        "inbound" => Ok(Direction::Inbound),
        "outbound" => Ok(Direction::Outbound),
        _ => Err(bad(
            "direction",
            format!("{value:?} is neither inbound nor outbound"),
        )),
    }
}

fn parse_method(value: &str) -> Result<Method, QueryError> {
    let value = non_empty("method", value)?;
    // Methods are case-sensitive on the wire; the usual ones are asked for in any case.
    let upper = value.to_ascii_uppercase();
    let name = if Method::from_bytes(upper.as_bytes()).is_ok_and(|m| is_standard(&m)) {
        upper
    } else {
        value.to_owned()
    };
    Method::from_bytes(name.as_bytes())
        .map_err(|_| bad("method", format!("{value:?} is not an HTTP method")))
}

fn is_standard(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ]
    .contains(method)
}

fn parse_max_rps(value: &str) -> Result<NonZeroU32, QueryError> {
    value
        .parse::<NonZeroU32>()
        .ok()
        .filter(|rps| rps.get() <= MAX_MAX_RPS)
        .ok_or_else(|| {
            bad(
                "max_rps",
                format!("{value:?} is not a whole number from 1 to {MAX_MAX_RPS}"),
            )
        })
}

fn parse_headers(value: &str) -> Result<Vec<HeaderName>, QueryError> {
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim) {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("headers", format!("{name:?} is not a header name")))?;
        if !names.contains(&header) {
            names.push(header);
        }
    }
    if names.len() > MAX_HEADERS {
        return Err(bad(
            "headers",
            format!("names {} headers; at most {MAX_HEADERS}", names.len()),
        ));
    }
    Ok(names)
}

impl TapFilter {
    /// Whether a finished request passes this filter.
    pub fn matches(&self, event: &TapEvent) -> bool {
        self.direction
            .is_none_or(|direction| direction == event.direction)
            && self
                .to
                .as_deref()
                .is_none_or(|to| event.direction == Direction::Outbound && *event.service == *to)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| event.path.starts_with(prefix))
            && self
                .method
                .as_ref()
                .is_none_or(|method| *method == event.method)
    }
}

#[cfg(test)]
mod tests;
