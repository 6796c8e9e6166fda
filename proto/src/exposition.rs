//! How both binaries answer `GET /metrics`: `prometheus-client` writes OpenMetrics, which
//! Prometheus asks for in its `Accept` header; any other client (curl, `promtool check
//! metrics`, older scrapers) gets the classic text format 0.0.4, where a counter's HELP
//! and TYPE lines name the `_total` series and there are no UNIT or EOF lines.

use std::collections::HashSet;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type and body to answer with, given the request's `Accept` header.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (&'static str, String) {
    if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
        (OPENMETRICS_CONTENT_TYPE, openmetrics)
    } else {
        (TEXT_CONTENT_TYPE, to_text_format(&openmetrics))
    }
}

/// Rewrites an OpenMetrics exposition (as `prometheus-client` writes it) in the classic
/// Prometheus text format.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match metadata {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{kind}{name}{suffix} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP seam_requests Requests.\n\
        # TYPE seam_requests counter\n\
        seam_requests_total{status=\"200\"} 3\n\
        # HELP seam_request_duration_seconds Latency.\n\
        # TYPE seam_request_duration_seconds histogram\n\
        # UNIT seam_request_duration_seconds seconds\n\
        seam_request_duration_seconds_sum 0.5\n\
        # HELP seam_up Up.\n\
        # TYPE seam_up gauge\n\
        seam_up 1\n\
        # EOF\n";

    #[test]
    fn counters_are_named_by_their_total_series_and_openmetrics_lines_go() {
        let text = to_text_format(OPENMETRICS);
        assert_eq!(
            text,
            "# HELP seam_requests_total Requests.\n\
             # TYPE seam_requests_total counter\n\
             seam_requests_total{status=\"200\"} 3\n\
             # HELP seam_request_duration_seconds Latency.\n\
             # TYPE seam_request_duration_seconds histogram\n\
             seam_request_duration_seconds_sum 0.5\n\
             # HELP seam_up Up.\n\
             # TYPE seam_up gauge\n\
             seam_up 1\n"
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
        let (content_type, body) = negotiate(OPENMETRICS.into(), Some(prometheus));
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert_eq!(body, OPENMETRICS);
        for accept in [None, Some("*/*"), Some("text/plain")] {
            let (content_type, body) = negotiate(OPENMETRICS.into(), accept);
            assert_eq!(content_type, TEXT_CONTENT_TYPE, "{accept:?}");
            assert!(!body.contains("# EOF"), "{accept:?}");
        }
    }
}
