//! `seamctl demo`: a whole mesh on one machine, on loopback ports the OS picks.
//!
//! It starts, in this order (each a child process, see `children`):
//!
//! 1. a control plane, with its state directory and mesh file in a temporary directory;
//!    the mesh file already holds a random join token per service and `endpoints: []`;
//! 2. for each of `loadgen`, `front`, `middle`, `back`: a sample app (`seamctl sample-app`,
//!    port 0) and then its `seam-proxy` with `--app` set to it (ports 0). A sample app must
//!    know its proxy's outbound address before that proxy exists, so the demo reserves that
//!    one port up front (bind port 0, release it) and starts the pair again if someone
//!    else took the port in between;
//! 3. the mesh file rewritten with each proxy's real inbound address, which the control
//!    plane hot-reloads (the demo polls its `/mesh` until it has them all), and then a
//!    wait on every proxy's `/ready`. The control plane's web dashboard (`/ui` on its
//!    admin listener) is printed among the addresses.
//!
//! Traffic goes to loadgen's *app*, not to its proxy: loadgen's app then calls front the
//! way any meshed app would (through its own proxy's outbound listener), so each hop of
//! loadgen → front → middle → back crosses two proxies over mTLS, and every answer carries
//! the identity each service saw calling it. The rate is fixed (`--rate`, default 20/s)
//! and bounded by a per-request timeout (see `traffic`); the demo runs until Ctrl-C,
//! SIGTERM (or SIGHUP, SIGQUIT) or `--duration`, printing a summary each second (see
//! `summary`), and every few seconds and at the end the table `seamctl stat` shows,
//! from the proxies' own metrics (see `stat`).
//!
//! Shutdown sends SIGTERM to the apps and proxies, then to the control plane, waits a
//! bounded time for each, and kills what is left. The temporary directory goes with the
//! demo; `--log-dir` keeps the children's logs.

mod mesh_file;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::future::select_all;
use parking_lot::Mutex;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior};

use super::children::{ChildId, Children};
use super::stat;
use super::summary::Window;
use super::traffic;
use crate::launch;

/// The services of the demo, in call order: each calls the next one.
const SERVICES: [&str; 4] = ["loadgen", "front", "middle", "back"];

const MESH_RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter than the demo's own stop timeout, so proxies drain and exit by themselves.
const PROXY_SHUTDOWN_GRACE: &str = "2s";
const START_ATTEMPTS: usize = 3;
/// How often the per-service table from the proxies' metrics is printed.
const STAT_EVERY_SECS: u64 = 5;
/// How the OS says a port is taken (`EADDRINUSE`), as it appears in a child's log.
const PORT_TAKEN: &str = "Address already in use";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop by itself after sending traffic for this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Requests per second sent through the mesh.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate: u32,
    /// Keep the children's logs (stderr) in this directory instead of the temporary one
    /// that is removed when the demo stops.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

/// One meshed service: where its sample app and its proxy listen.
struct Workload {
    service: &'static str,
    app: SocketAddr,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
}

struct Demo {
    dir: tempfile::TempDir,
    tokens: Vec<String>,
    children: Children,
    control_plane_admin: Option<SocketAddr>,
    workloads: Vec<Workload>,
}

/// Why the demo's main loop ended.
enum Stop {
    Signal,
    Elapsed,
    /// Whoever read the output went away (`seamctl demo | head`).
    ReaderGone,
    Failed(String),
}

impl Stop {
    /// Says so at once: stopping the children can take a few seconds.
    fn signal(name: &'static str) -> Self {
        super::say(&format!("\n{name} received: stopping the demo."));
        Self::Signal
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // Installed first, so that Ctrl-C during startup also stops cleanly.
    let mut signals = StopSignals::new()?;

    let mut demo = Demo::new(args.log_dir.clone())?;
    let started = tokio::select! {
        started = demo.start() => started.map(|()| None),
        name = signals.recv() => Ok(Some(Stop::signal(name))),
    };
    let outcome = match started {
        Ok(Some(stop)) => Ok(stop),
        Ok(None) => Ok(demo.run_traffic(&args, &mut signals).await),
        Err(error) => Err(error),
    };
    let stopped = demo.children.stop().await;
    match outcome? {
        Stop::Failed(why) => bail!("{why}"),
        Stop::Signal | Stop::Elapsed | Stop::ReaderGone => stopped,
    }
}

impl Demo {
    fn new(log_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("seam-demo-")
            .tempdir()
            .context("cannot create the demo's temporary directory")?;
        let log_dir = log_dir.unwrap_or_else(|| dir.path().join("logs"));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        Ok(Self {
            dir,
            tokens: SERVICES
                .iter()
                .map(|_| format!("{:032x}", rand::random::<u128>()))
                .collect(),
            children: Children::new(log_dir),
            control_plane_admin: None,
            workloads: Vec::new(),
        })
    }

    fn mesh_file(&self) -> PathBuf {
        self.dir.path().join("mesh.yaml")
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        super::say(&format!(
            "Starting the Seam demo in {}",
            self.dir.path().display()
        ));
        self.write_mesh_file(&[])?;

        let state_dir = self.dir.path().join("state");
        let control_plane_args = flags(&[
            ("--mesh-file", self.mesh_file().display().to_string()),
            ("--state-dir", state_dir.display().to_string()),
            ("--listen", "127.0.0.1:0".into()),
            ("--admin", "127.0.0.1:0".into()),
        ]);
        let binary = launch::binary_path("seam-control-plane")?;
        let control_plane = self
            .children
            .spawn("control-plane", &binary, &control_plane_args)
            .await?;
        let grpc = self.children.get(control_plane).addr("grpc");
        let admin = self.children.get(control_plane).addr("admin");
        self.control_plane_admin = Some(admin);
        self.children.wait_ready(control_plane).await?;
        super::say(&format!("  control plane  grpc {grpc}  admin {admin}"));
        super::say(&format!("  dashboard      http://{admin}/ui"));

        let trust_anchors = state_dir.join("ca.pem");
        let mut proxies = Vec::new();
        for (index, service) in SERVICES.iter().enumerate() {
            let (workload, proxy) = self
                .start_workload(index, service, grpc, &trust_anchors)
                .await?;
            super::say(&format!(
                "  {service:<8} app {}  proxy inbound {}  outbound {}  admin {}",
                workload.app, workload.inbound, workload.outbound, workload.admin,
            ));
            self.workloads.push(workload);
            proxies.push(proxy);
        }

        let endpoints: Vec<SocketAddr> = self.workloads.iter().map(|w| w.inbound).collect();
        self.write_mesh_file(&endpoints)?;
        self.wait_for_mesh(admin, &endpoints).await?;
        for proxy in proxies {
            self.children.wait_ready(proxy).await?;
        }
        self.print_intro();
        Ok(())
    }

    /// Starts one service's sample app and proxy, again when the reserved outbound port was
    /// taken by someone else before the proxy bound it (its log then says so).
    async fn start_workload(
        &mut self,
        index: usize,
        service: &'static str,
        grpc: SocketAddr,
        trust_anchors: &Path,
    ) -> anyhow::Result<(Workload, ChildId)> {
        let token_file = self.dir.path().join(format!("{service}.token"));
        std::fs::write(&token_file, &self.tokens[index])?;
        let seamctl = std::env::current_exe().context("cannot find seamctl itself")?;
        let seam_proxy = launch::binary_path("seam-proxy")?;
        let next = SERVICES.get(index + 1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outbound = match next {
                Some(_) => reserve_loopback_port()?,
                None => SocketAddr::from(([127, 0, 0, 1], 0)),
            };
            let mut app_args = vec!["sample-app".to_owned()];
            app_args.extend(flags(&[
                ("--name", service.to_string()),
                ("--listen", "127.0.0.1:0".into()),
            ]));
            if let Some(next) = next {
                app_args.extend(flags(&[
                    ("--next", next.to_string()),
                    ("--outbound", outbound.to_string()),
                ]));
            }
            let app = self
                .children
                .spawn(&format!("{service} app"), &seamctl, &app_args)
                .await?;
            let app_addr = self.children.get(app).addr("app");

            let proxy_args = flags(&[
                ("--service", service.to_string()),
                ("--control-plane", grpc.to_string()),
                ("--trust-anchors", trust_anchors.display().to_string()),
                ("--join-token-file", token_file.display().to_string()),
                ("--inbound", "127.0.0.1:0".into()),
                ("--outbound", outbound.to_string()),
                ("--admin", "127.0.0.1:0".into()),
                ("--app", app_addr.to_string()),
                ("--shutdown-grace", PROXY_SHUTDOWN_GRACE.into()),
            ]);
            let proxy_name = format!("{service} proxy");
            match self
                .children
                .spawn(&proxy_name, &seam_proxy, &proxy_args)
                .await
            {
                Ok(proxy) => {
                    let process = self.children.get(proxy);
                    let workload = Workload {
                        service,
                        app: app_addr,
                        inbound: process.addr("inbound"),
                        outbound: process.addr("outbound"),
                        admin: process.addr("admin"),
                    };
                    return Ok((workload, proxy));
                }
                Err(error)
                    if attempt < START_ATTEMPTS && format!("{error:#}").contains(PORT_TAKEN) =>
                {
                    eprintln!("  {proxy_name}: port {outbound} was taken; starting again");
                    self.children.kill_last().await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes the mesh file: every service with its join token and the given endpoints
    /// (one per service, in `SERVICES` order; none when `endpoints` is empty).
    fn write_mesh_file(&self, endpoints: &[SocketAddr]) -> anyhow::Result<()> {
        let path = self.mesh_file();
        // Written beside it and renamed over it, so the control plane (which watches the
        // directory) never reads a half-written file.
        let write = || -> std::io::Result<()> {
            let mut file = tempfile::NamedTempFile::new_in(self.dir.path())?;
            let text = mesh_file::render(&SERVICES, &self.tokens, endpoints);
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.persist(&path)?;
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    /// Polls the control plane's `/mesh` until every service lists its proxy.
    async fn wait_for_mesh(
        &self,
        admin: SocketAddr,
        endpoints: &[SocketAddr],
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + MESH_RELOAD_TIMEOUT;
        let mut last = String::new();
        loop {
            if let Ok((200, body)) = launch::http_get(admin, "/mesh").await {
                if mesh_file::lists_endpoints(&body, &SERVICES, endpoints) {
                    return Ok(());
                }
                last = body;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the control plane did not load the endpoints from {} within \
                     {MESH_RELOAD_TIMEOUT:?}; its /mesh says: {}",
                    self.mesh_file().display(),
                    last.trim()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn print_intro(&self) {
        let workload = |service: &str| self.workloads.iter().find(|w| w.service == service);
        let (Some(admin), Some(loadgen), Some(front)) = (
            self.control_plane_admin,
            workload("loadgen"),
            workload("front"),
        ) else {
            return;
        };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "\nThe mesh is up: loadgen → front → middle → back, every hop over mTLS between two seam-proxies.\n\
             \nGo through it yourself, as loadgen calling front:\n  \
             curl -s -x http://{} http://front/\n\
             \nLook inside (front's proxy; every proxy has these), and at the control plane:",
            loadgen.outbound
        );
        for path in ["/metrics", "/config", "/identity"] {
            let _ = writeln!(text, "  curl -s http://{}{path}", front.admin);
        }
        let _ = writeln!(text, "  curl -s http://{admin}/proxies");
        let _ = writeln!(text, "  curl -s http://{admin}/api/graph");
        let _ = writeln!(text, "  seamctl status --admin {admin}");
        let _ = writeln!(text, "  seamctl stat --admin {admin}");
        let _ = writeln!(text, "  seamctl tap front --admin {admin}");
        let _ = writeln!(
            text,
            "\nThe dashboard (service graph, golden metrics, certificates): http://{admin}/ui"
        );
        let log_dir = self.children.log_dir();
        let kept = if log_dir.starts_with(self.dir.path()) {
            " (removed when the demo stops; --log-dir keeps them)"
        } else {
            ""
        };
        let _ = writeln!(text, "\nLogs: {}{kept}", log_dir.display());
        let _ = writeln!(
            text,
            "Sending traffic to loadgen's app ({}), which calls front through its proxy. Ctrl-C stops everything.\n",
            loadgen.app
        );
        super::say(text.strip_suffix('\n').unwrap_or(&text));
    }

    async fn run_traffic(&mut self, args: &DemoArgs, signals: &mut StopSignals) -> Stop {
        let Some(loadgen) = self.workloads.first() else {
            return Stop::Failed("the demo started no workload".into());
        };
        let window = Arc::new(Mutex::new(Window::default()));
        let generator = tokio::spawn(traffic::generate(loadgen.app, args.rate, window.clone()));
        let started = Instant::now();
        let deadline = args
            .duration
            .map(|secs| started + Duration::from_secs(secs));
        let second = Duration::from_secs(1);
        let mut ticker = tokio::time::interval_at(started + second, second);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        // What `seamctl stat` would show, from the proxies' own metrics.
        let stat_admin = self.control_plane_admin;
        let stat_start = match stat_admin {
            Some(admin) => stat::scrape(admin).await.ok(),
            None => None,
        };
        let mut stat_last = stat_start.clone();
        let mut ticks = 0u64;

        let stop = loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let report = window.lock().take_report();
                    let line = report.render(started.elapsed().as_secs_f64().round() as u64);
                    if !super::say(&line) {
                        break Stop::ReaderGone;
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(STAT_EVERY_SECS)
                        && let (Some(admin), Some(last)) = (stat_admin, &stat_last)
                        && let Ok(now) = stat::scrape(admin).await
                    {
                        super::say(&format!("\n{}", stat::render(last, &now)));
                        stat_last = Some(now);
                    }
                    if let Some(exited) = self.children.exited() {
                        break Stop::Failed(exited);
                    }
                }
                name = signals.recv() => break Stop::signal(name),
                _ = sleep_until(deadline) => break Stop::Elapsed,
            }
        };
        generator.abort();
        let report = window.lock().take_report();
        super::say(&format!("\n{}", report.render_final()));
        if let (Some(admin), Some(start)) = (stat_admin, &stat_start)
            && let Ok(now) = stat::scrape(admin).await
        {
            super::say("\nThe whole run, from the proxies' metrics (as `seamctl stat` shows):");
            super::say(&stat::render(start, &now));
        }
        if report.total > 0 && report.total_ok == 0 {
            return Stop::Failed("no request made it through the mesh".into());
        }
        stop
    }
}

/// The signals that stop the demo. Besides Ctrl-C and SIGTERM, a closed terminal (SIGHUP)
/// and Ctrl-\ (SIGQUIT) must stop it cleanly too: the children sit in their own process
/// groups, so only the demo can stop them, and it would otherwise die without doing so.
struct StopSignals(Vec<(&'static str, Signal)>);

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        let kinds = [
            ("SIGINT", SignalKind::interrupt()),
            ("SIGTERM", SignalKind::terminate()),
            ("SIGHUP", SignalKind::hangup()),
            ("SIGQUIT", SignalKind::quit()),
        ];
        let mut signals = Vec::new();
        for (name, kind) in kinds {
            signals.push((name, signal(kind)?));
        }
        Ok(Self(signals))
    }

    /// Waits for the next of them and says which.
    async fn recv(&mut self) -> &'static str {
        let waits = self.0.iter_mut().map(|(name, signal)| {
            Box::pin(async move {
                signal.recv().await;
                *name
            })
        });
        select_all(waits).await.0
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `[("--name", "front")]` → `["--name", "front"]`.
fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(flag, value)| [(*flag).to_owned(), value.clone()])
        .collect()
}

/// A loopback address with a port free right now, for a listener whose address must be
/// known before its process starts.
fn reserve_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot reserve a port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_pair_up() {
        assert_eq!(
            flags(&[
                ("--name", "front".into()),
                ("--listen", "127.0.0.1:0".into())
            ]),
            ["--name", "front", "--listen", "127.0.0.1:0"]
        );
    }
}
