//! The control-plane runs as a markdown table (stdout) and as JSON (`--json FILE`):
//! convergence percentiles per kind of change and over all of them, updates and bytes
//! the proxies received, the control plane's memory and CPU per change, and the
//! sustained phase's memory and ACKs.

use std::fmt::Write;

use serde_json::{Value, json};

use super::phases::{Convergence, Sustained};

/// One `--proxies` value's results.
pub struct Run {
    pub proxies: usize,
    pub services: usize,
    pub endpoints: usize,
    pub subscriptions: usize,
    pub connect_seconds: f64,
    pub one: Convergence,
    pub many: Convergence,
    pub all: Convergence,
    pub cp_peak_rss: u64,
    pub cp_rss_connected: u64,
    pub cp_cpu_ms_per_change: f64,
    /// The sustained phase and the control plane's CPU seconds during it.
    pub sustained: Option<(Sustained, f64)>,
    pub streams_ended: u64,
}

impl Run {
    /// Proxy updates that never arrived, over every phase.
    pub fn unconverged(&self) -> usize {
        self.one.unconverged
            + self.many.unconverged
            + self.all.unconverged
            + self
                .sustained
                .as_ref()
                .map_or(0, |(sustained, _)| sustained.unconverged)
    }

    fn combined(&self) -> Vec<f64> {
        [&self.one, &self.many, &self.all]
            .iter()
            .flat_map(|kind| kind.samples_ms.iter().copied())
            .collect()
    }
}

/// p50, p99 and max of `samples` (nearest rank), in milliseconds.
fn percentiles(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank =
        |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    (!sorted.is_empty()).then(|| (rank(0.50), rank(0.99), *sorted.last().unwrap_or(&0.0)))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn convergence_json(samples: &[f64]) -> Value {
    match percentiles(samples) {
        Some((p50, p99, max)) => json!({"p50": p50, "p99": p99, "max": max}),
        None => Value::Null,
    }
}

fn kind_json(kind: &Convergence) -> Value {
    let seconds = kind.busy.as_secs_f64();
    json!({
        "changes": kind.changes,
        "convergence_ms": convergence_json(&kind.samples_ms),
        "unconverged": kind.unconverged,
        "updates": kind.updates,
        "bytes": kind.bytes,
        "pushes_per_second": if seconds > 0.0 { kind.updates as f64 / seconds } else { 0.0 },
    })
}

pub fn json(runs: &[Run]) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|run| {
            let sustained = run.sustained.as_ref().map(|(sustained, cpu)| {
                json!({
                    "seconds": sustained.seconds,
                    "changes": sustained.changes,
                    "cp_rss_mib_samples": sustained.rss_mib,
                    "cp_cpu_seconds": cpu,
                    "acks_recorded": sustained.acks,
                    "unconverged": sustained.unconverged,
                })
            });
            json!({
                "proxies": run.proxies,
                "services": run.services,
                "endpoints": run.endpoints,
                "subscriptions_per_proxy": run.subscriptions,
                "convergence_ms": convergence_json(&run.combined()),
                "one_service": kind_json(&run.one),
                "many_services": kind_json(&run.many),
                "all_services": kind_json(&run.all),
                "cp_peak_rss_mib": mib(run.cp_peak_rss),
                "cp_rss_connected_mib": mib(run.cp_rss_connected),
                "cp_kib_per_proxy": run.cp_rss_connected as f64 / 1024.0 / run.proxies.max(1) as f64,
                "cp_cpu_ms_per_change": run.cp_cpu_ms_per_change,
                "connect_seconds": run.connect_seconds,
                "streams_ended": run.streams_ended,
                "sustained": sustained,
            })
        })
        .collect();
    json!({ "runs": runs })
}

fn cell(samples: &[f64]) -> String {
    match percentiles(samples) {
        Some((p50, p99, max)) => format!("{p50:.0} / {p99:.0} / {max:.0}"),
        None => "–".into(),
    }
}

pub fn table(runs: &[Run]) -> String {
    let mut text = String::from(
        "\n| proxies | services | endpoints | one service p50/p99/max ms | 10% of services | \
         all services | updates/s (all) | MiB to proxies (all) | CP RSS connected / peak MiB | \
         KiB per proxy | CP CPU ms per change | sustained: changes, RSS first→last MiB, ACKs | \
         unconverged |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let all_seconds = run.all.busy.as_secs_f64();
        let sustained = match &run.sustained {
            Some((sustained, _)) => format!(
                "{} in {:.0} s, {:.0}→{:.0}, {:.0}",
                sustained.changes,
                sustained.seconds,
                sustained.rss_mib.first().copied().unwrap_or(0.0),
                sustained.rss_mib.last().copied().unwrap_or(0.0),
                sustained.acks
            ),
            None => "–".into(),
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} / {:.0} | {:.1} | {:.1} | {} | {} |",
            run.proxies,
            run.services,
            run.endpoints,
            cell(&run.one.samples_ms),
            cell(&run.many.samples_ms),
            cell(&run.all.samples_ms),
            if all_seconds > 0.0 {
                run.all.updates as f64 / all_seconds
            } else {
                0.0
            },
            mib(run.all.bytes),
            mib(run.cp_rss_connected),
            mib(run.cp_peak_rss),
            run.cp_rss_connected as f64 / 1024.0 / run.proxies.max(1) as f64,
            run.cp_cpu_ms_per_change,
            sustained,
            run.unconverged(),
        );
    }
    text
}
