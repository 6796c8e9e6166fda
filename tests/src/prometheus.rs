//! Debian's `prometheus` package in tests: `promtool check metrics` on a text exposition,
//! and a real Prometheus server on loopback that scrapes the given targets and answers
//! queries over its HTTP API. Neither is skipped when missing: the error says how to
//! install it (`.ci/run` installs it before the tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use seam_control_plane::launch::http_get;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::wait;

const INSTALL: &str = "apt-get update && apt-get install -y prometheus";

/// How long a started server has to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of a binary of the `prometheus` package, or an error saying how to get it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "`{name}` is not installed; this test needs Debian's prometheus package: {INSTALL}"
            )
        })
}

/// Runs `promtool check metrics` on `exposition`; fails with promtool's complaints.
pub async fn check_metrics(exposition: &str) -> anyhow::Result<()> {
    let mut child = Command::new(binary("promtool")?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run promtool")?;
    let mut stdin = child.stdin.take().context("promtool stdin was not piped")?;
    stdin.write_all(exposition.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "promtool check metrics failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(())
}

/// Runs `promtool check config` on a Prometheus configuration file.
pub async fn check_config(path: &Path) -> anyhow::Result<()> {
    let output = Command::new(binary("promtool")?)
        .args(["check", "config"])
        .arg(path)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run promtool")?;
    if !output.status.success() {
        bail!(
            "promtool check config {} failed ({}):\n{}{}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(())
}

/// A running Prometheus server scraping a fixed list of targets every second.
pub struct PrometheusServer {
    addr: SocketAddr,
    /// Held so the server is killed when this is dropped.
    _child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus with one job `seam` over `targets` (their `/metrics`), on a free
    /// loopback port (chosen by binding port 0, released, and retried if taken meanwhile),
    /// and waits for `/-/ready`.
    pub async fn start(targets: &[SocketAddr]) -> anyhow::Result<Self> {
        let binary = binary("prometheus")?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            match wait_ready(&mut child, addr).await {
                Ok(()) => {
                    return Ok(Self {
                        addr,
                        _child: child,
                        log,
                        _dir: dir,
                    });
                }
                Err(err) => {
                    let _ = child.kill().await;
                    let tail = log_tail(&log);
                    if tail.contains("address already in use") && attempt < 5 {
                        continue;
                    }
                    return Err(err.context(tail));
                }
            }
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Runs an instant query and returns the `data.result` array.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(self.addr, &path).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
        let answer: Value = serde_json::from_str(&body)?;
        anyhow::ensure!(answer["status"] == "success", "query failed: {answer}");
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The scrape targets as Prometheus sees them (`/api/v1/targets`).
    pub async fn targets(&self) -> anyhow::Result<Value> {
        let (status, body) = http_get(self.addr, "/api/v1/targets").await?;
        anyhow::ensure!(
            status == 200,
            "GET /api/v1/targets answered {status}: {body}"
        );
        Ok(serde_json::from_str(&body)?)
    }
}

/// Polls `/-/ready` until it answers 200, failing early if the server exits.
async fn wait_ready(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("prometheus exited with {status} before it was ready");
        }
        if let Ok((200, _)) = http_get(addr, "/-/ready").await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("prometheus was not ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(wait::POLL_INTERVAL).await;
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!("prometheus log:\n{}", lines[start..].join("\n"))
}

/// A scrape config: one job, every target's `/metrics` each second.
pub fn scrape_config(targets: &[SocketAddr]) -> String {
    let list: Vec<String> = targets.iter().map(|addr| format!("\"{addr}\"")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: seam\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    )
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
