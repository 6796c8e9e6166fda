//! `seamctl`, the operator's command line: its clap definition and the dispatch to one
//! module per subcommand. `demo` runs a whole mesh on loopback, `status` reads the control
//! plane's view of its proxies, `stat` shows live traffic numbers from their metrics, and the hidden `sample-app` is the tiny service the demo
//! puts behind each proxy. Two more hidden ones run Seam in containers: `pod`, the
//! supervisor of a meshed instance (its proxy, and its app if it has one), and `ready`,
//! a health check for images with no shell.
//! `inject` meshes a docker-compose project, and `tap` streams live requests from the
//! proxies of a service.

pub mod ca;
pub mod certs;
mod children;
pub mod demo;
pub(crate) mod fleet;
pub mod inject;
pub mod install;
pub mod kube_inject;
pub mod pod;
pub mod ready;
pub mod sample_app;
pub mod stat;
pub(crate) mod stat_table;
pub mod status;
mod summary;
pub mod tap;
mod traffic;
pub mod uninject;
pub mod verify;

use std::io::Write as _;

use clap::{Parser, Subcommand};

/// The operator CLI of the Seam service mesh.
#[derive(Debug, Parser)]
#[command(
    name = "seamctl",
    version,
    about = "Operate a Seam service mesh: run the demo, inspect the control plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a control plane and four meshed services (loadgen → front → middle → back) on
    /// loopback, send steady traffic through them and print what happens each second.
    Demo(demo::DemoArgs),
    /// Show every proxy connected to the control plane: identity, subscriptions, NACKs.
    Status(status::StatusArgs),
    /// Success rate, requests per second and p50/p95/p99 latency per service and per
    /// caller → callee edge, from the proxies' metrics, refreshed like `top`.
    Stat(stat::StatArgs),
    /// The mesh CA: `ca rotate` rotates the root, `ca show` prints the trust bundle.
    Ca(ca::CaArgs),
    /// Every proxy's certificate (identity, issuer, expiry), with warnings.
    Certs(certs::CertsArgs),
    /// For every caller → callee pair, whether its traffic was mTLS and with which identities.
    Verify(verify::VerifyArgs),
    /// Live requests seen by every proxy of a service, as they finish (filters apply at
    /// the proxies; never header values or bodies unless --headers names them).
    Tap(tap::TapArgs),
    /// Mesh an existing docker-compose project: writes a meshed copy of its compose file
    /// (a sidecar per service, a control plane), a mesh file and the join tokens.
    /// Kubernetes: `-f FILE|DIR|-` prints the YAML with Seam's sidecar injected into every
    /// workload's pod template.
    Inject(inject::InjectArgs),
    /// Takes out of Kubernetes YAML what `inject -f` (or the webhook) put in.
    Uninject(uninject::UninjectArgs),
    /// Prints the manifests that install Seam in a cluster
    /// (`seamctl install | kubectl apply -f -`).
    Install(install::InstallArgs),
    /// The sample service `seamctl demo` runs behind each proxy.
    #[command(hide = true)]
    SampleApp(sample_app::SampleAppArgs),
    /// PID 1 of a meshed container: runs (and restarts) its proxy, and its app if given.
    #[command(hide = true)]
    Pod(pod::PodArgs),
    /// Exits 0 when an admin listener answers 200 on `/ready` (a container health check).
    #[command(hide = true)]
    Ready(ready::ReadyArgs),
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Stat(args) => stat::run(args).await,
        Command::SampleApp(args) => sample_app::run(args).await,
        Command::Ca(args) => ca::run(args).await,
        Command::Certs(args) => certs::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Tap(args) => tap::run(args).await,
        Command::Inject(args) => inject::run(args),
        Command::Uninject(args) => uninject::run(args),
        Command::Install(args) => install::run(args),
        Command::Pod(args) => pod::run(args).await,
        Command::Ready(args) => ready::run(args).await,
    }
}

/// Prints a line of a command's progress (the demo's): a reader that went away, or any
/// other failure to write, is `false` and never a panic, so a command that is stopping
/// still stops its children cleanly.
pub(crate) fn say(line: &str) -> bool {
    print_line(line).unwrap_or(false)
}

/// Prints one line of a streaming command's output (`tap`, `stat`). `Ok(false)` when the
/// reader has gone away (`seamctl tap front | head`): the command then ends quietly, as
/// Unix tools do, instead of failing on the closed pipe.
pub(crate) fn print_line(line: &str) -> std::io::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err),
    }
}
