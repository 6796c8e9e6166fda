//! The numbers `seamctl stat` (and `seamctl demo`) show, kept free of sockets so they can
//! be tested: proxies' `/metrics` text is read into a `Snapshot` of request counters and
//! latency histograms per service (as its inbound proxies counted them) and per
//! caller → callee edge (as the caller's outbound proxy counted them); two snapshots give
//! success rate, requests per second and p50/p95/p99 over the time between them,
//! with percentiles interpolated inside histogram buckets the way Prometheus's
//! `histogram_quantile` does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::summary::format_latency;

/// A row of the table: a service, or a caller → callee edge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKey {
    Service(String),
    Edge { caller: String, callee: String },
}

/// Cumulative counts of one row at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counts {
    requests: f64,
    successes: f64,
    /// Histogram buckets: upper bound (`le`) → cumulative count.
    buckets: Vec<(f64, f64)>,
}

impl Counts {
    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, total)) => *total += count,
            None => self.buckets.push((le, count)),
        }
    }
}

/// Every row's counters as scraped at one moment, summed over proxies.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    rows: BTreeMap<RowKey, Counts>,
}

impl Snapshot {
    /// Adds one proxy's `/metrics` (text format); `service` is the service it fronts.
    pub fn add_proxy(&mut self, service: &str, exposition: &str) {
        for sample in exposition.lines().filter_map(parse_sample) {
            let label = |name: &str| {
                sample
                    .labels
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.as_str())
            };
            let Some(target) = label("service") else {
                continue;
            };
            let key = match label("direction") {
                Some("inbound") => RowKey::Service(target.to_owned()),
                Some("outbound") => RowKey::Edge {
                    caller: service.to_owned(),
                    callee: target.to_owned(),
                },
                _ => continue,
            };
            let counts = self.rows.entry(key).or_default();
            match sample.name.as_str() {
                "seam_requests_total" => {
                    counts.requests += sample.value;
                    // The proxy labels a registered code as itself, another 5xx as
                    // `5xx` and a code outside 100-599 as `other`: all three can fail.
                    let status = label("status").unwrap_or_default();
                    let server_failed = status.starts_with('5') || status == "other";
                    let grpc_ok = matches!(label("grpc_status"), None | Some("" | "0"));
                    if !server_failed && grpc_ok {
                        counts.successes += sample.value;
                    }
                }
                "seam_request_duration_seconds_bucket" => {
                    let le = match label("le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(bound) => match bound.parse() {
                            Ok(bound) => bound,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    counts.add_bucket(le, sample.value);
                }
                _ => {}
            }
        }
    }
}

/// One row's numbers over an interval.
#[derive(Clone, Debug, PartialEq)]
pub struct RowStats {
    pub key: RowKey,
    /// Successes / requests, when there were requests.
    pub success_rate: Option<f64>,
    pub requests_per_second: f64,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

/// The numbers between two snapshots taken `elapsed` apart. A counter that went down
/// (a restarted proxy) counts from zero.
pub fn compare(before: &Snapshot, after: &Snapshot, elapsed: Duration) -> Vec<RowStats> {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let empty = Counts::default();
    after
        .rows
        .iter()
        .map(|(key, now)| {
            let then = before.rows.get(key).unwrap_or(&empty);
            let reset = now.requests < then.requests;
            let then = if reset { &empty } else { then };
            let requests = now.requests - then.requests;
            let successes = now.successes - then.successes;
            let mut buckets: Vec<(f64, f64)> = now
                .buckets
                .iter()
                .map(|(le, count)| {
                    let earlier = then
                        .buckets
                        .iter()
                        .find(|(bound, _)| bound == le)
                        .map_or(0.0, |(_, count)| *count);
                    (*le, (count - earlier).max(0.0))
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            RowStats {
                key: key.clone(),
                success_rate: (requests > 0.0).then(|| successes / requests),
                requests_per_second: requests / seconds,
                p50: quantile(&buckets, 0.50),
                p95: quantile(&buckets, 0.95),
                p99: quantile(&buckets, 0.99),
            }
        })
        .collect()
}

/// The `q` quantile of a cumulative histogram sorted by bound, interpolating linearly
/// inside the bucket it falls in (Prometheus's `histogram_quantile`); a quantile in the
/// `+Inf` bucket is the highest finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<Duration> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (bound, count) in buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return Some(Duration::from_secs_f64(lower));
            }
            let share = if *count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(Duration::from_secs_f64(lower + (bound - lower) * share));
        }
        lower = *bound;
        below = *count;
    }
    Some(Duration::from_secs_f64(lower))
}

/// The table: services first, then edges, each section sorted by name.
pub fn render(rows: &[RowStats]) -> String {
    let mut text = String::new();
    let services: Vec<&RowStats> = rows
        .iter()
        .filter(|row| matches!(row.key, RowKey::Service(_)))
        .collect();
    let edges: Vec<&RowStats> = rows
        .iter()
        .filter(|row| matches!(row.key, RowKey::Edge { .. }))
        .collect();
    section(&mut text, "SERVICE", &services);
    text.push('\n');
    section(&mut text, "CALLER → CALLEE", &edges);
    text
}

fn section(text: &mut String, title: &str, rows: &[&RowStats]) {
    let name = |row: &RowStats| match &row.key {
        RowKey::Service(service) => service.clone(),
        RowKey::Edge { caller, callee } => format!("{caller} → {callee}"),
    };
    let width = rows
        .iter()
        .map(|row| name(row).chars().count())
        .chain([title.chars().count()])
        .max()
        .unwrap_or(0);
    let pad = |cell: &str| {
        let fill = width.saturating_sub(cell.chars().count());
        format!("{cell}{}", " ".repeat(fill))
    };
    let _ = writeln!(
        text,
        "{}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        pad(title),
        "SUCCESS",
        "RPS",
        "P50",
        "P95",
        "P99"
    );
    if rows.is_empty() {
        let _ = writeln!(text, "(no traffic yet)");
    }
    for row in rows {
        let success = row
            .success_rate
            .map_or_else(|| "-".to_owned(), |rate| format!("{:.2}%", rate * 100.0));
        let _ = writeln!(
            text,
            "{}  {:>8}  {:>8.1}  {:>8}  {:>8}  {:>8}",
            pad(&name(row)),
            success,
            row.requests_per_second,
            format_latency(row.p50),
            format_latency(row.p95),
            format_latency(row.p99),
        );
    }
}

/// One sample line of the text format: `name{label="value",...} value`.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(open) => (&line[..open], &line[open + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample {
                name: name.to_owned(),
                labels: Vec::new(),
                value: parse_value(value)?,
            });
        }
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_owned();
        if key.starts_with('}') {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.push((key, value));
        match chars.next()? {
            ',' => {
                if chars.as_str().starts_with('}') {
                    chars.next();
                    break;
                }
            }
            '}' => break,
            _ => return None,
        }
    }
    let value = chars.as_str().split_whitespace().next()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text.trim() {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.split_whitespace().next()?.parse().ok(),
    }
}

#[cfg(test)]
mod tests;
