//! Correlation ids: `x-request-id`. The first meshed proxy a request meets makes sure it
//! has a sane one (the caller's outbound; the callee's inbound when the caller is not
//! meshed): an id the app sent is kept when it is 1 to 128 bytes of `[A-Za-z0-9._~:+/=-]`,
//! else replaced. A new id is 128 random bits from the thread-local RNG as 32 lowercase
//! hex digits, written on the stack: the header value is its only allocation. Every proxy
//! passes the id on unchanged, and telemetry records it (`request_id` in the access log,
//! `seam.request_id` on spans). A service with `request_id: false` is left alone.
//!
//! The id is marked sensitive, which HTTP/2 encodes as a literal never added to the
//! HPACK tables: a value that differs on every request would otherwise be added to the
//! sending and receiving proxy's header table on every request and push out the entries
//! that do repeat (`:authority`, `user-agent`, ...), which then travel as literals again.

use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept.
const MAX_LEN: usize = 128;

/// Makes sure `headers` carry one sane id, keeping the app's when it is sane.
pub fn ensure(headers: &mut HeaderMap) {
    match headers.entry(&HEADER) {
        Entry::Occupied(mut sent) => {
            let mut values = sent.iter();
            let sane = matches!(
                (values.next(), values.next()),
                (Some(value), None) if is_sane(value.as_bytes())
            );
            if sane {
                sent.get_mut().set_sensitive(true);
            } else {
                tracing::debug!(
                    "replacing an x-request-id that is not 1 to 128 safe characters, or not one"
                );
                sent.insert(generate());
            }
        }
        Entry::Vacant(none) => {
            none.insert(generate());
        }
    }
}

/// 1 to 128 bytes of letters, digits and `._~:+/=-`.
fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || b"._~:+/=-".contains(&byte))
}

/// A new id: 128 random bits as 32 lowercase hex digits.
fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>();
    let mut text = [0u8; 32];
    for (index, digit) in text.iter_mut().enumerate() {
        let nibble = (bits >> (124 - 4 * index)) & 0xf;
        *digit = HEX[nibble as usize];
    }
    let mut value = HeaderValue::from_bytes(&text).expect("hex digits are a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn ids(headers: &HeaderMap) -> Vec<Vec<u8>> {
        headers
            .get_all(&HEADER)
            .iter()
            .map(|value| value.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn a_sane_id_is_kept_and_anything_else_replaced() {
        let long = [b'a'; 128];
        let kept: [&[u8]; 4] = [
            b"req-42",
            b"0f8fad5b-d9cb-469f-a165-70867728950e",
            b"a.b_c~d:e+f/g=h",
            &long,
        ];
        for id in kept {
            let mut headers = with(&[id]);
            ensure(&mut headers);
            assert_eq!(ids(&headers), [id.to_vec()]);
            assert!(
                headers[&HEADER].is_sensitive(),
                "kept {id:?} stays in HPACK tables"
            );
        }
        let too_long = [b'a'; 129];
        let replaced: [&[&[u8]]; 5] = [
            &[],
            &[b""],
            &[b"has space"],
            &[&too_long],
            &[b"one", b"two"],
        ];
        for values in replaced {
            let mut headers = with(values);
            ensure(&mut headers);
            assert!(
                headers[&HEADER].is_sensitive(),
                "a new id goes into HPACK tables"
            );
            let ids = ids(&headers);
            assert_eq!(ids.len(), 1, "{values:?}");
            assert_eq!(ids[0].len(), 32, "{values:?}");
            assert!(
                ids[0]
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
                "{:?}",
                String::from_utf8_lossy(&ids[0])
            );
        }
    }

    #[test]
    fn new_ids_differ() {
        assert_ne!(generate(), generate());
    }
}
