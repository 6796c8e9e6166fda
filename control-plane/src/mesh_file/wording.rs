//! Saying a mesh file's YAML and shape errors in Seam's words. The YAML library reports
//! what its own types expected (`invalid u32`, `expected sequence start`,
//! `duplicate mapping key: api, set DuplicateKeyPolicy in Options`); a user needs the key
//! (as a path they can find in the file: `services.api.retries.attempts`), the value they
//! wrote, and what the key takes. The key path comes from tracking the path while
//! deserializing; the value is read back from the file at the error's position.

use serde_saphyr::Error;

/// Maps of names, whose keys are the user's own (a service called `value` stays).
const NAME_MAPS: [&str; 2] = ["services", "headers"];

/// The error `error`, met at `raw_path` while reading `text`, in Seam's words (without
/// the position, which the caller puts first).
pub fn describe(error: &Error, raw_path: &str, text: &str) -> String {
    let path = key_path(raw_path);
    let error = error.without_snippet();
    let written = || {
        error
            .location()
            .map_or_else(String::new, |at| value_at(text, at.line(), at.column()))
    };
    match error {
        Error::InvalidScalar { .. }
        | Error::SerdeInvalidType { .. }
        | Error::SerdeInvalidValue { .. }
        | Error::Unexpected { .. }
        | Error::InvalidBooleanStrict { .. }
        | Error::NullIntoString { .. } => {
            let value = written();
            let value = if value.is_empty() {
                "empty".to_owned()
            } else {
                value
            };
            format!("{} is {value}; expected {}", shown(&path), accepts(&path))
        }
        Error::SerdeUnknownField {
            field, expected, ..
        } => {
            let parent = parent_of(&path);
            let hint = closest(field, expected)
                .map(|near| format!(" (did you mean {near}?)"))
                .unwrap_or_default();
            format!(
                "{} has no key {field:?}{hint}; its keys are {}",
                shown(&parent),
                expected.join(", ")
            )
        }
        Error::SerdeMissingField { field, .. } => match path.as_slice() {
            [services, name] if services == "services" => {
                format!("service {name:?} has no {field}, which every service needs")
            }
            _ => format!("{} has no {field}, which it needs", shown(&path)),
        },
        Error::DuplicateMappingKey { key, .. } => {
            let key = key.clone().unwrap_or_else(written);
            match path.first().map(String::as_str) {
                Some("services") if path.len() == 1 => {
                    format!("service {key:?} is listed twice (the second time here)")
                }
                _ => format!(
                    "{} gives {key:?} twice (the second time here)",
                    shown(&path)
                ),
            }
        }
        Error::SerdeInvalidLength { .. } => {
            format!(
                "{} is {}; expected {}",
                shown(&path),
                written(),
                accepts(&path)
            )
        }
        other => {
            let message = without_position(&other.to_string());
            if message.contains("tab") {
                "a line is indented with a tab; YAML indentation must be spaces".to_owned()
            } else {
                format!("the file is not valid YAML: {message}")
            }
        }
    }
}

/// The YAML parser ends its messages with the position, which the error already leads
/// with.
pub(crate) fn without_position(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((reason, position))
            if position.contains(", column ")
                && position
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b", column".contains(&b)) =>
        {
            reason.to_owned()
        }
        _ => message.to_owned(),
    }
}

/// The path serde saw, as the user writes it: the wrappers that carry positions add a
/// `value` step after each element they wrap, which is not a key of the file.
fn key_path(raw: &str) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    let mut after_name_map = false;
    for step in raw
        .split('.')
        .filter(|step| !step.is_empty() && *step != "?")
    {
        if step == "value" && !after_name_map {
            continue;
        }
        after_name_map = NAME_MAPS.contains(&step);
        path.push(step.to_owned());
    }
    path
}

fn parent_of(path: &[String]) -> Vec<String> {
    path[..path.len().saturating_sub(1)].to_vec()
}

/// A path as the message shows it.
fn shown(path: &[String]) -> String {
    match path {
        [] => "the mesh file".to_owned(),
        [services, name] if services == "services" => format!("service {name:?}"),
        _ => path.join("."),
    }
}

/// The value written at `line`:`column` (1-based), as far as the scalar or the line goes.
fn value_at(text: &str, line: u64, column: u64) -> String {
    let Some(line_text) = usize::try_from(line)
        .ok()
        .and_then(|line| text.lines().nth(line.saturating_sub(1)))
    else {
        return String::new();
    };
    let start = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
    let Some(rest) = line_text.get(start..) else {
        return String::new();
    };
    let value = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => match rest[1..].find(quote) {
            Some(end) => &rest[..end + 2],
            None => rest,
        },
        Some('[' | '{') => rest.split(" #").next().unwrap_or(rest),
        _ => rest.split([',', '}', ']', '#']).next().unwrap_or(rest),
    };
    let value = value.trim();
    // A key where a scalar or a list was expected: the value is the map it starts.
    if value.ends_with(':')
        || value
            .split_once(": ")
            .is_some_and(|(key, _)| !key.contains(' '))
    {
        return "a map".to_owned();
    }
    if value.chars().count() > 60 {
        format!("{}…", value.chars().take(60).collect::<String>())
    } else {
        value.to_owned()
    }
}

/// What the key at `path` takes, for "expected ...".
fn accepts(path: &[String]) -> &'static str {
    let last = path.last().map(String::as_str).unwrap_or_default();
    let parent = path
        .len()
        .checked_sub(2)
        .and_then(|i| path.get(i))
        .map(String::as_str)
        .unwrap_or_default();
    match (parent, last) {
        (_, "services") => "a map of service names to their settings",
        ("services", _) => "a map of the service's settings (join_token, endpoints, ...)",
        ("headers", _) => "a header value, as text",
        (_, "attempts") => "a whole number from 0 to 10",
        (_, "budget_percent" | "max_ejection_percent") => "a whole number from 0 to 100",
        (_, "percent") => "a number from 0 to 100, like 10 or 0.5",
        (_, "status") => "an HTTP status from 200 to 599",
        (_, "grpc_status") => "a gRPC status from 1 to 16",
        (_, "fault") => "a map of delay and abort",
        (_, "delay") => "a map like { fixed: 200ms, percent: 10 }",
        (_, "abort") => "a map like { status: 503, percent: 5 } or { grpc_status: 14, percent: 5 }",
        (_, "mirror") => "a map like { service: api-v2, percent: 10 }",
        (_, "consecutive_failures" | "max_concurrent_requests") => "a whole number, at least 1",
        (_, "weight") => "a whole number, 0 or more",
        (_, "non_idempotent" | "allow_plaintext") => "true or false",
        (_, "timeout" | "per_try_timeout" | "base_ejection_time" | "fixed") => {
            "a duration like 500ms or 2s"
        }
        (_, "join_token") => "the service's join token, as text",
        (_, "trust_domain") => "the trust domain, as text",
        (_, "load_balancer") => "ewma or round_robin",
        (_, "endpoints") => {
            "a list of IP:port addresses or dns:NAME:PORT names, like [\"10.0.0.7:4143\", \
             \"dns:api:4143\"]"
        }
        (_, "ports") => "a list of ports, like [5432, { port: 80, target_port: 8080 }]",
        (_, "addresses") => "a list of IP:port addresses, like [\"10.96.0.20:80\"]",
        (_, "opaque_ports") => "a list of ports, like [3306]",
        (_, "port" | "target_port") => "a port from 1 to 65535",
        (_, "allow") => "a list of service names or spiffe:// ids, like [web]",
        (_, "on") => "a list of 5xx, connect-failure, reset and unavailable",
        (_, "routes") => "a list of routes, each with match and backends",
        (_, "backends") => "a list like [{ service: api, weight: 90 }]",
        (_, "retries") => {
            "a map of attempts, per_try_timeout, on, budget_percent and non_idempotent"
        }
        (_, "circuit_breaker") => {
            "a map of consecutive_failures, base_ejection_time and max_ejection_percent"
        }
        (_, "match") => "a map of path_prefix or path, method and headers",
        (_, "headers") => "a map of header names to values",
        (_, "method") => "an HTTP method, like GET",
        (_, "path" | "path_prefix") => "a path starting with /",
        (_, "service") => "the name of a service of this file",
        _ if last.starts_with("ports[") => {
            "a port from 1 to 65535, or a map like { port: 80, target_port: 8080 }"
        }
        _ if last.starts_with("opaque_ports[") => "a port from 1 to 65535",
        _ if last.starts_with("addresses[") => "an IP:port, like \"10.96.0.20:80\"",
        _ if last.starts_with('[') || last.ends_with(']') => "a list entry of the shape above",
        _ => "another value (see the mesh file reference in the README)",
    }
}

/// The expected key closest to `field`, if one is close enough to be a typo of it.
fn closest<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|candidate| (edit_distance(field, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.as_bytes().iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &y) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(x != y);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_the_files_own_keys() {
        let cases = [
            (
                "services.api.value.retries.value.attempts.value",
                "services.api.retries.attempts",
            ),
            (
                "services.value.value.join_token.value",
                "services.value.join_token",
            ),
            (
                "services.api.value.routes[0].value.match.value.headers.value.value",
                "services.api.routes[0].match.headers.value",
            ),
            ("services.?", "services"),
        ];
        for (raw, want) in cases {
            assert_eq!(key_path(raw).join("."), want, "{raw}");
        }
    }

    #[test]
    fn the_value_is_read_back_as_written() {
        let text = "a:\n  b: \"three\" # c\n  c: [x, y]\n  d: 2.5, e\n  f:   \n  g: { h: 1 }\n";
        assert_eq!(value_at(text, 2, 6), "\"three\"");
        assert_eq!(value_at(text, 3, 6), "[x, y]");
        assert_eq!(value_at(text, 4, 6), "2.5");
        assert_eq!(value_at(text, 5, 6), "");
        assert_eq!(value_at(text, 6, 3), "a map");
        assert_eq!(value_at(text, 9, 1), "");
    }

    #[test]
    fn a_typo_suggests_the_key_it_is_closest_to() {
        let keys = ["join_token", "endpoints", "timeout", "retries"];
        assert_eq!(closest("join_tokn", &keys), Some("join_token"));
        assert_eq!(closest("endpoint", &keys), Some("endpoints"));
        assert_eq!(closest("colour", &keys), None);
    }
}
