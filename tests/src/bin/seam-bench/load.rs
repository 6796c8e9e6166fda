//! The load generators, run as child processes pinned to the load CPU, and what we read
//! from their output.
//!
//! - Latency: `oha` at a fixed request rate with `--latency-correction`: open-loop, each
//!   request timed from when the schedule said it should start, so a stall counts against
//!   every request it delayed (no coordinated omission). oha is maintained, speaks
//!   HTTP/1.1 and HTTP/2, can open a connection per request, and prints every answered
//!   request's latency as CSV (the percentiles are ours, the same for every contender).
//! - Throughput: `wrk` (HTTP/1.1) and `h2load` (HTTP/2), closed-loop: as many requests as
//!   the path answers, on a fixed number of connections.
//!
//! The opaque TCP scenario has a load generator of its own (`tcp_load`), read into the
//! same kinds of results.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::contenders::{SERVICE_HOST, pinned_command};

/// Connections oha spreads the fixed rate over (HTTP/1.1: one request in flight each).
const LATENCY_CONNECTIONS: u32 = 32;
/// Connections for the closed-loop throughput runs.
const THROUGHPUT_CONNECTIONS: u32 = 64;
/// HTTP/2: connections and streams per connection.
const H2_CONNECTIONS: u32 = 4;
const H2_STREAMS: u32 = 16;

/// A load tool and the command that installs it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    pub install: &'static str,
}

pub const OHA: Tool = Tool {
    program: "oha",
    install: "cargo install oha --locked",
};
pub const WRK: Tool = Tool {
    program: "wrk",
    install: "apt-get install -y wrk",
};
pub const H2LOAD: Tool = Tool {
    program: "h2load",
    install: "apt-get install -y nghttp2-client",
};

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `latencies`; `None` when there are none.
    fn of(latencies: &mut [f64]) -> Option<Self> {
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_by(f64::total_cmp);
        let at = |fraction: f64| {
            let rank = (fraction * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        Some(Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
        })
    }
}

/// What one fixed-rate run saw: the latency of every answered request and the statuses.
#[derive(Clone, Debug, Default)]
pub struct LatencySamples {
    /// Requests sent (or due, where the tool counts those it never sent).
    pub sent: u64,
    /// Milliseconds from each answered request's scheduled start to its end.
    pub latencies_ms: Vec<f64>,
    /// Answered requests by HTTP status (none for opaque TCP, whose answers are all
    /// good: a wrong one counts as no answer).
    pub statuses: BTreeMap<u16, u64>,
    /// Why requests got no answer, where the tool says (oha's CSV does not).
    pub errors: BTreeMap<String, u64>,
}

/// The fixed-rate rounds of one contender in one scenario.
#[derive(Clone, Debug)]
pub struct LatencyRun {
    /// Each percentile's median over the rounds.
    pub latency_ms: Percentiles,
    /// The percentiles of each round.
    pub rounds: Vec<Percentiles>,
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests that failed or did not answer 200.
    pub failures: u64,
    /// The status codes seen and the requests without an answer, when some failed.
    pub failure_detail: String,
}

impl LatencyRun {
    /// The rounds as one result: each percentile is the median of the rounds' (the mean
    /// of the middle two for an even count), so a stall of the shared machine during one
    /// round does not decide it, while a proxy's own slow requests, which come back
    /// every round, do; the requests and failures of all rounds. `None` when no request
    /// was answered.
    pub fn combine(mut rounds: Vec<LatencySamples>) -> Option<Self> {
        let percentiles: Vec<Percentiles> = rounds
            .iter_mut()
            .filter_map(|round| Percentiles::of(&mut round.latencies_ms))
            .collect();
        let median_of = |pick: fn(&Percentiles) -> f64| {
            median(&percentiles.iter().map(pick).collect::<Vec<f64>>())
        };
        let latency_ms = Percentiles {
            p50: median_of(|p| p.p50)?,
            p90: median_of(|p| p.p90)?,
            p99: median_of(|p| p.p99)?,
            p999: median_of(|p| p.p999)?,
        };
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for (status, count) in rounds.iter().flat_map(|round| &round.statuses) {
            *statuses.entry(*status).or_default() += count;
        }
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for (error, count) in rounds.iter().flat_map(|round| &round.errors) {
            *errors.entry(error).or_default() += count;
        }
        let requests: u64 = rounds
            .iter()
            .map(|round| round.latencies_ms.len() as u64)
            .sum();
        let unanswered = rounds.iter().map(|round| round.sent).sum::<u64>() - requests;
        let not_ok: u64 = statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(_, count)| count)
            .sum();
        let mut failure_detail = format!("{unanswered} without an answer");
        if !statuses.is_empty() {
            failure_detail = format!("statuses {statuses:?}, {failure_detail}");
        }
        if !errors.is_empty() {
            failure_detail = format!("{failure_detail} ({errors:?})");
        }
        Some(Self {
            latency_ms,
            rounds: percentiles,
            requests,
            failures: not_ok + unanswered,
            failure_detail,
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` for
/// none.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        count if count.is_multiple_of(2) => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
        _ => Some(sorted[middle]),
    }
}

/// Closed-loop runs of one contender: `rps` is the median of `rounds`.
#[derive(Clone, Debug)]
pub struct ThroughputRun {
    pub rps: f64,
    pub failures: u64,
    pub rounds: Vec<f64>,
    /// What the hop processes did meanwhile, where it was read.
    pub saturation: Option<Saturation>,
}

/// The hop processes at saturation: how their work and their rhythm on the shared core
/// looked per request while the closed loop ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Saturation {
    /// CPU time (user + system) per 1,000 requests.
    pub cpu_ms_per_1k: f64,
    /// Context switches (voluntary and involuntary, every thread) per request.
    pub switches_per_request: f64,
    /// The kernel's part of that CPU time, from 0 to 1 (from clock ticks: see
    /// `procstat::Ticks`); None where no tick fell.
    pub kernel_share: Option<f64>,
}

impl ThroughputRun {
    pub fn once(rps: f64, failures: u64) -> Self {
        Self {
            rps,
            failures,
            rounds: vec![rps],
            saturation: None,
        }
    }

    /// The rounds as one result: the median throughput, every failure, the median of
    /// each saturation figure. `None` for no rounds.
    pub fn combine(runs: &[Self]) -> Option<Self> {
        let rounds: Vec<f64> = runs.iter().map(|run| run.rps).collect();
        let read: Vec<Saturation> = runs.iter().filter_map(|run| run.saturation).collect();
        let figure =
            |pick: fn(&Saturation) -> f64| median(&read.iter().map(pick).collect::<Vec<f64>>());
        let kernel_shares: Vec<f64> = read.iter().filter_map(|s| s.kernel_share).collect();
        let saturation = figure(|s| s.cpu_ms_per_1k)
            .zip(figure(|s| s.switches_per_request))
            .map(|(cpu_ms_per_1k, switches_per_request)| Saturation {
                cpu_ms_per_1k,
                switches_per_request,
                kernel_share: median(&kernel_shares),
            });
        Some(Self {
            rps: median(&rounds)?,
            failures: runs.iter().map(|run| run.failures).sum(),
            rounds,
            saturation,
        })
    }
}

/// How the requests travel. `Mode as usize` is the mode's place in `Mode::ALL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1, connections kept alive.
    Http1,
    /// HTTP/2 over plain TCP (prior knowledge).
    Http2,
    /// HTTP/1.1, a new connection for every request.
    NewConnection,
    /// The bench's own request/response exchange as raw bytes (`tcp_exchange`), over
    /// persistent connections that each contender carries on processes of their own.
    Tcp,
}

impl Mode {
    /// Every mode, in the order the scenarios run.
    pub const ALL: [Self; 4] = [Self::Http1, Self::Http2, Self::NewConnection, Self::Tcp];

    /// How progress lines name the mode.
    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
            Self::NewConnection => "new connection per request",
            Self::Tcp => "opaque TCP",
        }
    }

    /// Whether this is the first scenario to load its processes: the HTTP scenarios share
    /// one set of hops, HTTP/1.1 running first; opaque TCP has its own. Such a scenario
    /// warms its processes up before its first round and reports their peak memory.
    pub fn opens_its_path(self) -> bool {
        matches!(self, Self::Http1 | Self::Tcp)
    }
}

/// oha sending `requests` at `rate` requests per second.
pub async fn fixed_rate(
    target: SocketAddr,
    mode: Mode,
    rate: u32,
    requests: u64,
    cpus: Option<&str>,
) -> anyhow::Result<LatencySamples> {
    let mut command = pinned_command(OHA.program, cpus);
    command
        .args(["--no-tui", "--output-format", "csv", "--latency-correction"])
        .arg("-n")
        .arg(requests.to_string())
        .arg("-q")
        .arg(rate.to_string())
        // The URL names the service, so `Host` (HTTP/1.1) and `:authority` (HTTP/2)
        // agree; the connection goes to the target's address.
        .arg("--connect-to")
        .arg(format!(
            "{SERVICE_HOST}:80:{}:{}",
            target.ip(),
            target.port()
        ));
    match mode {
        Mode::Http1 => command.arg("-c").arg(LATENCY_CONNECTIONS.to_string()),
        Mode::Http2 => command
            .arg("--http2")
            .arg("-c")
            .arg(H2_CONNECTIONS.to_string())
            .arg("-p")
            .arg(H2_STREAMS.to_string()),
        Mode::NewConnection => command
            .arg("--disable-keepalive")
            .arg("-c")
            .arg(LATENCY_CONNECTIONS.to_string()),
        Mode::Tcp => bail!("oha does not speak the opaque TCP exchange (tcp_load does)"),
    };
    command.arg(format!("http://{SERVICE_HOST}/"));
    let duration = Duration::from_secs_f64(requests as f64 / f64::from(rate.max(1)));
    let output = run(command, duration).await?;
    parse_oha_csv(&output, requests).with_context(|| format!("oha printed: {}", excerpt(&output)))
}

/// oha's CSV: a header, then one line per answered request, in which the fifth field is
/// the latency in seconds (from the scheduled start, with `--latency-correction`) and the
/// seventh the status. Requests that got no answer have no line.
fn parse_oha_csv(output: &str, sent: u64) -> anyhow::Result<LatencySamples> {
    let mut lines = output.lines();
    let header = lines.next().context("no CSV header")?;
    anyhow::ensure!(
        header.split(',').nth(4) == Some("request-duration")
            && header.split(',').nth(6) == Some("status"),
        "unexpected CSV header {header:?}"
    );
    let mut samples = LatencySamples {
        sent,
        ..LatencySamples::default()
    };
    for (number, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(seconds), Some(status)) = (fields.get(4), fields.get(6)) else {
            bail!(
                "CSV line {} has {} fields: {line:?}",
                number + 2,
                fields.len()
            );
        };
        let seconds: f64 = seconds
            .parse()
            .with_context(|| format!("CSV line {}: latency {seconds:?}", number + 2))?;
        let status: u16 = status
            .parse()
            .with_context(|| format!("CSV line {}: status {status:?}", number + 2))?;
        samples.latencies_ms.push(seconds * 1000.0);
        *samples.statuses.entry(status).or_default() += 1;
    }
    anyhow::ensure!(
        samples.latencies_ms.len() as u64 <= sent,
        "{} answers to {sent} requests",
        samples.latencies_ms.len()
    );
    Ok(samples)
}

/// Closed-loop maximum throughput for `duration`.
pub async fn max_throughput(
    target: SocketAddr,
    mode: Mode,
    duration: Duration,
    cpus: Option<&str>,
) -> anyhow::Result<ThroughputRun> {
    if mode == Mode::Tcp {
        bail!("wrk does not speak the opaque TCP exchange (tcp_load does)");
    }
    let seconds = duration.as_secs().max(1).to_string();
    let url = format!("http://{target}/");
    if mode == Mode::Http2 {
        let mut command = pinned_command(H2LOAD.program, cpus);
        command
            .args(["-t", "1", "-D", &seconds])
            .args(["-c", &H2_CONNECTIONS.to_string()])
            .args(["-m", &H2_STREAMS.to_string()])
            .args(["-H", &format!(":authority: {SERVICE_HOST}")])
            .arg(&url);
        let output = run(command, duration).await?;
        return parse_h2load(&output)
            .with_context(|| format!("h2load printed: {}", excerpt(&output)));
    }
    let mut command = pinned_command(WRK.program, cpus);
    command
        .args(["-t", "1", "-d", &format!("{seconds}s")])
        .args(["-c", &THROUGHPUT_CONNECTIONS.to_string()])
        .args(["-H", &format!("Host: {SERVICE_HOST}")]);
    if mode == Mode::NewConnection {
        command.args(["-H", "Connection: close"]);
    }
    command.arg(&url);
    let output = run(command, duration).await?;
    parse_wrk(&output).with_context(|| format!("wrk printed: {}", excerpt(&output)))
}

fn parse_wrk(output: &str) -> anyhow::Result<ThroughputRun> {
    let rps = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .context("no Requests/sec line")?;
    let non_2xx: u64 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors: u64 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Socket errors:"))
        .map(|counts| {
            counts
                .split(',')
                .filter_map(|count| count.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(ThroughputRun::once(rps, non_2xx + socket_errors))
}

fn parse_h2load(output: &str) -> anyhow::Result<ThroughputRun> {
    // "finished in 5.00s, 12345.60 req/s, 13.2MB/s"
    let rps = output
        .lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|value| value.trim_end_matches(" req/s").parse().ok())
        .context("no 'finished in' line")?;
    // "requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 0 errored, 0 timeout"
    let requests = output
        .lines()
        .find_map(|line| line.strip_prefix("requests: "))
        .context("no 'requests:' line")?;
    let count = |what: &str| -> u64 {
        requests
            .split(", ")
            .find_map(|part| part.strip_suffix(what))
            .and_then(|number| number.trim().parse().ok())
            .unwrap_or(0)
    };
    // "failed" counts answers that were not 2xx or 3xx.
    Ok(ThroughputRun::once(
        rps,
        count(" failed") + count(" errored") + count(" timeout"),
    ))
}

/// Runs a load tool, bounded in time, and returns its stdout.
pub async fn run(
    mut command: tokio::process::Command,
    duration: Duration,
) -> anyhow::Result<String> {
    let limit = duration + Duration::from_secs(30);
    command.kill_on_drop(true);
    let described = format!("{command:?}");
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("{described} ran past {limit:?}"))?
        .with_context(|| format!("cannot run {described}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{described} failed with {}: {}{}",
            output.status,
            excerpt(&stdout),
            excerpt(&String::from_utf8_lossy(&output.stderr))
        );
    }
    Ok(stdout)
}

pub fn excerpt(text: &str) -> &str {
    &text[..text.len().min(2000)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_combine_into_their_median() {
        let runs = |rps: &[f64]| -> Vec<ThroughputRun> {
            rps.iter().map(|rps| ThroughputRun::once(*rps, 1)).collect()
        };
        let three = ThroughputRun::combine(&runs(&[9.0, 30.0, 10.0])).unwrap();
        assert_eq!((three.rps, three.failures), (10.0, 3));
        assert_eq!(three.rounds, [9.0, 30.0, 10.0]);
        assert_eq!(
            ThroughputRun::combine(&runs(&[8.0, 10.0])).unwrap().rps,
            9.0
        );
        assert!(ThroughputRun::combine(&[]).is_none());
    }

    #[test]
    fn reads_wrk_and_h2load_summaries() {
        let wrk = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n\
                   12000 requests in 2.00s, 13MB read\n\
                   Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   Non-2xx or 3xx responses: 4\nRequests/sec:   6000.50\n";
        let run = parse_wrk(wrk).unwrap();
        assert_eq!(run.rps, 6000.5);
        assert_eq!(run.failures, 7);
        let h2load = "finished in 2.00s, 9000.00 req/s, 10.00MB/s\n\
                      requests: 18000 total, 18000 started, 18000 done, 17990 succeeded, 10 failed, 0 errored, 0 timeout\n\
                      status codes: 17990 2xx, 0 3xx, 0 4xx, 10 5xx\n";
        let run = parse_h2load(h2load).unwrap();
        assert_eq!(run.rps, 9000.0);
        assert_eq!(run.failures, 10);
    }

    #[test]
    fn reads_oha_csv() {
        let csv = "request-start,DNS,DNS+dialup,Response-delay,request-duration,bytes,status\n\
                   0.001,0.00001,0.0002,0.0010,0.0012,1024,200\n\
                   0.002,0,0,0.0004,0.0004,1024,503\n";
        let samples = parse_oha_csv(csv, 3).unwrap();
        assert_eq!(samples.latencies_ms, [1.2, 0.4]);
        assert_eq!(samples.statuses, BTreeMap::from([(200, 1), (503, 1)]));
        assert!(parse_oha_csv(csv, 1).is_err(), "more answers than requests");
        assert!(parse_oha_csv("Error: connection refused\n", 3).is_err());
        assert!(parse_oha_csv(&csv.replace("1024,200", "1024"), 3).is_err());
    }

    #[test]
    fn saturation_figures_combine_into_their_medians_over_the_rounds_that_read_them() {
        let round = |rps: f64, saturation: Option<(f64, f64, Option<f64>)>| ThroughputRun {
            saturation: saturation.map(|(cpu_ms_per_1k, switches_per_request, kernel_share)| {
                Saturation {
                    cpu_ms_per_1k,
                    switches_per_request,
                    kernel_share,
                }
            }),
            ..ThroughputRun::once(rps, 0)
        };
        let combined = ThroughputRun::combine(&[
            round(100.0, Some((60.0, 0.5, Some(0.6)))),
            round(110.0, None),
            round(120.0, Some((40.0, 0.1, None))),
            round(130.0, Some((50.0, 0.3, Some(0.5)))),
            round(140.0, Some((45.0, 0.2, Some(0.7)))),
        ])
        .unwrap();
        assert_eq!(
            combined.saturation,
            Some(Saturation {
                cpu_ms_per_1k: 47.5,
                switches_per_request: 0.25,
                kernel_share: Some(0.6),
            })
        );
        let unread = ThroughputRun::combine(&[round(100.0, None)]).unwrap();
        assert_eq!(unread.saturation, None);
    }

    #[test]
    fn latency_rounds_combine_into_median_percentiles() {
        let round = |latencies: Vec<f64>, status: u16, sent: u64| LatencySamples {
            sent,
            statuses: BTreeMap::from([(status, latencies.len() as u64)]),
            latencies_ms: latencies,
            errors: BTreeMap::new(),
        };
        let steady = || (1..=100).map(f64::from).collect::<Vec<f64>>();
        // One round stalled: its tail is far out, and the median of three leaves it out.
        let mut stalled = steady();
        stalled[95..].fill(900.0);
        let run = LatencyRun::combine(vec![
            round(steady(), 200, 100),
            round(stalled, 200, 100),
            round(steady().iter().map(|ms| ms + 1.0).collect(), 200, 102),
        ])
        .unwrap();
        assert_eq!(run.latency_ms.p50, 50.0);
        assert_eq!(run.latency_ms.p90, 90.0);
        assert_eq!(run.latency_ms.p99, 100.0);
        assert_eq!(run.latency_ms.p999, 101.0);
        assert_eq!(run.rounds[1].p99, 900.0);
        assert_eq!((run.requests, run.failures), (300, 2), "two never answered");
        let run = LatencyRun::combine(vec![round(steady(), 503, 100), round(steady(), 200, 100)])
            .unwrap();
        assert_eq!(run.latency_ms.p50, 50.0);
        assert_eq!(run.failures, 100);
        assert!(
            run.failure_detail.contains("503: 100"),
            "{}",
            run.failure_detail
        );
        assert!(LatencyRun::combine(vec![round(Vec::new(), 200, 10)]).is_none());
    }
}
