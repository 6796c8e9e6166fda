//! The stderr logs of the child processes. Every binary a test starts writes its stderr
//! to a file in the test's temporary directory; the owner of the process prints the tail
//! of that file when the test fails (panics), and tests can wait for a line in it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::wait;

/// How many trailing lines of a log are printed when a test fails.
const TAIL_LINES: usize = 150;

/// A child's stderr log file.
#[derive(Clone, Debug)]
pub struct ChildLog {
    label: String,
    path: PathBuf,
}

impl ChildLog {
    /// Creates (truncates) the log file and returns it with a `Stdio` for the child's stderr.
    pub fn create(label: impl Into<String>, path: PathBuf) -> anyhow::Result<(Self, Stdio)> {
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create log file {}", path.display()))?;
        let log = Self {
            label: label.into(),
            path,
        };
        Ok((log, Stdio::from(file)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole log so far (empty if it cannot be read).
    pub fn text(&self) -> String {
        std::fs::read(&self.path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the log, for error messages.
    pub fn tail(&self) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        lines[start..].join("\n")
    }

    /// Waits until a line of the log contains `needle`, and returns that line.
    pub async fn wait_for_line(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        wait::until(
            &format!("{} logs a line containing {needle:?}", self.label),
            timeout,
            || async {
                match self.text().lines().find(|line| line.contains(needle)) {
                    Some(line) => Ok(line.to_string()),
                    None => bail!("no such line yet in {}", self.path.display()),
                }
            },
        )
        .await
    }

    /// Prints the tail of the log on stderr if the current thread is panicking: called
    /// from the `Drop` of whatever owns the process, so a failed test shows the logs.
    pub fn print_if_panicking(&self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr ({}), last {TAIL_LINES} lines -----\n{}\n----- end of {} -----",
                self.label,
                self.path.display(),
                self.tail(),
                self.label
            );
        }
    }
}
