//! What the hop processes cost, read from /proc: CPU time (user + system, every thread,
//! in clock ticks) and peak resident memory (`VmHWM`). A hop may be several processes
//! (nginx's master and its worker), so a hop is a root pid plus its children.

use std::time::Duration;

use anyhow::Context;

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

/// CPU time `pid` has spent so far (user + system, all threads).
pub fn cpu_time(pid: u32, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 2..])
        .with_context(|| format!("{path} is malformed"))?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{path} has no field {index}"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        total as f64 / ticks_per_second as f64,
    ))
}

/// Total CPU time of `pids`.
pub fn total_cpu_time(pids: &[u32], ticks_per_second: u64) -> anyhow::Result<Duration> {
    pids.iter()
        .map(|pid| cpu_time(*pid, ticks_per_second))
        .sum()
}

/// The highest resident set `pid` has had, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no VmHWM line"))?;
    Ok(kib * 1024)
}

/// The kernel's clock ticks per second for /proc CPU times (`getconf CLK_TCK`).
pub fn ticks_per_second() -> anyhow::Result<u64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("cannot run getconf CLK_TCK")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}
