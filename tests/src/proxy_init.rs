//! Running `seam-proxy init` inside a pod's namespace, as an init container would, with a
//! clean environment (no `SEAM_*` from the developer's shell), and what it printed.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::mesh;
use crate::netns::NetNs;

/// How long one run of `seam-proxy init` may take (it waits up to 10 s for the xtables lock).
const INIT_TIMEOUT: Duration = Duration::from_secs(60);

/// One finished run of `seam-proxy init`.
#[derive(Debug)]
pub struct InitRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl InitRun {
    /// Fails unless the run succeeded, showing everything it printed.
    pub fn expect_success(self) -> anyhow::Result<Self> {
        if !self.status.success() {
            bail!("seam-proxy init failed: {self}");
        }
        Ok(self)
    }
}

impl std::fmt::Display for InitRun {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `seam-proxy init <args>` inside `namespace` and waits for it to finish.
pub async fn run_init(namespace: &NetNs, args: &[&str]) -> anyhow::Result<InitRun> {
    let mut command = namespace.command(mesh::seam_binary("seam-proxy")?);
    mesh::remove_seam_variables(command.as_std_mut());
    command.arg("init").args(args);
    let output = tokio::time::timeout(INIT_TIMEOUT, command.output())
        .await
        .with_context(|| {
            format!("seam-proxy init {args:?} did not finish within {INIT_TIMEOUT:?}")
        })?
        .context("cannot run seam-proxy init")?;
    Ok(InitRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
