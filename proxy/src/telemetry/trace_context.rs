//! Trace context on the wire, free of sockets so it can be table-tested: reading W3C
//! `traceparent`/`tracestate` and B3 (single `b3` header or the `X-B3-*` set) from a
//! request, and writing the context of the proxy's own span back in every format the
//! proxy was asked to propagate. The proxy never invents a `tracestate` entry; it passes
//! the caller's on as long as the `traceparent` it came with was valid.

use std::fmt;
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which header formats the proxy reads and writes (`--trace-propagation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Propagation {
    pub w3c: bool,
    pub b3: bool,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            w3c: true,
            b3: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown trace propagation format {0:?}: expected a comma-separated list of w3c and b3")]
pub struct UnknownFormat(String);

impl FromStr for Propagation {
    type Err = UnknownFormat;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut propagation = Self {
            w3c: false,
            b3: false,
        };
        for format in list.split(',').map(str::trim) {
            match format.to_ascii_lowercase().as_str() {
                "w3c" | "tracecontext" => propagation.w3c = true,
                "b3" => propagation.b3 = true,
                _ => return Err(UnknownFormat(format.to_owned())),
            }
        }
        Ok(propagation)
    }
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.w3c, self.b3) {
            (true, true) => f.write_str("w3c,b3"),
            (false, true) => f.write_str("b3"),
            _ => f.write_str("w3c"),
        }
    }
}

/// A span's place in a trace, as one hop tells the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's sampling decision; `None` when it left the decision to us (B3 only).
    pub sampled: Option<bool>,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<HeaderValue>,
}

impl SpanContext {
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id.to_be_bytes())
    }
}

/// The caller's span context, from the first enabled format that holds a valid one
/// (W3C before B3). Malformed headers are ignored: the request starts a new trace.
pub fn extract(headers: &HeaderMap, propagation: Propagation) -> Option<SpanContext> {
    if propagation.w3c
        && let Some(context) = headers
            .get(TRACEPARENT)
            .and_then(|value| parse_traceparent(value.as_bytes()))
    {
        let tracestate = headers
            .get(TRACESTATE)
            .filter(|value| !value.is_empty())
            .cloned();
        return Some(SpanContext {
            tracestate,
            ..context
        });
    }
    if propagation.b3 {
        if let Some(context) = header_str(headers, &B3).and_then(parse_b3_single) {
            return Some(context);
        }
        return parse_b3_multi(headers);
    }
    None
}

/// Replaces every header of the enabled formats with `context` (the proxy's own span).
/// Headers of formats not enabled are left as the caller sent them.
pub fn inject(headers: &mut HeaderMap, propagation: Propagation, context: &SpanContext) {
    let sampled = context.sampled.unwrap_or(false);
    if propagation.w3c {
        headers.insert(TRACEPARENT, traceparent(context));
        headers.remove(TRACESTATE);
        if let Some(tracestate) = &context.tracestate {
            headers.insert(TRACESTATE, tracestate.clone());
        }
    }
    if propagation.b3 {
        for name in [
            B3,
            B3_TRACE_ID,
            B3_SPAN_ID,
            B3_PARENT_SPAN_ID,
            B3_SAMPLED,
            B3_FLAGS,
        ] {
            headers.remove(name);
        }
        let trace_id = hex::encode(context.trace_id.to_be_bytes());
        let span_id = hex::encode(context.span_id.to_be_bytes());
        let flag = if sampled { "1" } else { "0" };
        headers.insert(B3, header_value(format!("{trace_id}-{span_id}-{flag}")));
        headers.insert(B3_TRACE_ID, header_value(trace_id));
        headers.insert(B3_SPAN_ID, header_value(span_id));
        headers.insert(
            B3_SAMPLED,
            HeaderValue::from_static(if sampled { "1" } else { "0" }),
        );
    }
}

/// `00-<trace id>-<span id>-<flags>`, hex-encoded in place (every request writes one).
/// Marked sensitive, as every value unique to a request is: see [`unique_value`].
pub fn traceparent(context: &SpanContext) -> HeaderValue {
    const FITS: &str = "the ids fit their hex width";
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex::encode_to_slice(context.trace_id.to_be_bytes(), &mut text[3..35]).expect(FITS);
    hex::encode_to_slice(context.span_id.to_be_bytes(), &mut text[36..52]).expect(FITS);
    if context.sampled.unwrap_or(false) {
        text[54] = b'1';
    }
    unique_value(
        HeaderValue::from_bytes(&text).expect("hex digits and dashes make a valid header value"),
    )
}

/// Marks a header value that is new on every request as sensitive, which HTTP/2 sends as a
/// literal kept out of the HPACK tables: added there, it would be added on every request
/// at both ends and push out the entries that repeat, which would then be sent in full.
fn unique_value(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Parses a W3C `traceparent` (version 00, or a later version read as 00 would be).
/// The specification allows lowercase hex only. Every field has a fixed width, so the
/// fields are read at their positions (every inbound request parses one).
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    let value = value.trim_ascii();
    // `vv-` + 32 + `-` + 16 + `-` + `ff`: 55 bytes; a later version may add `-...`.
    if value.len() < TRACEPARENT_LEN || [2, 35, 52].iter().any(|&dash| value[dash] != b'-') {
        return None;
    }
    let (fields, rest) = value.split_at(TRACEPARENT_LEN);
    let version = lower_hex(&fields[..2])?;
    if version == 0xff
        || (version == 0 && !rest.is_empty())
        || rest.first().is_some_and(|&byte| byte != b'-')
        || rest.iter().any(u8::is_ascii_uppercase)
    {
        return None;
    }
    let flags = lower_hex(&fields[53..55])?;
    Some(SpanContext {
        trace_id: lower_hex(&fields[3..35]).filter(|&id| id != 0)?,
        span_id: lower_hex(&fields[36..52])
            .filter(|&id| id != 0)
            .and_then(|id| u64::try_from(id).ok())?,
        sampled: Some(flags & 1 == 1),
        tracestate: None,
    })
}

/// Up to 32 lowercase hex digits as a number; `None` at any other byte.
fn lower_hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// Parses `b3: {trace id}-{span id}[-{sampling}[-{parent span id}]]`. A lone sampling
/// decision (`b3: 0`) carries no context and reads as none.
pub fn parse_b3_single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = hex_id::<u64>(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(flag) => Some(b3_sampled(flag)?),
    };
    if let Some(parent) = parts.next() {
        hex_id::<u64>(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(SpanContext {
        trace_id,
        span_id,
        sampled,
        tracestate: None,
    })
}

/// Parses the `X-B3-TraceId`/`X-B3-SpanId`/`X-B3-Sampled`/`X-B3-Flags` set.
pub fn parse_b3_multi(headers: &HeaderMap) -> Option<SpanContext> {
    let trace_id = b3_trace_id(header_str(headers, &B3_TRACE_ID)?)?;
    let span_id = hex_id::<u64>(header_str(headers, &B3_SPAN_ID)?)?;
    let debug = header_str(headers, &B3_FLAGS) == Some("1");
    let sampled = match header_str(headers, &B3_SAMPLED) {
        _ if debug => Some(true),
        None => None,
        Some(flag) => Some(b3_sampled(flag)?),
    };
    Some(SpanContext {
        trace_id,
        span_id,
        sampled,
        tracestate: None,
    })
}

/// Parent-based sampling for a span of ours: follow the caller's decision when it made
/// one, else sample `ratio` of new traces by the trace id (the same rule as
/// OpenTelemetry's `TraceIdRatioBased`, so every proxy decides alike for one trace).
pub fn sample(parent: Option<&SpanContext>, trace_id: u128, ratio: f64) -> bool {
    if let Some(sampled) = parent.and_then(|parent| parent.sampled) {
        return sampled;
    }
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    // The low 63 bits of the id against the ratio of 2^63; the float product is exact
    // enough for a sampling threshold.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    #[allow(clippy::cast_possible_truncation)]
    let low = (trace_id as u64) >> 1;
    low < bound
}

fn b3_trace_id(value: &str) -> Option<u128> {
    match value.len() {
        16 => hex_id::<u64>(value).map(u128::from),
        _ => hex_id::<u128>(value),
    }
}

fn b3_sampled(flag: &str) -> Option<bool> {
    match flag {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A lowercase-or-uppercase hex id of exactly its type's width that is not all zeros.
fn hex_id<T: FromHex + PartialEq + Default>(digits: impl AsRef<[u8]>) -> Option<T> {
    T::from_hex(digits.as_ref()).filter(|id| *id != T::default())
}

/// `N` bytes from exactly `2 * N` hex digits.
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    hex::decode_to_slice(digits, &mut bytes).ok()?;
    Some(bytes)
}

trait FromHex: Sized {
    fn from_hex(digits: &[u8]) -> Option<Self>;
}

impl FromHex for u64 {
    fn from_hex(digits: &[u8]) -> Option<Self> {
        hex_bytes(digits).map(Self::from_be_bytes)
    }
}

impl FromHex for u128 {
    fn from_hex(digits: &[u8]) -> Option<Self> {
        hex_bytes(digits).map(Self::from_be_bytes)
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Takes over the text's buffer rather than copying it; the value is unique to the request
/// (see [`unique_value`]).
fn header_value(text: String) -> HeaderValue {
    unique_value(
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .expect("hex digits and dashes make a valid header value"),
    )
}

#[cfg(test)]
mod tests;
