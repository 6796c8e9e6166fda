//! The contenders, each started as the same two-hop path in front of the shared upstream:
//!
//! ```text
//! load generator ──plain──► hop 1 ══mTLS (client cert)══► hop 2 ──plain──► upstream
//! ```
//!
//! `direct` has no hops (the load goes straight to the upstream). Each proxy runs this
//! path twice, on separate processes: once for HTTP and once for opaque TCP, so each
//! scenario's CPU and memory are its own, and the HTTP figures stay comparable with
//! runs from before the TCP scenario. Every path is checked with a real request end to
//! end before it is measured, and is stopped with SIGTERM afterwards.

pub mod haproxy;
pub mod nginx;
mod nginx_stream;
pub mod seam;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::process::{Child, Command};

use crate::load::Mode;
use crate::measure::Unmeasured;
use crate::tcp_exchange;
use crate::upstream::BODY_SIZE;

/// The service name hop 2 stands for; every request names it in `Host`.
pub const SERVICE_HOST: &str = "server";

/// The shared upstream's two listeners.
#[derive(Clone, Copy, Debug)]
pub struct Upstream {
    pub http: SocketAddr,
    pub tcp: SocketAddr,
}

/// How long a contender may take to carry its first request end to end.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one opaque TCP check may wait for its answer.
const TCP_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a contender may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where processes run: `None` leaves them to the scheduler.
#[derive(Clone, Debug)]
pub struct Pinning {
    pub load: Option<String>,
    pub hops: Option<String>,
}

impl Pinning {
    /// With two cores or more: the load generator gets CPU 0, the hops and the upstream
    /// share CPU 1 (every contender gets the same single core, so one worker thread each).
    pub fn for_cores(cores: usize) -> Self {
        if cores >= 2 {
            Self {
                load: Some("0".into()),
                hops: Some("1".into()),
            }
        } else {
            Self {
                load: None,
                hops: None,
            }
        }
    }
}

/// A command for `program`, run under `taskset -c CPUS` when pinned.
pub fn pinned_command(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A peer's process (HAProxy or nginx hop), with its stderr in a log file.
pub struct PeerProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl PeerProcess {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr.try_clone()?))
            .stderr(Stdio::from(stderr));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails with the log's text if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("{} exited with {status}:\n{log}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then wait; SIGKILL if it does not exit in time.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.terminate();
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
            bail!(
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                self.name
            );
        }
        Ok(())
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

impl Drop for PeerProcess {
    // SIGTERM rather than SIGKILL: nginx's master must live long enough to stop its worker.
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A contender ready for load.
pub struct Running {
    /// Where the load generator sends HTTP/1.1.
    pub http1: SocketAddr,
    /// Where it sends h2c (prior knowledge); the same as `http1` unless a peer needs a
    /// listener of its own for it.
    pub http2: SocketAddr,
    /// The hop processes of the HTTP path (their children count too).
    pub hop_pids: Vec<u32>,
    pub stopper: Stopper,
    /// The opaque TCP path, or why the contender has none.
    pub tcp: Result<TcpPath, Unmeasured>,
}

/// A contender's opaque TCP path, on processes of its own.
pub struct TcpPath {
    /// Where the load generator connects.
    pub addr: SocketAddr,
    /// The hop processes (their children count too).
    pub hop_pids: Vec<u32>,
    pub stopper: Stopper,
}

impl TcpPath {
    /// The outcome of starting a path, as a contender records it: a path that did not
    /// start leaves the contender's HTTP scenarios to run.
    pub fn outcome(started: anyhow::Result<Self>) -> Result<Self, Unmeasured> {
        started.map_err(|err| {
            Unmeasured::Failed(format!("the opaque TCP path did not start: {err:#}"))
        })
    }
}

/// How a contender is stopped.
pub enum Stopper {
    Nothing,
    Peers(Vec<PeerProcess>),
    Seam(seam::SeamHops),
}

impl Running {
    /// Where the load of `mode` goes, and the hop processes that carry it; why not, when
    /// the contender has no path for it.
    pub fn path(&self, mode: Mode) -> Result<(SocketAddr, &[u32]), Unmeasured> {
        match mode {
            Mode::Http1 | Mode::NewConnection => Ok((self.http1, &self.hop_pids)),
            Mode::Http2 => Ok((self.http2, &self.hop_pids)),
            Mode::Tcp => match &self.tcp {
                Ok(tcp) => Ok((tcp.addr, &tcp.hop_pids)),
                Err(why) => Err(why.clone()),
            },
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        if let Ok(tcp) = self.tcp {
            tcp.stopper.stop().await?;
        }
        self.stopper.stop().await
    }
}

impl Stopper {
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Nothing => Ok(()),
            Self::Peers(mut processes) => {
                for process in &mut processes {
                    process.stop().await?;
                }
                Ok(())
            }
            Self::Seam(hops) => hops.stop().await,
        }
    }
}

/// A free loopback port (bound, read back, released: peers need numbers in their config).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One GET through the path: it must answer 200 with the upstream's 1 KiB body.
pub async fn check_path(addr: SocketAddr) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(get_request()?).await?;
    check_answer(addr, response).await
}

/// The GET every HTTP scenario sends: `/` of the service hop 2 stands for.
pub fn get_request() -> anyhow::Result<http::Request<Empty<Bytes>>> {
    Ok(http::Request::get("/")
        .header(http::header::HOST, SERVICE_HOST)
        .body(Empty::new())?)
}

/// Reads the whole answer to a GET through `addr`: it must be 200 with the upstream's
/// 1 KiB body.
pub async fn check_answer(
    addr: SocketAddr,
    response: http::Response<hyper::body::Incoming>,
) -> anyhow::Result<()> {
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK || body.len() != BODY_SIZE {
        bail!(
            "GET / through {addr} answered {status} with {} bytes: {}",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    Ok(())
}

/// One round trip of the opaque TCP exchange through the path, on a new connection.
pub async fn check_tcp_path(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    tokio::time::timeout(TCP_CHECK_TIMEOUT, tcp_exchange::round_trip(&mut stream, 0))
        .await
        .with_context(|| format!("no answer through {addr} within {TCP_CHECK_TIMEOUT:?}"))?
        .with_context(|| format!("the opaque TCP exchange through {addr} failed"))
}

/// Polls `check` ([`check_path`] or [`check_tcp_path`]) until it passes; `alive` fails
/// early when a process has died.
pub async fn wait_path(
    addr: SocketAddr,
    check: impl AsyncFn(SocketAddr) -> anyhow::Result<()>,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        alive()?;
        match check(addr).await {
            Ok(()) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(err.context(format!("the path through {addr} never worked")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
