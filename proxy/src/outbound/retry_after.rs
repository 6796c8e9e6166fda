//! How long a `429`'s `retry-after` asks a client to wait (RFC 9110 §10.2.3): whole
//! seconds, or an HTTP-date (a date already past means no wait). Anything else is no
//! answer, and the retry layer waits its own backoff.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// The wait `headers` ask for, as seen at `now`.
pub fn wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        // More digits than a u64 holds is a wait longer than any timeout.
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().unwrap());
        headers
    }

    #[test]
    fn reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let cases = [
            ("3", Some(Duration::from_secs(3))),
            (" 0 ", Some(Duration::ZERO)),
            (
                "99999999999999999999999",
                Some(Duration::from_secs(u64::MAX)),
            ),
            // 21 Oct 2015 07:28:00 GMT is `now`; two seconds later, and a date past.
            (
                "Wed, 21 Oct 2015 07:28:02 GMT",
                Some(Duration::from_secs(2)),
            ),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
            ("-1", None),
            ("soon", None),
            ("1.5", None),
        ];
        for (value, expected) in cases {
            assert_eq!(wait(&headers(value), now), expected, "{value:?}");
        }
        assert_eq!(wait(&HeaderMap::new(), now), None);
    }
}
