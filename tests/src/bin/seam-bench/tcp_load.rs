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
//! The bench's side, which starts it and reads the report, is at the bottom.

mod closed_loop;
mod open_loop;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

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
