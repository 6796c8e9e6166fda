//! What the hop processes cost: CPU time (user + system, every thread, in nanoseconds,
//! from each process's CPU-time clock), how it splits between user space and the kernel
//! (clock ticks, from /proc), context switches (every thread's, slept and preempted, from
//! /proc), and peak resident memory (`VmHWM` in /proc). A hop may be several processes
//! (nginx's master and its worker), so a hop is a root pid plus its children.

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
    // Field 4.
    fields_after_name(&stat)?.nth(1)?.parse().ok()
}

/// The fields of a `/proc/PID/stat` line from field 3 on. The command name (field 2)
/// may hold spaces and parentheses, so they are counted from its last `)`.
fn fields_after_name(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
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

/// What a set of processes had spent at one moment; [`Usage::until`] a later reading
/// gives what they spent in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: Duration,
    pub ticks: Ticks,
    pub switches: Switches,
}

impl Usage {
    pub fn read(pids: &[u32]) -> anyhow::Result<Self> {
        Ok(Self {
            cpu: total_cpu_time(pids)?,
            ticks: ticks(pids)?,
            switches: context_switches(pids)?,
        })
    }

    /// What was spent between `self` and a later reading.
    pub fn until(self, later: Self) -> Self {
        Self {
            cpu: later.cpu.saturating_sub(self.cpu),
            ticks: self.ticks.until(later.ticks),
            switches: self.switches.until(later.switches),
        }
    }
}

/// CPU time in clock ticks (10 ms here), split by where it was spent. The kernel charges a
/// whole tick to whatever runs when the tick fires, so the split is sound only over
/// seconds of a core kept busy, as at saturation; while a core idles between requests
/// the tick stops, and the ticks then miss most of the short bursts of work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticks {
    pub user: u64,
    pub kernel: u64,
}

impl Ticks {
    /// The ticks between `self` and a later reading.
    pub fn until(self, later: Self) -> Self {
        Self {
            user: later.user.saturating_sub(self.user),
            kernel: later.kernel.saturating_sub(self.kernel),
        }
    }

    /// The kernel's part of the time, from 0 to 1; None for no ticks at all.
    pub fn kernel_share(self) -> Option<f64> {
        let total = self.user + self.kernel;
        (total > 0).then(|| self.kernel as f64 / total as f64)
    }
}

/// User and kernel clock ticks `pids` have spent so far (`utime` and `stime` of
/// `/proc/PID/stat`, which cover every thread of the process, exited ones too).
pub fn ticks(pids: &[u32]) -> anyhow::Result<Ticks> {
    let mut ticks = Ticks::default();
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let (user, kernel) =
            parse_ticks(&stat).with_context(|| format!("{path} has no utime and stime"))?;
        ticks.user += user;
        ticks.kernel += kernel;
    }
    Ok(ticks)
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line.
fn parse_ticks(stat: &str) -> Option<(u64, u64)> {
    let mut fields = fields_after_name(stat)?.skip(11);
    let user = fields.next()?.parse().ok()?;
    let kernel = fields.next()?.parse().ok()?;
    Some((user, kernel))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (nginx: worker (1)) S 4241 4241 4241 0 -1 4194624 310 0 0 0 \
                    1234 567 0 0 20 0 1 0 8123 11534336 900 18446744073709551615";
        assert_eq!(parse_ticks(stat), Some((1234, 567)));
        assert_eq!(
            fields_after_name(stat).and_then(|mut f| f.nth(1)),
            Some("4241")
        );
        assert_eq!(parse_ticks("4242 (cut short) S 1 2 3"), None);
    }

    #[test]
    fn the_kernel_share_is_the_kernel_ticks_over_all_ticks_spent_in_between() {
        let before = Ticks {
            user: 100,
            kernel: 50,
        };
        let later = Ticks {
            user: 140,
            kernel: 110,
        };
        assert_eq!(before.until(later).kernel_share(), Some(0.6));
        assert_eq!(before.until(before).kernel_share(), None);
    }
}
