//! The Grafana dashboard in `deploy/grafana/seam-dashboard.json`, as tests read it: every
//! PromQL expression it runs (panel targets and template variable queries) and the Seam
//! metric names those use.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// `deploy/` at the root of the repository.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The dashboard, parsed.
pub fn load() -> anyhow::Result<Value> {
    let path = deploy_dir().join("grafana/seam-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Every PromQL expression in the dashboard: targets' `expr` and variables' `definition`.
pub fn expressions(dashboard: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect(dashboard, &mut found);
    found
}

fn collect(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(expr)) => found.push(expr.clone()),
                    _ => collect(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, found)),
        _ => {}
    }
}

/// The `seam_*` metric names an expression uses.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("seam_") {
        let preceded_by_word = rest[..start]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// An expression as Prometheus itself can run it: Grafana's variables replaced.
pub fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$service", ".*")
}

/// The sample names in a text exposition.
pub fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metric_names_in_promql() {
        let names = metric_names(
            "sum by (le) (rate(seam_request_duration_seconds_bucket[1m])) / seam_up - my_seam_y",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["seam_request_duration_seconds_bucket", "seam_up"]
        );
        assert_eq!(
            sample_names("# HELP x\nseam_a{b=\"1\"} 2\nseam_c 3\n")
                .into_iter()
                .collect::<Vec<_>>(),
            ["seam_a", "seam_c"]
        );
    }
}
