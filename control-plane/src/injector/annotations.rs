//! The `seam.io/*` annotations a pod (template) may carry to steer injection, and their
//! parsing: a bad value is an error naming the annotation and the value, never a guess.

use std::collections::BTreeMap;

/// `enabled` injects the pod even where its namespace is not enabled; `disabled` opts out.
pub const INJECT: &str = "seam.io/inject";
/// Written on every pod the injector meshed: the version of Seam that did it.
pub const INJECTED: &str = "seam.io/injected";
/// Written by the webhook on a pod it left alone: why.
pub const INJECT_SKIPPED: &str = "seam.io/inject-skipped";
/// The service name the proxy reports in telemetry (default: the workload's name).
pub const SERVICE: &str = "seam.io/service";
/// `"false"`: the proxy runs as a classic sidecar (clusters older than 1.29).
pub const NATIVE_SIDECAR: &str = "seam.io/native-sidecar";
/// Inbound ports that reach the app directly (`22,8000-8100`).
pub const SKIP_INBOUND_PORTS: &str = "seam.io/skip-inbound-ports";
/// Outbound ports the app reaches directly (`5432,9000-9100`).
pub const SKIP_OUTBOUND_PORTS: &str = "seam.io/skip-outbound-ports";
/// The proxy's resources.
pub const PROXY_CPU_REQUEST: &str = "seam.io/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "seam.io/proxy-memory-request";
pub const PROXY_CPU_LIMIT: &str = "seam.io/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT: &str = "seam.io/proxy-memory-limit";

/// An annotation whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {name}: {value:?} {reason}")]
pub struct BadAnnotation {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// What `seam.io/inject` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectChoice {
    Enabled,
    Disabled,
    Unset,
}

/// A pod's annotations, read.
pub struct Annotations<'a>(pub &'a BTreeMap<String, String>);

impl Annotations<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|value| value.trim())
    }

    fn bad(name: &'static str, value: &str, reason: &str) -> BadAnnotation {
        BadAnnotation {
            name,
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }

    pub fn inject(&self) -> Result<InjectChoice, BadAnnotation> {
        match self.get(INJECT) {
            None => Ok(InjectChoice::Unset),
            Some("enabled") => Ok(InjectChoice::Enabled),
            Some("disabled") => Ok(InjectChoice::Disabled),
            Some(other) => Err(Self::bad(INJECT, other, "is not enabled or disabled")),
        }
    }

    pub fn service(&self) -> Option<&str> {
        self.get(SERVICE).filter(|name| !name.is_empty())
    }

    /// `None` when the annotation is absent: the settings decide.
    pub fn native_sidecar(&self) -> Result<Option<bool>, BadAnnotation> {
        match self.get(NATIVE_SIDECAR) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(Self::bad(NATIVE_SIDECAR, other, "is not true or false")),
        }
    }

    /// A port list, normalised (`22, 8000-8100` → `22,8000-8100`); `None` when absent or empty.
    pub fn ports(&self, name: &'static str) -> Result<Option<String>, BadAnnotation> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !valid_port_entry(entry) {
                return Err(Self::bad(
                    name,
                    value,
                    &format!("has {entry:?}, which is not a port (1-65535) or a range LOW-HIGH"),
                ));
            }
            entries.push(entry);
        }
        Ok((!entries.is_empty()).then(|| entries.join(",")))
    }

    /// A resource quantity (`10m`, `1`, `256Mi`), or `default` when absent.
    pub fn quantity(&self, name: &'static str, default: &str) -> Result<String, BadAnnotation> {
        match self.get(name) {
            None => Ok(default.to_owned()),
            Some(value) if valid_quantity(value) => Ok(value.to_owned()),
            Some(value) => Err(Self::bad(
                name,
                value,
                "is not a Kubernetes quantity (such as 100m, 1, 64Mi or 1Gi)",
            )),
        }
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|port| *port != 0)
}

fn valid_port_entry(entry: &str) -> bool {
    match entry.split_once('-') {
        None => parse_port(entry).is_some(),
        Some((low, high)) => match (parse_port(low.trim()), parse_port(high.trim())) {
            (Some(low), Some(high)) => low <= high,
            _ => false,
        },
    }
}

/// Kubernetes' quantity grammar: a decimal number and an optional SI, binary or exponent suffix.
fn valid_quantity(text: &str) -> bool {
    let number_end = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '+' || *c == '-'))
        .map_or(text.len(), |(index, _)| index);
    let (number, suffix) = text.split_at(number_end);
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let number_ok = !unsigned.is_empty()
        && unsigned.chars().filter(|c| *c == '.').count() <= 1
        && unsigned.chars().any(|c| c.is_ascii_digit())
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.');
    let suffix_ok = match suffix {
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            true
        }
        exponent => exponent
            .strip_prefix(['e', 'E'])
            .is_some_and(|digits| digits.parse::<i32>().is_ok()),
    };
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(name.to_owned(), value.to_owned())])
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for good in ["10m", "1", "0.5", "256Mi", "1Gi", "1e3", "100k"] {
            assert!(valid_quantity(good), "{good}");
        }
        for bad in ["", "ten", "10 m", "1.2.3", "Mi", "5MB", "1x"] {
            assert!(!valid_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn port_lists_are_checked_and_normalised() {
        let map = with(SKIP_INBOUND_PORTS, "22, 8000-8100,");
        assert_eq!(
            Annotations(&map).ports(SKIP_INBOUND_PORTS),
            Ok(Some("22,8000-8100".to_owned()))
        );
        for bad in ["0", "70000", "90-80", "ssh", "1-"] {
            let map = with(SKIP_OUTBOUND_PORTS, bad);
            let err = Annotations(&map).ports(SKIP_OUTBOUND_PORTS).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("annotation seam.io/skip-outbound-ports:"),
                "{err}"
            );
        }
    }

    #[test]
    fn inject_takes_enabled_or_disabled_only() {
        let map = with(INJECT, "yes");
        assert_eq!(
            Annotations(&map).inject().unwrap_err().to_string(),
            "annotation seam.io/inject: \"yes\" is not enabled or disabled"
        );
    }
}
