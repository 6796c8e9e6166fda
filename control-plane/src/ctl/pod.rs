//! `seamctl pod` (hidden): the supervisor of one meshed instance in a container, its PID 1.
//!
//! `seamctl pod [OPTIONS] -- PROXY_FLAGS... [-- APP COMMAND...]`
//!
//! 1. As root, it reads the join token and the trust anchors the proxy cannot read itself
//!    (`handover`).
//! 2. With `--transparent`, it runs `seam-proxy init` (with `--init-arg` flags) and fails
//!    the container if that fails: an app must never run unintercepted by mistake.
//! 3. It runs `seam-proxy PROXY_FLAGS` as the proxy uid, and starts it again in place
//!    with backoff (`restart`) whenever it exits, so the network namespace, and any app
//!    in it or joined to it, outlives a proxy crash.
//! 4. With an app command, it runs the app as the container's user once the proxy is
//!    ready (`readiness`, bounded by `--app-start-timeout`), and when the app exits it
//!    stops the proxy and exits with the app's status, so the container's restart policy
//!    restarts the two together.
//!
//! SIGTERM and SIGINT are passed to both children, which get `--stop-timeout` to exit
//! before they are killed.

mod handover;
mod readiness;
mod restart;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::launch;
use restart::RestartBackoff;

/// The uid (and gid) `seam-proxy init` exempts from interception by default.
const PROXY_UID: u32 = 2102;

#[derive(Debug, clap::Args)]
pub struct PodArgs {
    /// Run `seam-proxy init` first (transparent mode; the container needs NET_ADMIN).
    #[arg(long)]
    pub transparent: bool,
    /// One flag for `seam-proxy init`, e.g. `--init-arg=--skip-inbound-ports=8080`; repeat
    /// for more. `--proxy-uid` is passed already.
    #[arg(long = "init-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub init_args: Vec<String>,
    /// The mesh's trust anchors (the control plane's `ca.pem`), readable by root only.
    #[arg(long, value_name = "PEM")]
    pub trust_anchors: PathBuf,
    /// The service's join token (a compose secret), readable by root only.
    #[arg(long, value_name = "PATH")]
    pub join_token_file: PathBuf,
    /// The uid and gid the proxy runs as.
    #[arg(long, default_value_t = PROXY_UID)]
    pub proxy_uid: u32,
    /// Where the pod keeps what it hands the proxy.
    #[arg(long, value_name = "DIR", default_value = "/tmp/seam-pod")]
    pub work_dir: PathBuf,
    /// How long the app waits for the proxy to be ready before it starts anyway.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub app_start_timeout: Duration,
    /// How long the children get to exit after SIGTERM before they are killed.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
    /// After `--`: the proxy's flags, then optionally `--` and the app's command.
    #[arg(last = true, value_name = "PROXY_FLAGS -- APP")]
    pub rest: Vec<String>,
}

/// The two command lines after the pod's own flags.
#[derive(Debug, PartialEq, Eq)]
pub struct Commands {
    pub proxy_args: Vec<String>,
    pub app: Option<Vec<String>>,
}

impl Commands {
    /// Splits `PROXY_FLAGS... [-- APP...]` at its first `--`.
    pub fn split(rest: &[String]) -> anyhow::Result<Self> {
        match rest.iter().position(|arg| arg == "--") {
            None => Ok(Self {
                proxy_args: rest.to_vec(),
                app: None,
            }),
            Some(at) if at + 1 == rest.len() => {
                bail!(
                    "nothing after the second `--`: give the app's command, or leave out the `--`"
                )
            }
            Some(at) => Ok(Self {
                proxy_args: rest[..at].to_vec(),
                app: Some(rest[at + 1..].to_vec()),
            }),
        }
    }
}

pub async fn run(args: PodArgs) -> anyhow::Result<()> {
    let commands = Commands::split(&args.rest)?;
    // Installed before any child starts, so a stop during init is not lost.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let proxy_binary = launch::binary_path("seam-proxy")?;

    if args.transparent {
        init(&proxy_binary, &args).await?;
    }
    let (admin, admin_seen) = watch::channel(None);
    let mut proxy = Supervised::start(&proxy_binary, &commands.proxy_args, &args, &admin)?;
    let mut app: Option<Child> = None;
    let mut app_waiting = commands.app.as_deref();
    let app_deadline = Instant::now() + args.app_start_timeout;
    let mut backoff = RestartBackoff::default();
    let mut restart_at: Option<Instant> = None;

    loop {
        tokio::select! {
            _ = terminate.recv() => return stop(proxy, app, args.stop_timeout, "SIGTERM").await,
            _ = interrupt.recv() => return stop(proxy, app, args.stop_timeout, "SIGINT").await,
            ready = readiness::proxy_ready(admin_seen.clone(), app_deadline), if app_waiting.is_some() => {
                if !ready {
                    eprintln!("seamctl pod: seam-proxy is not ready after {:?}; starting the app anyway", args.app_start_timeout);
                }
                if let Some(command) = app_waiting.take() {
                    app = Some(start_app(command)?);
                }
            }
            status = wait_app(&mut app) => {
                let status = status.context("cannot wait for the app")?;
                eprintln!("seamctl pod: the app exited ({status}); stopping the proxy");
                stop(proxy, None, args.stop_timeout, "the app's exit").await?;
                std::process::exit(exit_code(status));
            }
            status = proxy.wait() => {
                let status = status.context("cannot wait for seam-proxy")?;
                let delay = backoff.delay_after(proxy.ran_for());
                eprintln!("seamctl pod: seam-proxy exited ({status}); starting it again in {delay:?}");
                restart_at = Some(Instant::now() + delay);
            }
            () = sleep_until(restart_at) => {
                restart_at = None;
                proxy = Supervised::start(&proxy_binary, &commands.proxy_args, &args, &admin)?;
            }
        }
    }
}

/// Sleeps until `at`; never resolves when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs `seam-proxy init` in this namespace, as root, and fails if it fails.
async fn init(proxy_binary: &std::path::Path, args: &PodArgs) -> anyhow::Result<()> {
    let status = Command::new(proxy_binary)
        .arg("init")
        .arg("--proxy-uid")
        .arg(args.proxy_uid.to_string())
        .args(&args.init_args)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("cannot run {} init", proxy_binary.display()))?;
    if !status.success() {
        bail!(
            "seam-proxy init failed ({status}), so no app is started; its message is above (transparent mode needs `cap_add: [NET_ADMIN]`)"
        );
    }
    Ok(())
}

/// The proxy, as a child that is started again when it exits.
struct Supervised {
    child: Option<Child>,
    started: Instant,
}

impl Supervised {
    fn start(
        binary: &std::path::Path,
        proxy_args: &[String],
        args: &PodArgs,
        admin: &watch::Sender<Option<SocketAddr>>,
    ) -> anyhow::Result<Self> {
        let handover =
            handover::prepare(&args.trust_anchors, &args.join_token_file, &args.work_dir)?;
        let mut child = Command::new(binary)
            .args(proxy_args)
            // Flags given in PROXY_FLAGS win over these, as a flag wins over its variable.
            .env("SEAM_TRUST_ANCHORS", &handover.trust_anchors)
            .env("SEAM_JOIN_TOKEN", &handover.join_token)
            .env_remove("SEAM_JOIN_TOKEN_FILE")
            .uid(args.proxy_uid)
            .gid(args.proxy_uid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        if let Some(stdout) = child.stdout.take() {
            readiness::forward_stdout(stdout, admin.clone());
        }
        Ok(Self {
            child: Some(child),
            started: Instant::now(),
        })
    }

    fn ran_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the proxy to exit; never resolves while it is not running.
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match &mut self.child {
            Some(child) => {
                let status = child.wait().await;
                self.child = None;
                status
            }
            None => std::future::pending().await,
        }
    }
}

fn start_app(command: &[String]) -> anyhow::Result<Child> {
    let (program, app_args) = command
        .split_first()
        .context("the app's command is empty")?;
    Command::new(program)
        .args(app_args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the app {program:?}"))
}

/// Waits for the app to exit; never resolves when there is none.
async fn wait_app(app: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match app {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to the proxy and the app, a bounded wait for both, then SIGKILL.
async fn stop(
    mut proxy: Supervised,
    app: Option<Child>,
    timeout: Duration,
    why: &str,
) -> anyhow::Result<()> {
    let mut children: Vec<Child> = proxy.child.take().into_iter().chain(app).collect();
    eprintln!(
        "seamctl pod: stopping {} process(es) on {why}",
        children.len()
    );
    for child in &children {
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            // It may have exited already; the wait below tells.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    for child in &mut children {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "seamctl pod: a child was still running {timeout:?} after SIGTERM; killing it"
            );
            let _ = child.kill().await;
        }
    }
    Ok(())
}

/// The exit code a shell would give for `status`: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}
