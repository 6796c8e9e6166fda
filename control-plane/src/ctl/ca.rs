//! `seamctl ca rotate`: asks the control plane (its admin port, from the same machine) to
//! rotate the mesh's root, then follows the rotation to its end: a new root is trusted at
//! once, signs after one certificate lifetime, and the old root is retired after another.
//! `seamctl ca show` prints the trust bundle and where a rotation stands.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::ctl::status::resolve;
use crate::launch;

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Rotate the root: introduce a new root, promote it to signing, retire the old one.
    /// Waits until the rotation is complete unless --no-wait is given.
    Rotate(RotateArgs),
    /// Show the trusted roots (the signing one first) and the rotation phase.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The control plane's admin address (HOST:PORT, on this machine).
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
    /// Return once the new root is introduced instead of following the rotation.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
}

/// `GET /ca` as the control plane serves it.
#[derive(Debug, Clone, Deserialize)]
pub struct CaState {
    pub trust_domain: String,
    pub rotation: RotationState,
    pub roots: Vec<RootState>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RotationState {
    pub phase: String,
    pub next_step_in_seconds: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootState {
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub serial: String,
    pub key_id: Option<String>,
    #[serde(default)]
    pub not_after: String,
}

/// How often `rotate` looks at the rotation while it follows it.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// How many failed looks in a row make `rotate` give up following.
const FOLLOW_FAILURES: u32 = 30;

pub async fn run(args: CaArgs) -> anyhow::Result<()> {
    match args.command {
        CaCommand::Rotate(args) => rotate(args).await,
        CaCommand::Show(args) => {
            let admin = first_address(&args.admin).await?;
            print!("{}", render(&fetch(admin).await?));
            Ok(())
        }
    }
}

async fn first_address(admin: &str) -> anyhow::Result<SocketAddr> {
    resolve(admin)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("{admin:?} resolves to no address"))
}

/// Reads `/ca` from the control plane at `admin`.
pub async fn fetch(admin: SocketAddr) -> anyhow::Result<CaState> {
    let (status, body) = launch::http_get(admin, "/ca")
        .await
        .with_context(|| format!("cannot reach the control plane admin at {admin}"))?;
    if status != 200 {
        bail!(
            "the control plane admin at {admin} answered {status} to /ca: {}",
            body.trim()
        );
    }
    serde_json::from_str(&body).with_context(|| format!("unreadable /ca from {admin}"))
}

async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let admin = first_address(&args.admin).await?;
    let (status, body) = launch::http_post(admin, "/ca/rotate")
        .await
        .with_context(|| format!("cannot reach the control plane admin at {admin}"))?;
    if status != 200 {
        bail!(
            "the control plane refused to rotate ({status}): {}",
            body.trim()
        );
    }
    let started: CaState =
        serde_json::from_str(&body).context("unreadable answer to /ca/rotate")?;
    println!("{}", phase_line(&started));
    if args.no_wait {
        return Ok(());
    }
    let mut last_phase = started.rotation.phase.clone();
    let mut failures = 0;
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let state = match fetch(admin).await {
            Ok(state) => {
                failures = 0;
                state
            }
            Err(err) => {
                failures += 1;
                if failures >= FOLLOW_FAILURES {
                    return Err(err.context("lost the control plane while following the rotation; it goes on without seamctl"));
                }
                continue;
            }
        };
        if state.rotation.phase != last_phase {
            println!("{}", phase_line(&state));
            last_phase = state.rotation.phase.clone();
        }
        if state.rotation.phase == "idle" {
            println!("rotation complete");
            return Ok(());
        }
    }
}

fn phase_line(state: &CaState) -> String {
    let what = match state.rotation.phase.as_str() {
        "introduced" => "new root introduced: trusted by proxies as they renew, not signing yet",
        "promoted" => "new root signing; old root still trusted until its certificates expire",
        "idle" => "old root retired",
        other => other,
    };
    match state.rotation.next_step_in_seconds {
        Some(seconds) => format!("{what} (next step in {seconds:.0}s)"),
        None => what.to_owned(),
    }
}

/// The roots table and the rotation phase.
pub fn render(state: &CaState) -> String {
    let mut text = format!(
        "trust domain {}; rotation phase: {}\n",
        state.trust_domain, state.rotation.phase
    );
    for (index, root) in state.roots.iter().enumerate() {
        let role = if index == 0 { "signing" } else { "trusted" };
        text.push_str(&format!(
            "{role:8} key id {}  serial {}  expires {}  {}\n",
            root.key_id.as_deref().unwrap_or("-"),
            root.serial,
            root.not_after,
            root.subject
        ));
    }
    text
}
