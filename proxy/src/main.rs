//! `seam-proxy`: parses flags, sets up logging, the crypto provider and the runtime, runs.
//! `seam-proxy init` instead installs the iptables rules of transparent mode (see `init`).

#![forbid(unsafe_code)]

mod admin;
mod app;
mod backoff;
mod body;
mod config;
mod control_plane;
mod detect;
mod discovery;
mod http1_pool;
mod http2_conn;
mod identity;
mod inbound;
mod init;
mod listeners;
mod metrics;
mod opaque;
mod original_dst;
mod outbound;
mod proxy_error;
mod refusal_log;
mod request_id;
mod server;
mod spawn_boxed;
mod state;
mod tap;
mod telemetry;
mod tls;
mod upgrade;

use clap::{CommandFactory, FromArgMatches};

// mimalloc rather than glibc's malloc: a proxied request makes dozens of small,
// short-lived allocations (headers, body frames, futures), which glibc's malloc served at
// ~15 % of the proxy's CPU time in the benchmark. It takes the place of `malloc` itself
// (the crate's `override` feature), and Rust's default allocator calls `malloc` for every
// alignment up to 16: the crate's own `GlobalAlloc` sends every allocation through
// `mi_malloc_aligned`, whose path for sizes over 1 KiB cost ~1.3k instructions per
// request on hop 1. Built without transparent huge pages, which took the RSS of an
// idle-ish proxy from 16 to 23 MiB.
extern crate mimalloc;

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == init::SUBCOMMAND)
    {
        return init::main(std::env::args_os().skip(2));
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = proxy_args();
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("seam-proxy: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "seam-proxy: {}",
                seam_proto::report::error_chain(err.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// The proxy's flags, parsed as `config::Args::parse` would, with a word on `init` in `--help`.
fn proxy_args() -> config::Args {
    let mut command = config::Args::command().after_help(
        "`seam-proxy init [FLAGS]` instead installs the iptables rules that redirect this \
         network namespace's TCP to the proxy; see `seam-proxy init --help`.",
    );
    config::Args::from_arg_matches(&command.clone().get_matches())
        .unwrap_or_else(|error| error.format(&mut command).exit())
}

/// The tokio runtime: with one CPU to run on (a pinned sidecar), a current-thread runtime,
/// which skips work stealing and wake-ups between threads; else the multi-threaded one with
/// a worker per CPU.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}
