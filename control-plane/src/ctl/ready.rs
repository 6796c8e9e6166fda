//! `seamctl ready ADDR` (hidden): exits 0 when the admin listener at ADDR answers 200 on
//! `/ready`, else 1 with what it answered. It is the health check of Seam's containers,
//! whose image has no shell or curl to run one.

use anyhow::{Context, bail};

use crate::ctl::status::resolve;
use crate::launch;

#[derive(Debug, clap::Args)]
pub struct ReadyArgs {
    /// An admin listener (HOST:PORT): the control plane's or a proxy's.
    #[arg(default_value = "127.0.0.1:9990")]
    pub admin: String,
}

pub async fn run(args: ReadyArgs) -> anyhow::Result<()> {
    let Some(admin) = resolve(&args.admin).await?.into_iter().next() else {
        bail!("{:?} resolves to no address", args.admin);
    };
    let (status, body) = launch::http_get(admin, "/ready")
        .await
        .with_context(|| format!("cannot reach {admin}"))?;
    if status != 200 {
        bail!("{admin}/ready answered {status}: {}", body.trim());
    }
    Ok(())
}
