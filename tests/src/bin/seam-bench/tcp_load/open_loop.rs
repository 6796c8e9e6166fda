//! The fixed-rate, open-loop mode. Request `i` is due at `start + i / rate` whatever became
//! of the ones before it, and its latency runs from that due time to the end of its
//! answer, so a stall counts against every request it held back (no coordinated
//! omission, as with oha's `--latency-correction`). The requests share a few persistent
//! connections, each driven by a thread of its own: a connection that is free takes the
//! next request, sleeps until it is due and sends it; one still waiting on an answer
//! takes none, so a slow answer delays only requests no other connection was free for.
//! Each connection makes one round trip before the clock starts: a proxy of raw TCP opens
//! its own connection onward (a TLS handshake with hop 2) only when a client connects,
//! and the scenario measures round trips on persistent connections, not their setup.
//!
//! Threads rather than async tasks, because the wake-up at a due time must be exact to
//! microseconds: tokio's timer rounds up to whole milliseconds, which would add up to a
//! millisecond to every latency, while a thread's sleep with a timer slack of 1 µs wakes
//! within microseconds. At a thousand requests a second the few threads cost nothing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{FixedRateReport, REQUEST_TIMEOUT, count_error, merge_errors};
use crate::tcp_exchange;

/// How long past the last request's due time the run may go on (its answer may still be
/// on the way) before the requests still unanswered are given up.
const GRACE: Duration = Duration::from_secs(10);

pub struct Plan {
    pub target: SocketAddr,
    pub rate: u32,
    pub requests: u64,
    pub connections: u32,
}

/// When each request is due, and which is next.
struct Schedule {
    start: Instant,
    rate: f64,
    requests: u64,
    /// No request is sent after this (a bound on time, whatever the path does).
    deadline: Instant,
    next: AtomicU64,
}

impl Schedule {
    fn due(&self, sequence: u64) -> Instant {
        self.start + Duration::from_secs_f64(sequence as f64 / self.rate)
    }

    /// The next request and its due time; `None` once every request is taken.
    fn take(&self) -> Option<(u64, Instant)> {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        (sequence < self.requests).then(|| (sequence, self.due(sequence)))
    }
}

/// Opens every connection through to the upstream, then sends `plan.requests` requests
/// at `plan.rate`.
pub fn run(plan: &Plan) -> anyhow::Result<FixedRateReport> {
    let streams = (0..plan.connections.max(1))
        .map(|_| {
            let mut stream = connect(plan.target)?;
            tcp_exchange::round_trip_blocking(&mut stream, 0)?;
            Ok(stream)
        })
        .collect::<std::io::Result<Vec<TcpStream>>>()
        .with_context(|| format!("cannot open a connection through {}", plan.target))?;
    let rate = f64::from(plan.rate.max(1));
    let start = Instant::now();
    let schedule = Schedule {
        start,
        rate,
        requests: plan.requests,
        deadline: start + Duration::from_secs_f64(plan.requests as f64 / rate) + GRACE,
        next: AtomicU64::new(0),
    };
    let shares: Vec<Share> = std::thread::scope(|scope| {
        let threads: Vec<_> = streams
            .into_iter()
            .map(|stream| scope.spawn(|| drive(stream, plan.target, &schedule)))
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a load thread does not panic"))
            .collect()
    });
    let mut report = FixedRateReport {
        due: plan.requests,
        ..FixedRateReport::default()
    };
    for share in shares {
        report.latencies_ns.extend(share.latencies_ns);
        merge_errors(&mut report.errors, share.errors);
    }
    Ok(report)
}

/// What one connection's thread saw.
struct Share {
    latencies_ns: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// One connection's share of the schedule. A failed connection is replaced by a new one
/// for its next request.
fn drive(stream: TcpStream, target: SocketAddr, schedule: &Schedule) -> Share {
    // The slack is the thread's own; the default 50 µs would land on every latency.
    let _ = nix::sys::prctl::set_timerslack(1);
    let mut stream = Some(stream);
    let mut latencies_ns = Vec::new();
    let mut errors = BTreeMap::new();
    while let Some((sequence, due)) = schedule.take() {
        sleep_until(due);
        if Instant::now() > schedule.deadline {
            break;
        }
        let answered = match &mut stream {
            Some(stream) => tcp_exchange::round_trip_blocking(stream, sequence),
            None => connect(target)
                .and_then(|new| tcp_exchange::round_trip_blocking(stream.insert(new), sequence)),
        };
        match answered {
            Ok(()) => latencies_ns.push(nanos(due.elapsed())),
            Err(err) => {
                count_error(&mut errors, &err);
                stream = None;
            }
        }
    }
    Share {
        latencies_ns,
        errors,
    }
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, REQUEST_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    Ok(stream)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_due_at_the_rate_and_each_is_taken_once() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            rate: 1000.0,
            requests: 3,
            deadline: start,
            next: AtomicU64::new(0),
        };
        let taken: Vec<(u64, Duration)> = std::iter::from_fn(|| schedule.take())
            .map(|(sequence, due)| (sequence, due - start))
            .collect();
        assert_eq!(
            taken,
            [
                (0, Duration::ZERO),
                (1, Duration::from_millis(1)),
                (2, Duration::from_millis(2))
            ]
        );
        assert!(schedule.take().is_none(), "all taken stays all taken");
    }
}
