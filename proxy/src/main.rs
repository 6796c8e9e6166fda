//! `seam-proxy`: parses flags, sets up logging and the crypto provider, runs.

#![forbid(unsafe_code)]

mod admin;
mod app;
mod backoff;
mod body;
mod config;
mod control_plane;
mod detect;
mod discovery;
mod identity;
mod inbound;
mod metrics;
mod outbound;
mod proxy_error;
mod server;
mod state;
mod telemetry;
mod tls;

use clap::Parser;

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
    let args = config::Args::parse();
    match app::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("seam-proxy: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
