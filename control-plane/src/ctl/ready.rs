//! `seamctl ready ADDR` (hidden): exits 0 when the admin listener at ADDR answers 200 on
//! `/ready`, else 1 with what it answered. It is the health check of Seam's containers,
//! whose image has no shell or curl to run one. With `--wait` it asks again until the
//! answer is 200 or `--timeout` passes: the `postStart` hook of a classic (pre-1.29)
//! sidecar, which holds the app's start until its proxy is ready.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::ctl::status::resolve;
use crate::launch;

/// How often `--wait` asks again.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct ReadyArgs {
    /// An admin listener (HOST:PORT): the control plane's or a proxy's.
    #[arg(default_value = "127.0.0.1:9990")]
    pub admin: String,
    /// Ask until `/ready` answers 200 (or `--timeout` passes) instead of once.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: Duration,
}

pub async fn run(args: ReadyArgs) -> anyhow::Result<()> {
    if !args.wait {
        return check(&args.admin).await;
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let last = match check(&args.admin).await {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if tokio::time::Instant::now() + POLL_EVERY > deadline {
            return Err(last.context(format!(
                "{} not ready after {}",
                args.admin,
                humantime::format_duration(args.timeout)
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn check(admin: &str) -> anyhow::Result<()> {
    let Some(admin) = resolve(admin).await?.into_iter().next() else {
        bail!("{admin:?} resolves to no address");
    };
    let (status, body) = launch::http_get(admin, "/ready")
        .await
        .with_context(|| format!("cannot reach {admin}"))?;
    if status != 200 {
        bail!("{admin}/ready answered {status}: {}", body.trim());
    }
    Ok(())
}
