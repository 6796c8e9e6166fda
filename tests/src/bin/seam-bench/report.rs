//! The results as markdown (stdout) and as JSON (`--json FILE`): first Seam against the
//! best peer on each figure of each scenario, held to the data path's goal, then a table
//! per scenario. Ratios compare Seam with each peer (below 1 is better for Seam everywhere
//! except maximum throughput; "–" where a side is not positive); "added" latency is the
//! contender's percentile minus `direct`'s.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::load::{LatencyRun, Mode, Percentiles, ThroughputRun};
use crate::measure::{Measured, Outcome, Results, Scenario, Unmeasured};

/// One table row's numbers (None: not measured).
#[derive(Default)]
struct Row {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    added_p50: Option<f64>,
    added_p99: Option<f64>,
    max_rps: Option<f64>,
    cpu: Option<f64>,
    rss: Option<f64>,
}

/// The results of `mode` that ran.
fn runs(measured: &Measured, mode: Mode) -> (Option<&LatencyRun>, Option<&ThroughputRun>) {
    let scenario = measured.scenario(mode);
    (scenario.latency.as_ref().ok(), scenario.max.as_ref().ok())
}

/// What went wrong in `mode`, if anything.
fn problems(measured: &Measured, mode: Mode) -> Vec<String> {
    let scenario = measured.scenario(mode);
    let mut problems = Vec::new();
    match &scenario.latency {
        Err(err) => problems.push(format!("fixed rate: {err}")),
        Ok(run) if run.failures > 0 => problems.push(format!(
            "fixed rate: {} of {} requests failed ({})",
            run.failures, run.requests, run.failure_detail
        )),
        Ok(_) => {}
    }
    match &scenario.max {
        Err(err) => problems.push(format!("max throughput: {err}")),
        Ok(run) if run.failures > 0 => {
            problems.push(format!("max throughput: {} requests failed", run.failures))
        }
        Ok(_) => {}
    }
    problems
}

fn row(measured: &Measured, direct: Option<&Measured>, mode: Mode) -> Row {
    let (latency, max) = runs(measured, mode);
    let baseline = direct.and_then(|direct| runs(direct, mode).0);
    let added = |pick: fn(&Percentiles) -> f64| -> Option<f64> {
        Some(pick(&latency?.latency_ms) - pick(&baseline?.latency_ms))
    };
    let scenario = measured.scenario(mode);
    Row {
        p50: latency.map(|run| run.latency_ms.p50),
        p90: latency.map(|run| run.latency_ms.p90),
        p99: latency.map(|run| run.latency_ms.p99),
        p999: latency.map(|run| run.latency_ms.p999),
        added_p50: added(|p| p.p50),
        added_p99: added(|p| p.p99),
        max_rps: max.map(|run| run.rps),
        cpu: scenario.cpu_ms_per_1k,
        rss: scenario.peak_rss_mib,
    }
}

fn measured<'a>(results: &'a Results, name: &str) -> Option<&'a Measured> {
    results
        .contenders
        .iter()
        .find(|(contender, _)| *contender == name)
        .and_then(|(_, outcome)| match outcome {
            Outcome::Measured(measured) => Some(measured.as_ref()),
            _ => None,
        })
}

pub fn markdown(results: &Results) -> String {
    let setup = &results.setup;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## seam-bench: two hops, mTLS between them, 1 KiB responses\n\n\
         Machine: {} × {}, Linux {}. Load generator on CPU {}, hops and upstream on CPU {} \
         (one worker thread per hop).\n\
         Latency: oha, open loop at {} requests/s, corrected for coordinated omission, \
         for {:?} in HTTP/1.1 and {:?} otherwise, split into {} rounds; each percentile is the \
         median of the rounds'. Max throughput: wrk (HTTP/1.1) / h2load (HTTP/2), closed \
         loop, {:?}, the median of {} rounds. Opaque TCP: a 64-byte request and a 1 KiB \
         answer per round trip on persistent connections, driven by the bench's own load \
         generator in the same way (open loop from each request's due time; closed loop on \
         64 connections, {:?} a round), on a second pair of hop processes. The contenders \
         take turns in every round of every scenario (the proxies in a rotating order, then \
         direct). CPU: user + system time of the hop processes per 1,000 requests at the \
         fixed rate. RSS: peak of the largest hop process (the HTTP path's over all three \
         HTTP scenarios, shown with HTTP/1.1; the TCP path's).",
        setup.cores,
        setup.cpu_model,
        setup.kernel,
        setup.pinning.load.as_deref().unwrap_or("any"),
        setup.pinning.hops.as_deref().unwrap_or("any"),
        setup.rate,
        setup.durations.latency,
        setup.durations.other,
        setup.durations.latency_rounds,
        setup.durations.throughput,
        setup.durations.throughput_rounds,
        setup.durations.tcp_throughput,
    );
    for (tool, version) in &setup.versions {
        let _ = writeln!(out, "- {tool}: {version}");
    }
    out.push_str(&against_the_best_peer(results));
    let direct = measured(results, "direct");
    for (title, mode) in [
        ("HTTP/1.1, keep-alive (headline)", Mode::Http1),
        ("HTTP/2 (h2c into hop 1)", Mode::Http2),
        (
            "HTTP/1.1, a new connection per request",
            Mode::NewConnection,
        ),
        (
            "Opaque TCP (64-byte request, 1 KiB answer, persistent connections)",
            Mode::Tcp,
        ),
    ] {
        let _ = writeln!(
            out,
            "\n### {title}\n\n\
             | contender | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | max rps | CPU ms / 1k req | peak RSS MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let mut rows = Vec::new();
        for (name, outcome) in &results.contenders {
            match outcome {
                Outcome::Measured(measured) => {
                    let numbers = row(measured, direct, mode);
                    let _ = writeln!(out, "| {name} | {} |", cells(&numbers).join(" | "));
                    rows.push((*name, numbers));
                }
                Outcome::Missing(install) => {
                    let _ = writeln!(out, "| {name} | missing: `{install}` |||||||||");
                }
                Outcome::Failed(reason) => {
                    let _ = writeln!(out, "| {name} | failed: {} |||||||||", one_line(reason));
                }
                Outcome::Skipped => {}
            }
        }
        let find = |name: &str| rows.iter().find(|(row, _)| *row == name).map(|(_, r)| r);
        if let Some(seam) = find("seam") {
            for peer in ["haproxy", "nginx"] {
                if let Some(other) = find(peer) {
                    let ratio = ratio_row(seam, other);
                    let _ = writeln!(
                        out,
                        "| seam / {peer} | {} |",
                        cells_ratio(&ratio).join(" | ")
                    );
                }
            }
        }
        for (name, outcome) in &results.contenders {
            if let Outcome::Measured(measured) = outcome {
                for problem in problems(measured, mode) {
                    let _ = writeln!(out, "\n- {name}: {}", one_line(&problem));
                }
            }
        }
    }
    out.push_str(&at_fixed_rate(results));
    out.push_str(&at_saturation(results));
    out
}

/// Seam and the peers that ran, in the order of the goal table.
fn proxies(results: &Results) -> Vec<(&'static str, &Measured)> {
    std::iter::once("seam")
        .chain(PEERS)
        .filter_map(|name| Some((name, measured(results, name)?)))
        .collect()
}

/// One row per scenario and one column per proxy, each cell from `cell` (or a dash).
fn per_scenario_table(
    heading: &str,
    proxies: &[(&str, &Measured)],
    cell: impl Fn(&Measured, Mode) -> Option<String>,
) -> String {
    let mut out = format!("{heading}\n\n| scenario |");
    for (name, _) in proxies {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(proxies.len()));
    out.push('\n');
    for goal in &GOALS {
        let _ = write!(out, "| {} |", goal.title);
        for (_, measured) in proxies {
            let cell = cell(measured, goal.mode).unwrap_or_else(|| "–".to_string());
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// The hops' context switches per request in the fixed-rate runs: each request wakes
/// every hop at least once on the way in and once on the way back, and each wake-up and
/// preemption is kernel work inside the fixed-rate CPU per request.
fn at_fixed_rate(results: &Results) -> String {
    let proxies = proxies(results);
    if proxies.is_empty() {
        return String::new();
    }
    per_scenario_table(
        "\n### At the fixed rate\n\n\
         The hop processes' context switches per request during the fixed-rate runs: slept \
         (woken by the next event) + preempted (the shared core taken away).",
        &proxies,
        switches_cell,
    )
}

/// A fixed-rate switches cell: slept + preempted, per request.
fn switches_cell(measured: &Measured, mode: Mode) -> Option<String> {
    let switches = measured.scenario(mode).switches?;
    Some(format!("{:.2} + {:.2}", switches.slept, switches.preempted))
}

/// The hops' CPU per request and context switches per request in the throughput rounds:
/// at saturation the three processes on the shared core take turns, and how often they
/// switch decides the figure as much as their work does (compare the fixed-rate CPU).
fn at_saturation(results: &Results) -> String {
    let proxies = proxies(results);
    if proxies.is_empty() {
        return String::new();
    }
    per_scenario_table(
        "\n### At saturation\n\n\
         The hop processes during the maximum-throughput rounds (medians): CPU ms per \
         1,000 requests / context switches per request / the kernel's share of that CPU \
         (from clock ticks, sound here because the core is busy throughout).",
        &proxies,
        |measured, mode| {
            let saturation = runs(measured, mode).1?.saturation?;
            let kernel = saturation
                .kernel_share
                .map_or_else(|| "–".to_owned(), |share| format!("{:.0} %", share * 100.0));
            Some(format!(
                "{:.1} / {:.2} / {kernel}",
                saturation.cpu_ms_per_1k, saturation.switches_per_request
            ))
        },
    )
}

/// The peers Seam is held against.
const PEERS: [&str; 2] = ["haproxy", "nginx"];
/// Maximum throughput at least this many times the best peer's.
const RPS_GOAL: f64 = 1.1;
/// Where CPU per request has a goal: at most this many times the best peer's.
const CPU_GOAL: f64 = 0.8;
/// Where memory has a goal: the largest hop's peak RSS at most this.
const RSS_GOAL_MIB: f64 = 16.0;

/// One scenario's goal: added p99 at or below the best peer's and throughput at least
/// [`RPS_GOAL`] times the best peer's everywhere; CPU and memory where `resources` is set
/// (the HTTP/1.1 headline and opaque TCP, where the bench measures each path's own RSS).
struct Goal {
    mode: Mode,
    title: &'static str,
    resources: bool,
}

const GOALS: [Goal; 4] = [
    Goal {
        mode: Mode::Http1,
        title: "HTTP/1.1, keep-alive",
        resources: true,
    },
    Goal {
        mode: Mode::Http2,
        title: "HTTP/2 (h2c into hop 1)",
        resources: false,
    },
    Goal {
        mode: Mode::NewConnection,
        title: "HTTP/1.1, new connection per request",
        resources: false,
    },
    Goal {
        mode: Mode::Tcp,
        title: "opaque TCP",
        resources: true,
    },
];

/// Seam against the best peer on each figure (the lowest added p99, the highest
/// throughput, the lowest CPU per request, each peer's own), with the goal and whether
/// it was met.
fn against_the_best_peer(results: &Results) -> String {
    let Some(seam) = measured(results, "seam") else {
        return String::new();
    };
    let direct = measured(results, "direct");
    let mut out = format!(
        "\n### Seam against the best peer\n\n\
         Goal: added p99 at or below the best peer's, max rps at least {RPS_GOAL}× the best \
         peer's; for HTTP/1.1 keep-alive and opaque TCP also CPU per request at most \
         {CPU_GOAL}× the best peer's and peak RSS at most {RSS_GOAL_MIB} MiB.\n\n\
         | scenario | added p99 ms: Seam / best peer | max rps: Seam / best peer | CPU ms per 1k: Seam / best peer | peak RSS MiB: Seam | goal |\n\
         |---|---|---|---|---|---|\n"
    );
    for goal in &GOALS {
        let ours = row(seam, direct, goal.mode);
        let peers: Vec<(&str, Row)> = PEERS
            .iter()
            .filter_map(|&name| Some((name, row(measured(results, name)?, direct, goal.mode))))
            .collect();
        let best = |pick: fn(&Row) -> Option<f64>, lower_is_better: bool| {
            peers
                .iter()
                .filter_map(|(name, row)| Some((*name, pick(row)?)))
                .reduce(|a, b| if (b.1 < a.1) == lower_is_better { b } else { a })
        };
        let mut missed = Vec::new();
        let mut judge = |figure: &'static str, met: Option<bool>| {
            if met != Some(true) {
                missed.push(figure);
            }
        };
        let p99 = compare(ours.added_p99, best(|r| r.added_p99, true), 3);
        judge("p99", p99.pair.map(|(ours, best)| ours <= best));
        let rps = compare(ours.max_rps, best(|r| r.max_rps, false), 0);
        judge("rps", rps.pair.map(|(ours, best)| ours >= RPS_GOAL * best));
        let cpu = compare(ours.cpu, best(|r| r.cpu, true), 1);
        let rss = ours
            .rss
            .map_or_else(|| "–".to_string(), |rss| format!("{rss:.1}"));
        if goal.resources {
            judge("CPU", cpu.pair.map(|(ours, best)| ours <= CPU_GOAL * best));
            judge("RSS", ours.rss.map(|rss| rss <= RSS_GOAL_MIB));
        }
        let verdict = if missed.is_empty() {
            "met".to_string()
        } else {
            format!("missed: {}", missed.join(", "))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {rss} | {verdict} |",
            goal.title, p99.cell, rps.cell, cpu.cell
        );
    }
    out
}

/// Seam's figure beside the best peer's, as a table cell and as numbers (None when
/// either is missing).
struct Compared {
    cell: String,
    pair: Option<(f64, f64)>,
}

fn compare(ours: Option<f64>, best: Option<(&str, f64)>, digits: usize) -> Compared {
    let (Some(ours), Some((peer, theirs))) = (ours, best) else {
        return Compared {
            cell: "–".to_string(),
            pair: None,
        };
    };
    // An added latency can be at or below zero: no ratio then, only the numbers.
    let ratio = if ours > 0.0 && theirs > 0.0 {
        format!(", {:.2}×", ours / theirs)
    } else {
        String::new()
    };
    Compared {
        cell: format!("{ours:.digits$} / {theirs:.digits$} ({peer}{ratio})"),
        pair: Some((ours, theirs)),
    }
}

fn one_line(text: &str) -> String {
    let line = text.replace('\n', " ");
    line.chars().take(300).collect()
}

fn cells(row: &Row) -> Vec<String> {
    let number = |value: Option<f64>, digits: usize| {
        value.map_or_else(|| "–".to_string(), |value| format!("{value:.digits$}"))
    };
    vec![
        number(row.p50, 3),
        number(row.p90, 3),
        number(row.p99, 3),
        number(row.p999, 3),
        number(row.added_p50, 3),
        number(row.added_p99, 3),
        number(row.max_rps, 0),
        number(row.cpu, 1),
        number(row.rss, 1),
    ]
}

fn ratio_row(seam: &Row, other: &Row) -> Row {
    // Only positive quantities make a ratio (an "added" latency can come out at or below
    // zero when the baseline's own tail was worse).
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(a / b),
        _ => None,
    };
    Row {
        p50: ratio(seam.p50, other.p50),
        p90: ratio(seam.p90, other.p90),
        p99: ratio(seam.p99, other.p99),
        p999: ratio(seam.p999, other.p999),
        added_p50: ratio(seam.added_p50, other.added_p50),
        added_p99: ratio(seam.added_p99, other.added_p99),
        max_rps: ratio(seam.max_rps, other.max_rps),
        cpu: ratio(seam.cpu, other.cpu),
        rss: ratio(seam.rss, other.rss),
    }
}

fn cells_ratio(row: &Row) -> Vec<String> {
    let values = [
        row.p50,
        row.p90,
        row.p99,
        row.p999,
        row.added_p50,
        row.added_p99,
        row.max_rps,
        row.cpu,
        row.rss,
    ];
    values
        .iter()
        .map(|value| value.map_or_else(|| "–".to_string(), |value| format!("{value:.2}×")))
        .collect()
}

/// `{"machine": ..., "settings": ..., "contenders": {"direct": {...}, "seam": {...}, ...}}`.
pub fn json(results: &Results) -> Value {
    let setup = &results.setup;
    let direct = measured(results, "direct");
    let mut contenders = serde_json::Map::new();
    for (name, outcome) in &results.contenders {
        let value = match outcome {
            Outcome::Measured(measured) => contender_json(name, measured, direct),
            Outcome::Missing(install) => json!({ "missing": true, "install": install }),
            Outcome::Failed(reason) => json!({ "failed": reason }),
            Outcome::Skipped => continue,
        };
        contenders.insert((*name).to_string(), value);
    }
    json!({
        "machine": {
            "cores": setup.cores,
            "cpu_model": setup.cpu_model,
            "kernel": setup.kernel,
        },
        "settings": {
            "rate_rps": setup.rate,
            "latency_seconds": setup.durations.latency.as_secs_f64(),
            "throughput_seconds": setup.durations.throughput.as_secs_f64(),
            "tcp_throughput_seconds": setup.durations.tcp_throughput.as_secs_f64(),
            "throughput_rounds": setup.durations.throughput_rounds,
            "latency_rounds": setup.durations.latency_rounds,
            "load_cpus": setup.pinning.load,
            "hop_cpus": setup.pinning.hops,
            "versions": setup.versions,
        },
        "contenders": contenders,
    })
}

fn contender_json(name: &str, measured: &Measured, direct: Option<&Measured>) -> Value {
    let scenario_json = |mode: Mode| {
        let (latency, max) = runs(measured, mode);
        let numbers = row(measured, direct, mode);
        let mut value = json!({
            "latency_ms": latency.map(|run| json!(run.latency_ms)),
            "latency_ms_rounds": latency.map(|run| json!(run.rounds)),
            "max_rps": max.map(|run| run.rps),
            "max_rps_rounds": max.map(|run| run.rounds.clone()),
            "max_cpu_ms_per_1k": max.and_then(|run| run.saturation).map(|s| s.cpu_ms_per_1k),
            "max_switches_per_request": max
                .and_then(|run| run.saturation)
                .map(|s| s.switches_per_request),
            "max_kernel_share": max
                .and_then(|run| run.saturation)
                .and_then(|s| s.kernel_share),
            "requests": latency.map(|run| run.requests),
            "failures": latency.map(|run| run.failures) .unwrap_or(0)
                + max.map_or(0, |run| run.failures),
        });
        if name != "direct" {
            value["added_latency_ms"] = json!({
                "p50": numbers.added_p50,
                "p99": numbers.added_p99,
            });
        }
        if name != "direct" {
            let scenario = measured.scenario(mode);
            value["cpu_ms_per_1k_requests"] = json!(scenario.cpu_ms_per_1k);
            value["switches_per_request"] = json!(scenario.switches.map(|switches| json!({
                "slept": switches.slept,
                "preempted": switches.preempted,
            })));
            if mode.opens_its_path() {
                value["peak_rss_mib"] = json!(scenario.peak_rss_mib);
            }
        }
        let problems = problems(measured, mode);
        if !problems.is_empty() {
            value["problems"] = json!(problems);
        }
        add_unmeasured(&mut value, measured.scenario(mode));
        value
    };
    let mut value = scenario_json(Mode::Http1);
    value["http2"] = scenario_json(Mode::Http2);
    value["new_connection"] = scenario_json(Mode::NewConnection);
    value["tcp"] = scenario_json(Mode::Tcp);
    value
}

/// Lists the measurements of `scenario` that have no result under `missing` (something
/// is not installed) or `failed`, so a reader of the JSON (CI) sees a scenario that did
/// not run as plainly as a contender that did not.
fn add_unmeasured(value: &mut Value, scenario: &Scenario) {
    for (what, result) in [
        ("fixed rate", scenario.latency.as_ref().err()),
        ("max throughput", scenario.max.as_ref().err()),
    ] {
        let (key, reason) = match result {
            None => continue,
            Some(Unmeasured::Missing(reason)) => ("missing", reason),
            Some(Unmeasured::Failed(reason)) => ("failed", reason),
        };
        if !value[key].is_array() {
            value[key] = json!([]);
        }
        if let Some(list) = value[key].as_array_mut() {
            list.push(json!(format!("{what}: {reason}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::SwitchRate;

    #[test]
    fn ratios_only_of_positive_numbers() {
        let seam = Row {
            max_rps: Some(200.0),
            added_p99: Some(0.5),
            cpu: Some(10.0),
            ..Row::default()
        };
        let peer = Row {
            max_rps: Some(100.0),
            added_p99: Some(-0.1),
            cpu: Some(0.0),
            ..Row::default()
        };
        let ratio = ratio_row(&seam, &peer);
        assert_eq!(ratio.max_rps, Some(2.0));
        assert_eq!(ratio.added_p99, None);
        assert_eq!(ratio.cpu, None);
        assert_eq!(ratio.p50, None);
    }

    #[test]
    fn seam_is_compared_with_the_best_peer_on_each_figure() {
        let p99 = compare(Some(0.2), Some(("nginx", 0.1)), 3);
        assert_eq!(p99.cell, "0.200 / 0.100 (nginx, 2.00×)");
        assert_eq!(p99.pair, Some((0.2, 0.1)));
        let below_zero = compare(Some(0.2), Some(("haproxy", -0.1)), 3);
        assert_eq!(below_zero.cell, "0.200 / -0.100 (haproxy)");
        let missing = compare(None, Some(("nginx", 1.0)), 1);
        assert_eq!((missing.cell.as_str(), missing.pair), ("–", None));
    }

    #[test]
    fn the_fixed_rate_table_gives_each_proxy_its_switches_or_a_dash() {
        let mut seam = Measured::new();
        seam.scenario_mut(Mode::Http1).switches = Some(SwitchRate {
            slept: 3.444,
            preempted: 1.65,
        });
        let nginx = Measured::new();
        let table = per_scenario_table(
            "### heading",
            &[("seam", &seam), ("nginx", &nginx)],
            switches_cell,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[2], "| scenario | seam | nginx |");
        assert_eq!(lines[3], "|---|---:|---:|");
        assert_eq!(lines[4], "| HTTP/1.1, keep-alive | 3.44 + 1.65 | – |");
        assert_eq!(lines[5], "| HTTP/2 (h2c into hop 1) | – | – |");
        assert_eq!(lines.len(), 4 + GOALS.len());
    }

    #[test]
    fn a_scenario_that_did_not_run_says_missing_or_failed() {
        let scenario = Scenario {
            latency: Err(Unmeasured::Missing(
                "oha is not installed: cargo install oha".into(),
            )),
            max: Err(Unmeasured::Failed("wrk exited with 1".into())),
            cpu_ms_per_1k: None,
            switches: None,
            peak_rss_mib: None,
        };
        let mut value = json!({});
        add_unmeasured(&mut value, &scenario);
        assert_eq!(
            value,
            json!({
                "missing": ["fixed rate: oha is not installed: cargo install oha"],
                "failed": ["max throughput: wrk exited with 1"],
            })
        );
    }
}
