//! `seam-bench instructions`: the user-space instructions each Seam hop executes per
//! request, counted by callgrind. The clock on a shared 2-core machine cannot see a change
//! of a few percent in what a request costs; an instruction count is the same from run to
//! run, so it can.
//!
//! Seam's two paths of the main bench (HTTP, and opaque TCP on processes of their own) run
//! with every hop under `valgrind --tool=callgrind`, pinned to a CPU as in the bench: the
//! bench writes a wrapper for `seam-proxy` (the one in `SEAM_BIN_DIR` when set, to measure
//! another build) and runs itself again with `SEAM_BIN_DIR` pointing at it. Each scenario
//! sends sequential requests from this process: a warm-up, then the hops' counters are
//! zeroed (`callgrind_control -z`), the measured requests sent, and the counters dumped
//! (`callgrind_control -d`). The hops do some work with no request (timers, the control
//! plane's discovery stream, the dashboard's scrape of their admin endpoints every 2 s),
//! so an idle window is counted the same way on each path before its first scenario, and
//! its rate per second is taken off each scenario in proportion to its duration; both
//! figures are printed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::contenders::{self, Pinning, check_answer, get_request};
use crate::load::Mode;
use crate::tcp_exchange;

/// Set in the environment of the re-run bench, which then measures.
const WRAPPED: &str = "SEAM_BENCH_UNDER_CALLGRIND";
/// How long the idle window lasts: several of the dashboard's scrapes.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// How long `callgrind_control` may take: the hop answers when it next runs.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests measured per scenario.
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// Requests sent before the counters are zeroed.
    #[arg(long, default_value_t = 300)]
    warm_up: u64,
    /// Where callgrind writes its files (kept, for `callgrind_annotate`).
    #[arg(long, value_name = "DIR", default_value = "callgrind")]
    out: PathBuf,
}

/// Writes the wrapper directory and runs the bench again with it, or (in that run)
/// measures.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if std::env::var_os(WRAPPED).is_some() {
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(measure(args));
    }
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;
    let bin_dir = out.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let real = seam_tests::mesh::seam_binary("seam-proxy")?;
    let real_dir = real.parent().context("seam-proxy has no directory")?;
    for name in ["seam-control-plane", "seamctl"] {
        let link = bin_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(real_dir.join(name), &link)?;
    }
    let wrapper = bin_dir.join("seam-proxy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={}/callgrind.%p \
             {} \"$@\"\n",
            out.display(),
            real.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(WRAPPED, "1")
        .env("SEAM_BIN_DIR", &bin_dir)
        .status()
        .context("cannot run the bench again under callgrind")?;
    if !status.success() {
        bail!("the run under callgrind failed: {status}");
    }
    Ok(())
}

/// One hop under callgrind.
struct Hop {
    name: &'static str,
    pid: u32,
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    let out = std::fs::canonicalize(&args.out)?;
    // Pinned as in the bench: a hop with one CPU runs tokio's current-thread runtime, and
    // its instructions are those of the runtime the bench measures.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pinning = Pinning::for_cores(cores);
    let (mut upstream, addrs, mesh) =
        crate::measure::start_upstream_and_mesh(pinning.hops.as_deref()).await?;
    eprintln!("seam-bench instructions: starting four proxies under callgrind (slow)");
    let running = contenders::seam::start(&mesh, addrs, &pinning, 1).await?;

    let (requests, warm_up) = (args.requests, args.warm_up);
    let mut rows = Vec::new();
    let mut idle_rates = Vec::new();
    let mut idle = Vec::new();
    for mode in Mode::ALL {
        let (addr, pids) = running
            .path(mode)
            .map_err(|why| anyhow::anyhow!("Seam has no {} path: {why:?}", mode.label()))?;
        let hops = hops(pids)?;
        if mode.opens_its_path() {
            idle = count(&out, &hops, || async {
                tokio::time::sleep(IDLE_WINDOW).await;
                Ok(())
            })
            .await?;
            let path = if mode == Mode::Tcp {
                "TCP path"
            } else {
                "HTTP path"
            };
            idle_rates.extend(
                idle.iter()
                    .map(|c| format!("{path} {} {:.0}k/s", c.hop, c.per_second() / 1000.0)),
            );
        }
        let mut client = Client::connect(mode, addr).await?;
        client
            .send(warm_up)
            .await
            .with_context(|| format!("{}: warm-up", mode.label()))?;
        let counted = count(&out, &hops, || client.send(requests))
            .await
            .with_context(|| format!("{}: measured requests", mode.label()))?;
        rows.push(row(mode.label(), &counted, &idle, requests));
    }

    println!(
        "| scenario | hop 1 instructions per request | hop 2 | hop 1, idle work taken off | hop 2, idle work taken off |"
    );
    println!("|---|---:|---:|---:|---:|");
    for line in rows {
        println!("{line}");
    }
    println!(
        "\n{requests} requests per scenario after {warm_up} to warm up; idle work: {}; callgrind files in {}",
        idle_rates.join(", "),
        out.display()
    );
    running.stop().await?;
    upstream.terminate()?;
    let _ = upstream.wait().await;
    Ok(())
}

fn hops(pids: &[u32]) -> anyhow::Result<[Hop; 2]> {
    match pids {
        [hop1, hop2] => Ok([
            Hop {
                name: "hop 1",
                pid: *hop1,
            },
            Hop {
                name: "hop 2",
                pid: *hop2,
            },
        ]),
        other => bail!("expected two hop processes, found {other:?}"),
    }
}

/// What one hop executed over one window.
struct Counted {
    hop: &'static str,
    instructions: u64,
    elapsed: Duration,
}

impl Counted {
    fn per_second(&self) -> f64 {
        self.instructions as f64 / self.elapsed.as_secs_f64()
    }
}

/// Zeroes the hops' counters, runs `work`, dumps the counters, and reads what each hop
/// executed in between.
async fn count<F, Fut>(out: &Path, hops: &[Hop; 2], work: F) -> anyhow::Result<Vec<Counted>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for hop in hops {
        callgrind_control("-z", hop.pid).await?;
    }
    let started = Instant::now();
    work().await?;
    let elapsed = started.elapsed();
    let mut counted = Vec::new();
    for hop in hops {
        callgrind_control("-d", hop.pid).await?;
        counted.push(Counted {
            hop: hop.name,
            instructions: latest_total(out, hop.pid)?,
            elapsed,
        });
    }
    Ok(counted)
}

async fn callgrind_control(option: &str, pid: u32) -> anyhow::Result<()> {
    let output = tokio::time::timeout(
        CONTROL_TIMEOUT,
        Command::new("callgrind_control")
            .arg(option)
            .arg(pid.to_string())
            .output(),
    )
    .await
    .with_context(|| format!("callgrind_control {option} {pid} did not finish"))?
    .context("cannot run callgrind_control (is valgrind installed?)")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {option} {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The instruction total of the newest dump of `pid` (`callgrind.PID.N`, highest N).
fn latest_total(out: &Path, pid: u32) -> anyhow::Result<u64> {
    let prefix = format!("callgrind.{pid}.");
    let newest = std::fs::read_dir(out)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let part: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((part, entry.path()))
        })
        .max_by_key(|(part, _)| *part)
        .with_context(|| format!("no callgrind dump of {pid} in {}", out.display()))?
        .1;
    let text = std::fs::read_to_string(&newest)?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or(line.strip_prefix("summary:"))
        })
        .and_then(|total| total.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", newest.display()))
}

fn row(label: &str, counted: &[Counted], idle: &[Counted], requests: u64) -> String {
    let per_request = |c: &Counted| c.instructions as f64 / requests as f64;
    let corrected = |c: &Counted, i: &Counted| {
        (c.instructions as f64 - i.per_second() * c.elapsed.as_secs_f64()) / requests as f64
    };
    format!(
        "| {label} | {:.1}k | {:.1}k | {:.1}k | {:.1}k |",
        per_request(&counted[0]) / 1000.0,
        per_request(&counted[1]) / 1000.0,
        corrected(&counted[0], &idle[0]) / 1000.0,
        corrected(&counted[1], &idle[1]) / 1000.0,
    )
}

/// Sends sequential requests to hop 1 as one scenario does.
enum Client {
    Http1(
        SocketAddr,
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    ),
    Http2(
        SocketAddr,
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    ),
    NewConnection(SocketAddr),
    /// The stream and the number of round trips made on it.
    Tcp(TcpStream, u64),
}

impl Client {
    async fn connect(mode: Mode, addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(match mode {
            Mode::Http1 => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(connect(addr).await?))
                        .await?;
                tokio::spawn(connection);
                Self::Http1(addr, sender)
            }
            Mode::Http2 => {
                let (sender, connection) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(connect(addr).await?),
                )
                .await?;
                tokio::spawn(connection);
                Self::Http2(addr, sender)
            }
            Mode::NewConnection => Self::NewConnection(addr),
            Mode::Tcp => Self::Tcp(connect(addr).await?, 0),
        })
    }

    async fn send(&mut self, requests: u64) -> anyhow::Result<()> {
        for _ in 0..requests {
            match self {
                Self::Http1(addr, sender) => {
                    sender.ready().await?;
                    let response = sender.send_request(get_request()?).await?;
                    check_answer(*addr, response).await?;
                }
                Self::Http2(addr, sender) => {
                    sender.ready().await?;
                    let response = sender.send_request(get_request()?).await?;
                    check_answer(*addr, response).await?;
                }
                Self::NewConnection(addr) => {
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(connect(*addr).await?))
                            .await?;
                    let driven = tokio::spawn(connection);
                    let mut request = get_request()?;
                    request.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    let answered = match sender.send_request(request).await {
                        Ok(response) => check_answer(*addr, response).await,
                        Err(err) => Err(err.into()),
                    };
                    driven.await??;
                    answered?;
                }
                Self::Tcp(stream, sent) => {
                    tcp_exchange::round_trip(stream, *sent).await?;
                    *sent += 1;
                }
            }
        }
        Ok(())
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
