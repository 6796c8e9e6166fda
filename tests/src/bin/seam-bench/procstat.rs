//! What the hop processes cost: CPU time (user + system, every thread, in nanoseconds,
//! from each process's CPU-time clock), context switches (every thread's, slept and
//! preempted, from /proc), and peak resident memory (`VmHWM` in /proc). A hop may be
//! several processes (nginx's master and its worker), so a hop is a root pid plus its
//! children.

use std::time::Duration;

use anyhow::Context;
use nix::time::{clock_getcpuclockid, clock_gettime};
use nix::unistd::Pid;

/// Every pid in the trees rooted at `roots` (the roots and their direct children).
pub fn with_children(roots: &[u32]) -> Vec<u32> {
    let mut pids = roots.to_vec();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(parent) = parent_of(pid)
            && roots.contains(&parent)
        {
            pids.push(pid);
        }
    }
    pids
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(1)?.parse().ok()
}

/// CPU time `pid` has spent so far (user + system, all its threads, exited ones too), in
/// nanoseconds from the process's CPU-time clock: `/proc/PID/stat` counts in clock ticks
/// (10 ms here), too coarse for a few seconds at 1,000 requests/s.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
    let clock = clock_getcpuclockid(pid).with_context(|| format!("no CPU clock for pid {pid}"))?;
    let spent =
        clock_gettime(clock).with_context(|| format!("cannot read pid {pid}'s CPU clock"))?;
    Ok(Duration::from(spent))
}

/// Total CPU time of `pids`.
pub fn total_cpu_time(pids: &[u32]) -> anyhow::Result<Duration> {
    pids.iter().map(|pid| cpu_time(*pid)).sum()
}

/// Context switches of a set of processes, summed over every thread: `/proc/PID/status`
/// counts the main thread only, so each task's own is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// Voluntary: the thread went to sleep (here, nearly always in `epoll_wait`).
    pub slept: u64,
    /// Involuntary: the scheduler took the core away while the thread could still run.
    pub preempted: u64,
}

impl Switches {
    pub fn total(self) -> u64 {
        self.slept + self.preempted
    }

    /// The switches between `self` and a later reading.
    pub fn until(self, later: Self) -> Self {
        Self {
            slept: later.slept.saturating_sub(self.slept),
            preempted: later.preempted.saturating_sub(self.preempted),
        }
    }
}

impl std::ops::Add for Switches {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            slept: self.slept + other.slept,
            preempted: self.preempted + other.preempted,
        }
    }
}

/// Context switches of `pids` so far, every thread of each.
pub fn context_switches(pids: &[u32]) -> anyhow::Result<Switches> {
    let mut switches = Switches::default();
    for pid in pids {
        let tasks = format!("/proc/{pid}/task");
        for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
            let status = std::fs::read_to_string(task?.path().join("status"))?;
            for line in status.lines() {
                let (count, value) =
                    if let Some(value) = line.strip_prefix("voluntary_ctxt_switches:") {
                        (&mut switches.slept, value)
                    } else if let Some(value) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                        (&mut switches.preempted, value)
                    } else {
                        continue;
                    };
                *count += value
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("a context switch count in {tasks}: {line}"))?;
            }
        }
    }
    Ok(switches)
}

/// The highest resident set `pid` has had, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// The resident set of `pid` now, in bytes.
pub fn current_rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no {field} line"))?;
    Ok(kib * 1024)
}
