//! `seam-bench tcp-load`: the load generator of the opaque TCP scenario, which no packaged
//! tool speaks (see `tcp_exchange`). Like oha and wrk for the HTTP scenarios it runs as a
//! process of its own, started pinned to the load CPU, and prints one JSON report on
//! stdout:
//!
//! - `fixed-rate` (`open_loop`): the latency of every request at a fixed rate, each timed
//!   from when it was due rather than when it was sent, over a few persistent
//!   connections;
//! - `max` (`closed_loop`): the most round trips 64 persistent connections get answered
//!   in a fixed time.
//!
//! The bench's side, which starts it and reads its report into the same results as the
//! HTTP scenarios', is at the bottom.

mod closed_loop;
mod open_loop;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::contenders::pinned_command;
use crate::load::{self, LatencySamples, ThroughputRun};

/// Connections the fixed rate is spread over: a few, so one that waits on a slow answer
/// leaves others free to send the requests due meanwhile.
const OPEN_LOOP_CONNECTIONS: u32 = 8;
/// Connections of the closed loop, as `wrk` runs for HTTP/1.1.
const CLOSED_LOOP_CONNECTIONS: u32 = 64;
/// How long a connect or an answer may take before it counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Subcommand)]
pub enum Run {
    /// Open loop: `requests` requests at `rate` per second, every latency reported.
    FixedRate {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        requests: u64,
        #[arg(long, default_value_t = OPEN_LOOP_CONNECTIONS)]
        connections: u32,
    },
    /// Closed loop: as many round trips as are answered in `duration`.
    Max {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = CLOSED_LOOP_CONNECTIONS)]
        connections: u32,
    },
}

/// What a `fixed-rate` run saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FixedRateReport {
    /// The requests that were due (those never sent count as unanswered).
    pub due: u64,
    /// Nanoseconds from each answered request's due time to the end of its answer.
    pub latencies_ns: Vec<u64>,
    /// Why requests got no answer, with how many each.
    pub errors: BTreeMap<String, u64>,
}

/// What a `max` run saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClosedLoopReport {
    /// Round trips answered.
    pub answered: u64,
    /// From the first request to the last answer.
    pub seconds: f64,
    /// Failed round trips, by why.
    pub errors: BTreeMap<String, u64>,
}

/// Runs the load `run` describes and prints its report as one line of JSON.
pub fn run(run: &Run) -> anyhow::Result<()> {
    let report = match *run {
        Run::FixedRate {
            target,
            rate,
            requests,
            connections,
        } => serde_json::to_string(&open_loop::run(&open_loop::Plan {
            target,
            rate,
            requests,
            connections,
        })?)?,
        Run::Max {
            target,
            duration,
            connections,
        } => serde_json::to_string(&closed_loop::run(&closed_loop::Plan {
            target,
            duration,
            connections,
        })?)?,
    };
    println!("{report}");
    Ok(())
}

/// Counts one failure under a short description of `err`.
fn count_error(errors: &mut BTreeMap<String, u64>, err: &std::io::Error) {
    let described = match err.kind() {
        // A blocking socket's timeout shows as "would block"; say what it means here.
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {REQUEST_TIMEOUT:?}")
        }
        _ => err.to_string(),
    };
    *errors.entry(described).or_default() += 1;
}

/// Adds `from`'s counts into `into`.
fn merge_errors(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (error, count) in from {
        *into.entry(error).or_default() += count;
    }
}

/// The bench's side of a `fixed-rate` run: `requests` requests at `rate` per second to
/// `target`, from a `tcp-load` process pinned to `cpus`.
pub async fn fixed_rate(
    target: SocketAddr,
    rate: u32,
    requests: u64,
    cpus: Option<&str>,
) -> anyhow::Result<LatencySamples> {
    let mut command = pinned_command(std::env::current_exe()?, cpus);
    command
        .args(["tcp-load", "fixed-rate"])
        .args(["--target", &target.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--requests", &requests.to_string()]);
    let duration = Duration::from_secs_f64(requests as f64 / f64::from(rate.max(1)));
    let output = load::run(command, duration).await?;
    let report: FixedRateReport = serde_json::from_str(output.trim())
        .with_context(|| format!("tcp-load printed: {}", load::excerpt(&output)))?;
    Ok(samples(report))
}

fn samples(report: FixedRateReport) -> LatencySamples {
    LatencySamples {
        sent: report.due,
        latencies_ms: report
            .latencies_ns
            .iter()
            .map(|nanos| *nanos as f64 / 1e6)
            .collect(),
        statuses: BTreeMap::new(),
        errors: report.errors,
    }
}

/// The bench's side of a `max` run: closed loop to `target` for `duration`, from a
/// `tcp-load` process pinned to `cpus`.
pub async fn max_throughput(
    target: SocketAddr,
    duration: Duration,
    cpus: Option<&str>,
) -> anyhow::Result<ThroughputRun> {
    let mut command = pinned_command(std::env::current_exe()?, cpus);
    command
        .args(["tcp-load", "max"])
        .args(["--target", &target.to_string()])
        .args([
            "--duration",
            &humantime::format_duration(duration).to_string(),
        ]);
    let output = load::run(command, duration).await?;
    let report: ClosedLoopReport = serde_json::from_str(output.trim())
        .with_context(|| format!("tcp-load printed: {}", load::excerpt(&output)))?;
    throughput(&report)
}

fn throughput(report: &ClosedLoopReport) -> anyhow::Result<ThroughputRun> {
    anyhow::ensure!(
        report.seconds > 0.0,
        "tcp-load ran for {} s",
        report.seconds
    );
    Ok(ThroughputRun::once(
        report.answered as f64 / report.seconds,
        report.errors.values().sum(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_the_http_scenarios_results() {
        let samples = samples(FixedRateReport {
            due: 3,
            latencies_ns: vec![1_500_000, 250_000],
            errors: BTreeMap::from([("connection reset by peer".to_string(), 1)]),
        });
        assert_eq!(samples.latencies_ms, [1.5, 0.25]);
        assert_eq!(samples.sent, 3);
        let run = load::LatencyRun::combine(vec![samples]).unwrap();
        assert_eq!((run.requests, run.failures), (2, 1));
        assert!(
            run.failure_detail.contains("connection reset by peer"),
            "{}",
            run.failure_detail
        );

        let report = ClosedLoopReport {
            answered: 5000,
            seconds: 2.0,
            errors: BTreeMap::from([("no answer within 5s".to_string(), 2)]),
        };
        let run = throughput(&report).unwrap();
        assert_eq!((run.rps, run.failures), (2500.0, 2));
        assert!(throughput(&ClosedLoopReport::default()).is_err());
    }

    #[test]
    fn the_subcommand_reads_what_the_bench_passes() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            run: Run,
        }
        let cli = Cli::try_parse_from([
            "tcp-load",
            "max",
            "--target",
            "127.0.0.1:9",
            "--duration",
            &humantime::format_duration(Duration::from_millis(2500)).to_string(),
        ])
        .unwrap();
        let Run::Max {
            duration,
            connections,
            ..
        } = cli.run
        else {
            panic!("{cli:?}");
        };
        assert_eq!(duration, Duration::from_millis(2500));
        assert_eq!(connections, CLOSED_LOOP_CONNECTIONS);
    }
}
