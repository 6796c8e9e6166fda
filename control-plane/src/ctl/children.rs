//! The processes `seamctl demo` starts, owned in one place so that no path — success,
//! error, Ctrl-C during startup — leaves one running. Each child gets its own process
//! group (a terminal's Ctrl-C reaches only the demo, which then stops the children
//! itself and waits for them) and its stderr in a log file, whose last lines are quoted
//! when the child fails to start.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::FutureExt;
use tokio::process::Command;
use tokio::time::Instant;

use crate::launch::SeamProcess;

/// How long a child may take to answer 200 on its `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long children get to exit after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many log lines an error quotes.
const LOG_TAIL_LINES: usize = 15;

/// A child, by its position in start order.
#[derive(Debug, Clone, Copy)]
pub struct ChildId(usize);

pub struct Children {
    log_dir: PathBuf,
    processes: Vec<SeamProcess>,
}

impl Children {
    pub fn new(log_dir: PathBuf) -> Self {
        Self {
            log_dir,
            processes: Vec::new(),
        }
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{}.log", name.replace(' ', "-")))
    }

    /// Starts `program` and waits for its listening line.
    pub async fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[impl AsRef<OsStr>],
    ) -> anyhow::Result<ChildId> {
        let log_path = self.log_file(name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(program);
        // Log files are read with `less`, not a terminal: no colour codes in them.
        command.args(args).process_group(0).env("NO_COLOR", "1");
        let child = SeamProcess::spawn(name, command, Stdio::from(log))
            .await
            .map_err(|error| with_log_tail(error, &log_path))?;
        self.processes.push(child);
        Ok(ChildId(self.processes.len() - 1))
    }

    pub fn get(&self, id: ChildId) -> &SeamProcess {
        &self.processes[id.0]
    }

    pub async fn wait_ready(&mut self, id: ChildId) -> anyhow::Result<()> {
        let log_path = self.log_file(self.processes[id.0].name());
        let child = &mut self.processes[id.0];
        child
            .wait_ready(READY_TIMEOUT)
            .await
            .map_err(|error| with_log_tail(error, &log_path))
    }

    /// Kills the most recently started child (a failed start is undone in reverse).
    pub async fn kill_last(&mut self) {
        if let Some(mut child) = self.processes.pop() {
            // Best effort: dropping it kills it too.
            let _ = child.kill().await;
        }
    }

    /// A child that has exited, if any, described for the user.
    pub fn exited(&mut self) -> Option<String> {
        self.processes.iter_mut().find_map(|child| {
            let status = child.wait().now_or_never()?;
            Some(match status {
                Ok(status) => format!("{} exited unexpectedly ({status})", child.name()),
                Err(error) => format!("{} is gone: {error:#}", child.name()),
            })
        })
    }

    /// SIGTERM to every child, a bounded wait, then SIGKILL for any still running. The
    /// first child started (the one the others were started against: the control plane)
    /// is stopped last, so the others do not log its departure as an outage.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.processes.is_empty() {
            return Ok(());
        }
        super::say(&format!("Stopping {} processes...", self.processes.len()));
        let mut problems = Vec::new();
        let first = self.processes.remove(0);
        let rest: Vec<SeamProcess> = self.processes.drain(..).collect();
        stop_together(rest, &mut problems).await;
        stop_together(vec![first], &mut problems).await;
        if problems.is_empty() {
            super::say("All stopped.");
            Ok(())
        } else {
            bail!("not every process stopped cleanly: {}", problems.join("; "))
        }
    }
}

/// Sends SIGTERM to all of `children` at once, then waits for them, killing any still
/// running after `STOP_TIMEOUT`. Anything other than a clean exit goes into `problems`.
async fn stop_together(children: Vec<SeamProcess>, problems: &mut Vec<String>) {
    for child in &children {
        // It may have exited already; the wait below reports how.
        let _ = child.terminate();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for mut child in children {
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => problems.push(format!("{} exited with {status}", child.name())),
            Ok(Err(error)) => problems.push(format!("{}: {error:#}", child.name())),
            Err(_) => {
                let _ = child.kill().await;
                problems.push(format!(
                    "{} was still running {STOP_TIMEOUT:?} after SIGTERM and was killed",
                    child.name()
                ));
            }
        }
    }
}

/// The error, followed by the end of the child's log: usually the actual reason.
fn with_log_tail(error: anyhow::Error, log_path: &Path) -> anyhow::Error {
    let tail = File::open(log_path)
        .ok()
        .and_then(|file| std::io::read_to_string(file).ok())
        .map(|log| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n    ")
        })
        .unwrap_or_default();
    if tail.is_empty() {
        anyhow!("{error:#} (its stderr was empty)")
    } else {
        anyhow!("{error:#}; the end of its stderr:\n    {tail}")
    }
}
