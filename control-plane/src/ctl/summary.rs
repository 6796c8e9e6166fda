//! The demo's once-a-second report, kept free of sockets so it can be tested: what one
//! request through the chain told us (`Outcome`), the outcomes of the last second
//! (`Window`), percentiles, and the text printed for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::sample_app::Answer;

/// One service along the chain and the identity its proxy said called it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub service: String,
    pub caller: Option<String>,
}

/// What one request of the demo's traffic came back with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub latency: Duration,
    /// The hops the answer walked through, outermost first (possibly partial on failure).
    pub hops: Vec<Hop>,
    /// Why the request failed, if it did.
    pub error: Option<String>,
}

impl Outcome {
    /// Reads a sample app's answer: success needs a 200 and no hop reporting an error.
    pub fn from_response(latency: Duration, status: u16, body: &[u8]) -> Self {
        let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
            let text = String::from_utf8_lossy(body);
            return Self::failed(latency, format!("{status} {}", text.trim()));
        };
        let mut hops = Vec::new();
        let mut error = None;
        let mut current = Some(&answer);
        while let Some(hop) = current {
            hops.push(Hop {
                service: hop.service.clone(),
                caller: hop.caller.clone(),
            });
            // The deepest error is the one that names the hop that broke.
            if hop.error.is_some() {
                error.clone_from(&hop.error);
            }
            current = hop.next.as_deref();
        }
        if error.is_none() && status != 200 {
            error = Some(format!("answered {status}"));
        }
        Self {
            latency,
            hops,
            error,
        }
    }

    pub fn failed(latency: Duration, reason: String) -> Self {
        Self {
            latency,
            hops: Vec::new(),
            error: Some(reason),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// The outcomes completed since the last report, plus running totals.
#[derive(Debug, Default)]
pub struct Window {
    outcomes: Vec<Outcome>,
    pub total: u64,
    pub total_ok: u64,
}

/// One second's numbers, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub requests: usize,
    pub ok: usize,
    pub total: u64,
    pub total_ok: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// service → callers seen for it, in chain order.
    pub identities: Vec<(String, Vec<String>)>,
    /// failure reason → how many times, most frequent first.
    pub errors: Vec<(String, usize)>,
}

impl Window {
    pub fn record(&mut self, outcome: Outcome) {
        self.total += 1;
        if outcome.succeeded() {
            self.total_ok += 1;
        }
        self.outcomes.push(outcome);
    }

    /// Summarizes the outcomes since the last call and starts a new second.
    pub fn take_report(&mut self) -> Report {
        let outcomes = std::mem::take(&mut self.outcomes);
        let mut latencies: Vec<Duration> = outcomes
            .iter()
            .filter(|outcome| outcome.succeeded())
            .map(|outcome| outcome.latency)
            .collect();
        latencies.sort_unstable();

        let mut identities: Vec<(String, Vec<String>)> = Vec::new();
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for outcome in &outcomes {
            for hop in &outcome.hops {
                let Some(caller) = &hop.caller else { continue };
                let position = match identities.iter().position(|(s, _)| *s == hop.service) {
                    Some(position) => position,
                    None => {
                        identities.push((hop.service.clone(), Vec::new()));
                        identities.len() - 1
                    }
                };
                let callers = &mut identities[position].1;
                if !callers.contains(caller) {
                    callers.push(caller.clone());
                }
            }
            if let Some(reason) = &outcome.error {
                *errors.entry(reason.clone()).or_default() += 1;
            }
        }
        let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
        errors.sort_by_key(|(_, count)| std::cmp::Reverse(*count));

        Report {
            requests: outcomes.len(),
            ok: latencies.len(),
            total: self.total,
            total_ok: self.total_ok,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            identities,
            errors,
        }
    }
}

/// The nearest-rank percentile (`quantile` in (0, 1]) of latencies sorted ascending.
pub fn percentile(sorted: &[Duration], quantile: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least `quantile` of the samples at or below.
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `0.84ms`, `12.3ms`, `1.25s`: short, and precise where a mesh's latencies live.
pub fn format_latency(latency: Option<Duration>) -> String {
    let Some(latency) = latency else {
        return "-".to_owned();
    };
    let millis = latency.as_secs_f64() * 1000.0;
    if millis < 10.0 {
        format!("{millis:.2}ms")
    } else if millis < 1000.0 {
        format!("{millis:.1}ms")
    } else {
        format!("{:.2}s", latency.as_secs_f64())
    }
}

fn format_rate(ok: u64, total: u64) -> String {
    if total == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", ok as f64 * 100.0 / total as f64)
}

impl Report {
    /// The lines printed for one second: numbers first, then who called whom, then errors.
    pub fn render(&self, elapsed_secs: u64) -> String {
        let mut text = format!(
            "[{elapsed_secs:>4}s] {requests:>3} req in the last second  total {total:<6} ok {rate:>6}  p50 {p50:>7}  p99 {p99:>7}",
            requests = self.requests,
            total = self.total,
            rate = format_rate(self.ok as u64, self.requests as u64),
            p50 = format_latency(self.p50),
            p99 = format_latency(self.p99),
        );
        if !self.identities.is_empty() {
            let chain: Vec<String> = self
                .identities
                .iter()
                .map(|(service, callers)| format!("{service} ← {}", callers.join(", ")))
                .collect();
            let _ = write!(text, "\n        {}", chain.join("  ·  "));
        }
        for (reason, count) in self.errors.iter().take(3) {
            let _ = write!(text, "\n        error ×{count}: {reason}");
        }
        text
    }

    /// The closing line once the demo stops.
    pub fn render_final(&self) -> String {
        if self.total == 0 {
            return "No request completed.".to_owned();
        }
        format!(
            "{} requests in total, {} ok ({})",
            self.total,
            self.total_ok,
            format_rate(self.total_ok, self.total)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), Some(ms(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(ms(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(ms(100)));
        assert_eq!(percentile(&[ms(7)], 0.5), Some(ms(7)));
        assert_eq!(percentile(&[ms(7)], 0.99), Some(ms(7)));
        assert_eq!(percentile(&[ms(1), ms(2), ms(3)], 0.5), Some(ms(2)));
        assert_eq!(percentile(&[ms(1), ms(2), ms(3)], 0.99), Some(ms(3)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn latency_formats_by_magnitude() {
        assert_eq!(format_latency(None), "-");
        assert_eq!(format_latency(Some(Duration::from_micros(840))), "0.84ms");
        assert_eq!(
            format_latency(Some(Duration::from_micros(12_340))),
            "12.3ms"
        );
        assert_eq!(format_latency(Some(ms(1250))), "1.25s");
    }

    const CHAIN: &str = r#"{"service":"loadgen","caller":null,"next":{"service":"front",
        "caller":"spiffe://seam.local/ns/default/sa/loadgen","next":{"service":"middle",
        "caller":"spiffe://seam.local/ns/default/sa/front","next":{"service":"back",
        "caller":"spiffe://seam.local/ns/default/sa/middle"}}}}"#;

    #[test]
    fn outcome_reads_the_chain_and_the_deepest_error() {
        let ok = Outcome::from_response(ms(3), 200, CHAIN.as_bytes());
        assert!(ok.succeeded());
        let services: Vec<&str> = ok.hops.iter().map(|hop| hop.service.as_str()).collect();
        assert_eq!(services, ["loadgen", "front", "middle", "back"]);
        assert_eq!(ok.hops[0].caller, None);

        let broken = r#"{"service":"loadgen","caller":null,"next":{"service":"front",
            "caller":"spiffe://seam.local/ns/default/sa/loadgen",
            "error":"front → middle: 503 no endpoints for middle"}}"#;
        let failed = Outcome::from_response(ms(3), 502, broken.as_bytes());
        assert_eq!(
            failed.error.as_deref(),
            Some("front → middle: 503 no endpoints for middle")
        );
        assert_eq!(failed.hops.len(), 2);

        let text = Outcome::from_response(ms(1), 503, b"unknown service front\n");
        assert_eq!(text.error.as_deref(), Some("503 unknown service front"));
    }

    #[test]
    fn report_counts_the_last_second_and_renders_identities() {
        let mut window = Window::default();
        for latency in [2, 4, 6] {
            window.record(Outcome::from_response(ms(latency), 200, CHAIN.as_bytes()));
        }
        window.record(Outcome::failed(ms(2000), "timeout after 2s".into()));
        let report = window.take_report();
        assert_eq!((report.requests, report.ok, report.total), (4, 3, 4));
        assert_eq!(report.p50, Some(ms(4)));
        assert_eq!(report.p99, Some(ms(6)));
        assert_eq!(report.errors, vec![("timeout after 2s".to_owned(), 1)]);
        assert_eq!(
            report.render(3),
            "[   3s]   4 req in the last second  total 4      ok  75.0%  p50  4.00ms  p99  6.00ms\n        \
             front ← spiffe://seam.local/ns/default/sa/loadgen  ·  \
             middle ← spiffe://seam.local/ns/default/sa/front  ·  \
             back ← spiffe://seam.local/ns/default/sa/middle\n        \
             error ×1: timeout after 2s"
        );
        assert_eq!(report.render_final(), "4 requests in total, 3 ok (75.0%)");

        let next = window.take_report();
        assert_eq!((next.requests, next.total, next.total_ok), (0, 4, 3));
        assert_eq!(next.p50, None);
        assert!(
            next.render(4)
                .ends_with("ok      -  p50       -  p99       -")
        );
    }
}
