//! `seam-bench control-plane`: the control plane under many proxies. Starts the real
//! `seam-control-plane` (the bench's profile) over a generated mesh file of `--services`
//! services and `--endpoints` endpoints, obtains a few real mesh certificates from it
//! (proxies share them), opens `--proxies` real discovery streams over TLS from this one
//! process, each subscribed to `--subscriptions` services spread so that every service
//! has subscribers, and ACKs every update like a proxy. Then it rewrites the mesh file:
//! one service's endpoints, many services', every service's; for each change it times,
//! per subscribed proxy, the file write to the last update arriving. Last, a sustained
//! phase of `--rate` changes a second for `--sustained` seconds samples the control
//! plane's memory and counts the ACKs it recorded. `--proxies` takes a list to show
//! growth. Fails if any proxy never converges (the CI smoke test relies on that); asserts
//! no timing.

mod fleet;
mod mesh;
mod phases;
mod summary;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use seam_control_plane::launch::SeamProcess;

use crate::procstat;
use fleet::Fleet;
use mesh::GeneratedMesh;
use phases::Writer;
pub use summary::Run;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many proxies (discovery streams); a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    proxies: Vec<usize>,
    /// How many services the mesh file lists.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// How many endpoints in total, shared evenly among the services (at least one each).
    #[arg(long, default_value_t = 10_000)]
    endpoints: usize,
    /// How many services each proxy subscribes to.
    #[arg(long, default_value_t = 8)]
    subscriptions: usize,
    /// How many mesh certificates the proxies share.
    #[arg(long, default_value_t = 8)]
    certificates: usize,
    /// How many handshakes are in flight at once while the proxies connect.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// How long the sustained phase lasts, in seconds (0: skip it).
    #[arg(long, default_value_t = 60)]
    sustained: u64,
    /// Mesh file changes per second in the sustained phase.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The file descriptors a run may need: one socket per proxy here and one in the control
/// plane (which inherits the limit), plus slack.
fn raise_fd_limit(proxies: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let wanted = (proxies as u64 + 1024).min(hard);
    if wanted > soft {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)?;
    }
    if (proxies as u64 + 256) > hard {
        bail!("{proxies} proxies need more file descriptors than the hard limit {hard}");
    }
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.services == 0 || args.endpoints < args.services {
        bail!("--endpoints must be at least --services (every service needs an endpoint)");
    }
    raise_fd_limit(args.proxies.iter().copied().max().unwrap_or(0))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut runs = Vec::new();
    for proxies in &args.proxies {
        eprintln!("seam-bench control-plane: {proxies} proxies");
        runs.push(runtime.block_on(run_one(args, *proxies))?);
    }
    print!("{}", summary::table(&runs));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary::json(&runs))?;
        std::fs::write(path, json + "\n")?;
        eprintln!("seam-bench: wrote {}", path.display());
    }
    let unconverged: usize = runs.iter().map(Run::unconverged).sum();
    if unconverged > 0 {
        bail!("{unconverged} proxy updates never arrived (see the table)");
    }
    Ok(())
}

async fn run_one(args: &Args, proxies: usize) -> anyhow::Result<Run> {
    let dir = tempfile::Builder::new()
        .prefix("seam-bench-cp-")
        .tempdir()?;
    let mesh_path = dir.path().join("mesh.yaml");
    let mut writer = Writer {
        mesh: GeneratedMesh::new(args.services, args.endpoints),
        path: &mesh_path,
        generation: 0,
    };
    seam_tests::mesh::write_atomically(&mesh_path, &writer.mesh.render())?;
    let state_dir = dir.path().join("state");
    let mut command = seam_tests::mesh::seam_command("seam-control-plane")?;
    command
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--mesh-file")
        .arg(&mesh_path)
        // A line per connecting proxy at info would be most of what the run measures.
        .env("RUST_LOG", "warn");
    let log = std::fs::File::create(dir.path().join("control-plane.log"))?;
    let mut control_plane =
        SeamProcess::spawn("seam-control-plane", command, Stdio::from(log)).await?;
    control_plane
        .wait_ready(Duration::from_secs(60))
        .await
        .context("the control plane did not become ready")?;
    let pid = control_plane.pid().context("the control plane exited")?;
    let (grpc, admin) = (control_plane.addr("grpc"), control_plane.addr("admin"));

    let mut credentials = Vec::new();
    for index in 0..args.certificates.clamp(1, args.services) {
        let name = mesh::service_name(index);
        let token = mesh::join_token(index);
        credentials.push(fleet::credentials(grpc, &state_dir.join("ca.pem"), &name, &token).await?);
    }
    let fleet = Arc::new(Fleet::new(proxies, args.services, args.subscriptions));
    let connecting = tokio::time::Instant::now();
    fleet::connect(&fleet, grpc, &credentials, args.connect_concurrency).await?;
    let behind = phases::wait_converged(&fleet, &writer.mesh, phases::CONVERGENCE_TIMEOUT).await;
    if behind > 0 {
        bail!("{behind} subscriptions got no first update");
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();
    let rss_connected = procstat::current_rss(pid)?;
    eprintln!("  connected and subscribed in {connect_seconds:.1} s");

    let cpu_before = procstat::cpu_time(pid)?;
    let one = phases::measure(&fleet, &mut writer, 10, 1).await?;
    let many = phases::measure(&fleet, &mut writer, 5, args.services / 10).await?;
    let all = phases::measure(&fleet, &mut writer, 3, args.services).await?;
    let changes = (one.changes + many.changes + all.changes) as f64;
    let cpu_per_change = (procstat::cpu_time(pid)? - cpu_before).as_secs_f64() * 1000.0 / changes;
    eprintln!("  measured {changes} changes");
    let sustained = if args.sustained > 0 {
        let cpu = procstat::cpu_time(pid)?;
        let sustained = phases::sustained(
            &fleet,
            &mut writer,
            (pid, admin),
            args.rate,
            Duration::from_secs(args.sustained),
        )
        .await?;
        let cpu = (procstat::cpu_time(pid)? - cpu).as_secs_f64();
        Some((sustained, cpu))
    } else {
        None
    };
    let run = Run {
        proxies,
        services: args.services,
        endpoints: args.endpoints,
        subscriptions: fleet.subscriptions,
        connect_seconds,
        one,
        many,
        all,
        cp_peak_rss: procstat::peak_rss(pid)?,
        cp_rss_connected: rss_connected,
        cp_cpu_ms_per_change: cpu_per_change,
        sustained,
        streams_ended: fleet.ended.load(std::sync::atomic::Ordering::Relaxed),
    };
    control_plane.terminate()?;
    let _ = tokio::time::timeout(Duration::from_secs(10), control_plane.wait()).await;
    Ok(run)
}
