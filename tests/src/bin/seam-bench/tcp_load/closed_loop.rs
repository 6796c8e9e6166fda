//! The maximum-throughput, closed-loop mode, run the way `wrk` runs: persistent
//! connections on one thread (a current-thread tokio runtime: one event loop, as wrk's
//! `-t 1`), each sending its next request as soon as its last is answered, for a fixed
//! time. The throughput is the answers over the time from the first request to the last
//! answer. As in the open loop, each connection makes one round trip before the clock
//! starts, so the time is that of round trips and not of the hops setting up their own
//! connections onward.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpStream;

use super::{ClosedLoopReport, REQUEST_TIMEOUT, count_error, merge_errors};
use crate::tcp_exchange;

/// Round trips one connection may make per second of the run: a bound on count besides
/// the time, far above what a loopback round trip allows.
const MAX_PER_CONNECTION_SECOND: u64 = 200_000;

pub struct Plan {
    pub target: SocketAddr,
    pub duration: Duration,
    pub connections: u32,
}

/// Connects every connection, then keeps each busy until `plan.duration` has passed.
pub fn run(plan: &Plan) -> anyhow::Result<ClosedLoopReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..plan.connections.max(1) {
            let opened = async {
                let mut stream = connect(plan.target).await?;
                tcp_exchange::round_trip(&mut stream, 0).await?;
                std::io::Result::Ok(stream)
            };
            let stream = tokio::time::timeout(REQUEST_TIMEOUT, opened)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                .with_context(|| format!("cannot open a connection through {}", plan.target))?;
            streams.push(stream);
        }
        let limit = MAX_PER_CONNECTION_SECOND * plan.duration.as_secs().max(1);
        let start = Instant::now();
        let deadline = start + plan.duration;
        let connections: Vec<_> = streams
            .into_iter()
            .map(|stream| tokio::spawn(drive(stream, plan.target, deadline, limit)))
            .collect();
        let mut report = ClosedLoopReport::default();
        for connection in connections {
            let (answered, errors) = connection.await?;
            report.answered += answered;
            merge_errors(&mut report.errors, errors);
        }
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    })
}

/// One connection's loop, until `deadline` or `limit` round trips: the answered count and
/// the failures. A failed connection is replaced by a new one.
async fn drive(
    stream: TcpStream,
    target: SocketAddr,
    deadline: Instant,
    limit: u64,
) -> (u64, BTreeMap<String, u64>) {
    let mut stream = Some(stream);
    let mut answered = 0;
    let mut errors = BTreeMap::new();
    for sequence in 0..limit {
        if Instant::now() >= deadline {
            break;
        }
        let round_trip = async {
            let stream = match &mut stream {
                Some(stream) => stream,
                None => stream.insert(connect(target).await?),
            };
            tcp_exchange::round_trip(stream, sequence).await
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, round_trip)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        match result {
            Ok(()) => answered += 1,
            Err(err) => {
                count_error(&mut errors, &err);
                stream = None;
            }
        }
    }
    (answered, errors)
}

async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
