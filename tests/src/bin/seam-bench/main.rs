//! `seam-bench`: Seam against real peers (HAProxy, nginx) and no proxy at all, on the same
//! machine in one run, over the same two-hop path with the same certificates:
//!
//! ```text
//! load ──plain──► hop 1 ══TLS 1.3, client certificate══► hop 2 ──plain──► upstream (1 KiB)
//! ```
//!
//! Per contender: latency percentiles at a fixed, open-loop request rate (oha, corrected
//! for coordinated omission), closed-loop maximum throughput (wrk; h2load for HTTP/2), the
//! CPU time the hop processes spent per 1,000 requests at the fixed rate, and the peak RSS
//! of the largest hop process. HTTP/1.1 with keep-alive is the headline; HTTP/2 and a new
//! connection per request follow, then opaque TCP: the same two hops carrying raw bytes
//! (a 64-byte request, a 1 KiB answer) on processes of their own, driven by the bench's
//! own load generator (`seam-bench tcp-load`). A peer, module or load tool that is not
//! installed is reported with the command that installs it. Prints a markdown table;
//! `--json FILE` writes the numbers.
//!
//! `cargo run --release -p seam-tests --bin seam-bench [-- --quick] [-- --json FILE]`

mod certs;
mod contenders;
mod cp_load;
mod instructions;
mod load;
mod measure;
mod procstat;
mod report;
mod tcp_exchange;
mod tcp_load;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "seam-bench",
    about = "Seam's two-hop benchmark against HAProxy and nginx"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A short run (about two minutes) for CI smoke tests; the numbers are only indicative.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The fixed request rate of the latency runs (requests per second).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Run only these contenders (comma-separated; `direct` always runs, as the baseline),
    /// to iterate quickly on one of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// How many endpoints Seam's hop 2 service lists: hop 2 listens on that many loopback
    /// addresses (127.0.0.1, 127.0.0.2, ...), so hop 1 balances over them all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    endpoints: u16,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the shared upstream (the bench starts this itself).
    #[command(hide = true)]
    Upstream,
    /// Only build the Seam binaries a run would start, then exit (CI builds before it
    /// times the run).
    #[command(hide = true)]
    Build,
    /// Drive the opaque TCP scenario's load (the bench starts this itself, pinned).
    #[command(hide = true, subcommand)]
    TcpLoad(tcp_load::Run),
    /// The control plane under many proxies: convergence, memory and CPU (see
    /// control-plane/docs/scale.md).
    ControlPlane(cp_load::Args),
    /// Instructions per request on each Seam hop, counted by callgrind (needs valgrind).
    Instructions(instructions::Args),
}

/// How long each kind of run lasts, and into how many rounds it is split.
#[derive(Clone, Copy, Debug)]
pub struct Durations {
    /// Closed-loop load before the first round on a contender's processes.
    pub warm_up: Duration,
    /// The HTTP/1.1 fixed-rate load, all rounds together.
    pub latency: Duration,
    /// The other fixed-rate loads (HTTP/2, new connections, opaque TCP), all rounds
    /// together.
    pub other: Duration,
    /// How many parts each fixed-rate load is split into (the contenders taking turns).
    pub latency_rounds: u32,
    /// Each maximum-throughput run of the HTTP scenarios.
    pub throughput: Duration,
    /// Each maximum-throughput run of opaque TCP: shorter than the HTTP ones, to keep the
    /// full run within its budget; the bench's own closed loop counts from its first
    /// request to its last answer, with no ramp to wait out.
    pub tcp_throughput: Duration,
    /// How many times each maximum-throughput run is repeated (the contenders taking
    /// turns).
    pub throughput_rounds: u32,
}

impl Durations {
    /// The full run takes five rounds of each load, so that a stall of the shared machine
    /// in two of a contender's rounds still does not decide its median; the quick run,
    /// a smoke test, takes fewer.
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                warm_up: Duration::from_secs(1),
                latency: Duration::from_secs(3),
                other: Duration::from_secs(2),
                latency_rounds: 3,
                throughput: Duration::from_secs(2),
                tcp_throughput: Duration::from_secs(1),
                throughput_rounds: 2,
            }
        } else {
            Self {
                warm_up: Duration::from_secs(2),
                latency: Duration::from_secs(15),
                other: Duration::from_secs(8),
                latency_rounds: 5,
                throughput: Duration::from_secs(5),
                tcp_throughput: Duration::from_secs(2),
                throughput_rounds: 5,
            }
        }
    }

    /// The fixed-rate load of `mode`, all rounds together.
    pub fn fixed_rate(&self, mode: load::Mode) -> Duration {
        match mode {
            load::Mode::Http1 => self.latency,
            _ => self.other,
        }
    }

    /// Each maximum-throughput run of `mode`.
    pub fn max(&self, mode: load::Mode) -> Duration {
        match mode {
            load::Mode::Tcp => self.tcp_throughput,
            _ => self.throughput,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Upstream) => return upstream::run(),
        Some(Command::Build) => return seam_tests::fresh_binaries::ensure(),
        Some(Command::TcpLoad(run)) => return tcp_load::run(&run),
        Some(Command::ControlPlane(_) | Command::Instructions(_)) | None => {}
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("another crypto provider is already installed"))?;
    // Under `cargo run`, the Seam binaries are built in the bench's profile first: cargo
    // builds only the bench itself, and measuring stale proxies would mislead.
    seam_tests::fresh_binaries::ensure()?;
    if let Some(Command::ControlPlane(cp_args)) = &args.command {
        return cp_load::run(cp_args);
    }
    if let Some(Command::Instructions(instruction_args)) = &args.command {
        return instructions::run(instruction_args);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let results = runtime.block_on(measure::run_all(&measure::Plan {
        durations: Durations::new(args.quick),
        rate: args.rate,
        only: args.only.clone(),
        endpoints: args.endpoints,
    }))?;
    print!("{}", report::markdown(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report::json(&results))?;
        std::fs::write(path, json + "\n")?;
        eprintln!("seam-bench: wrote {}", path.display());
    }
    Ok(())
}
