//! Running the system's iptables tools, and nothing else: `iptables-save` to read a
//! namespace's rules, `iptables-restore --noflush` to change them in one transaction (and
//! the `ip6tables-*` twins for IPv6), each under the backend's own name
//! (`iptables-nft-restore`, `iptables-legacy-save`, ...). A refused transaction is mapped
//! back from iptables-restore's "line N" to the rule text on that line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::plan::RestoreInput;
use super::rules::Family;

/// How long `iptables-restore` waits for the xtables lock, which legacy iptables shares
/// between every network namespace on a host that shares `/run`.
const LOCK_WAIT_SECONDS: u32 = 10;

/// The two ways iptables reaches the kernel: nf_tables, or the legacy x_tables interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// `iptables-nft-save`, `ip6tables-legacy-restore`, ...
    pub fn tool(self, family: Family, action: &str) -> String {
        let program = match family {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        };
        format!("{program}-{}-{action}", self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("cannot run {tool}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {message}")]
    Failed { tool: String, message: String },
    #[error("{tool} refused line {number} of the {family} rules, {line}: {message}")]
    RuleRefused {
        tool: String,
        family: &'static str,
        number: usize,
        /// The line as given, quoted.
        line: String,
        message: String,
    },
}

impl IptablesError {
    /// Whether the failure says the table itself cannot be opened, which for IPv6 means the
    /// kernel offers this namespace no IPv6 nat (no module, or IPv6 turned off).
    pub fn is_table_unavailable(&self) -> bool {
        let message = match self {
            IptablesError::Spawn { .. } => return false,
            IptablesError::Failed { message, .. } | IptablesError::RuleRefused { message, .. } => {
                message
            }
        };
        [
            "Table does not exist",
            "unable to initialize table",
            "can't initialize",
            "Address family not supported",
        ]
        .iter()
        .any(|sign| message.contains(sign))
    }
}

/// The namespace's whole ruleset as `<backend> save` prints it. Every table is read, not
/// just `-t nat`: asking legacy iptables for one table creates that table if it is absent.
pub fn save(backend: Backend, family: Family) -> Result<String, IptablesError> {
    let tool = backend.tool(family, "save");
    let output = Command::new(&tool)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IptablesError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(IptablesError::Failed {
            message: tool_message(&output),
            tool,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Applies `input` with `<backend> restore --noflush`: all of it, or nothing.
pub fn restore(
    backend: Backend,
    family: Family,
    input: &RestoreInput,
) -> Result<(), IptablesError> {
    let tool = backend.tool(family, "restore");
    let spawn_error = |source| IptablesError::Spawn {
        tool: tool.clone(),
        source,
    };
    let mut child = Command::new(&tool)
        .arg("--noflush")
        .arg(format!("--wait={LOCK_WAIT_SECONDS}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdin = child
        .stdin
        .take()
        .expect("the child's stdin was asked to be piped");
    // A tool that exits early closes its stdin; its own message then says why.
    let written = stdin.write_all(input.text().as_bytes());
    drop(stdin);
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        return written.map_err(spawn_error);
    }
    let message = tool_message(&output);
    Err(match failed_line(&output) {
        Some(number) => IptablesError::RuleRefused {
            line: match input.line(number) {
                // Some refusals come only when the whole table is handed to the kernel.
                Some("COMMIT") => "`COMMIT` (the table as a whole)".to_string(),
                Some(line) => format!("`{line}`"),
                None => "(past the end of the input)".to_string(),
            },
            tool,
            family: family.label(),
            number,
            message,
        },
        None => IptablesError::Failed { tool, message },
    })
}

/// The backend the system's `iptables` command uses, from `iptables --version`
/// (`iptables v1.8.9 (nf_tables)` or `(legacy)`); the error says why it cannot tell.
pub fn system_default() -> Result<Backend, String> {
    let output = Command::new("iptables")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `iptables --version`: {err}"))?;
    let version = String::from_utf8_lossy(&output.stdout);
    backend_in_version(&version).ok_or_else(|| {
        format!(
            "`iptables --version` names no backend: {:?}",
            version.trim()
        )
    })
}

fn backend_in_version(version: &str) -> Option<Backend> {
    if version.contains("(nf_tables)") {
        Some(Backend::Nft)
    } else if version.contains("(legacy)") {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// The input line iptables-restore names in its error: `line 5 failed` (a rule the
/// kernel or the tool refused) or `Error occurred at line: 5` (a line it could not parse).
fn failed_line(output: &Output) -> Option<usize> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().find_map(|line| {
        let after = line
            .split_once("Error occurred at line: ")
            .or_else(|| line.split_once(": line "))
            .map(|(_, after)| after)?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// What the tool said, on one line: its stderr without the line number (reported apart)
/// and without the usage hint.
fn tool_message(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Error occurred at line:")
                && !line.starts_with("Try `")
        })
        .collect();
    if message.is_empty() {
        format!("it exited with {} and said nothing", output.status)
    } else {
        message.join("; ")
    }
}

#[cfg(test)]
mod tests;
