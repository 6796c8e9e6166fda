//! `seamctl`: parses the command line and hands it to `seam_control_plane::ctl`.

use std::process::ExitCode;

use clap::Parser;
use seam_control_plane::ctl::{self, Cli};
use tracing_subscriber::EnvFilter;

// One thread is plenty: the demo drives a few dozen requests a second and the sample app
// serves one client, and the demo already runs nine other processes on the same cores.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match ctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The whole cause chain on one line, each cause once, without a backtrace.
            eprintln!(
                "seamctl: {}",
                seam_proto::report::error_chain(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}
