//! `seam-control-plane`: parses flags, sets up logging and the crypto provider, runs.

use clap::Parser;
use seam_control_plane::{app, config::Args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match app::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "seam-control-plane: {}",
                seam_proto::report::error_chain(err.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}
