//! Starting Seam's own binaries as child processes, for `seamctl demo` and the end-to-end
//! tests: find the binary beside the running one, spawn it, read the one `listening` line
//! it prints on stdout (so every port can be 0 and read back), wait on its `/ready`, and
//! stop it with SIGTERM (or kill it when dropped, so no process outlives its owner).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Empty};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `event` value of the line every Seam binary prints once all its listeners are bound.
pub const LISTENING_EVENT: &str = "listening";

/// How long a child may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of one of Seam's binaries, looked up beside the current executable (and one
/// level up, where cargo puts test binaries in `deps/`). `SEAM_BIN_DIR` overrides this.
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("SEAM_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find the current executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        dirs.push(dir.to_path_buf());
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| anyhow!("binary {name} not found in {dirs:?}; run `cargo build` first"))
}

/// A running Seam binary.
pub struct SeamProcess {
    name: String,
    child: Child,
    addrs: HashMap<String, SocketAddr>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

impl SeamProcess {
    /// Spawns `command` and waits for its listening line. stderr goes where `stderr` says.
    pub async fn spawn(
        name: impl Into<String>,
        mut command: Command,
        stderr: Stdio,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("child stdout was not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let addrs = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addrs) = parse_listening_line(&line) {
                    return Ok(addrs);
                }
            }
            bail!("{name} exited before it printed its listening line")
        })
        .await
        .map_err(|_| anyhow!("{name} printed no listening line within {START_TIMEOUT:?}"))??;

        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout_lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().push(line);
            }
        });
        Ok(Self {
            name,
            child,
            addrs,
            stdout_lines,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address the child bound for `listener` (e.g. `admin`, `inbound`, `grpc`).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self.addrs.get(listener).unwrap_or_else(|| {
            panic!(
                "{} reported no {listener} listener (it reported {:?})",
                self.name, self.addrs
            )
        })
    }

    /// The lines the child printed on stdout after its listening line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Polls the child's admin `/ready` until it answers 200, failing early if the child exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let admin = self.addr("admin");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before it was ready", self.name);
            }
            if let Ok((200, _)) = http_get(admin, "/ready").await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{} was not ready within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM: the child stops accepting, drains, and exits.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .with_context(|| format!("{} has already exited", self.name))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("cannot signal {}", self.name))
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        Ok(self.child.wait().await?)
    }
}

/// Reads `{"event":"listening","admin":"127.0.0.1:4191",...}` into listener → address.
pub fn parse_listening_line(line: &str) -> Option<HashMap<String, SocketAddr>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    if object.get("event")?.as_str()? != LISTENING_EVENT {
        return None;
    }
    Some(
        object
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.parse().ok()?)))
            .collect(),
    )
}

/// Prints the listening line for the given listeners on stdout.
pub fn print_listening_line(listeners: &[(&str, SocketAddr)]) {
    let mut object = serde_json::Map::new();
    object.insert("event".into(), LISTENING_EVENT.into());
    for (name, addr) in listeners {
        object.insert((*name).into(), addr.to_string().into());
    }
    println!("{}", serde_json::Value::Object(object));
}

/// A plain HTTP/1.1 GET on loopback: the status code and the body as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(addr, http::Method::GET, path).await
}

/// A plain HTTP/1.1 POST with an empty body on loopback: the status code and the body.
pub async fn http_post(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(addr, http::Method::POST, path).await
}

async fn http_request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_round_trips_and_ignores_other_lines() {
        let line = r#"{"event":"listening","admin":"127.0.0.1:4191","inbound":"0.0.0.0:4143"}"#;
        let addrs = parse_listening_line(line).unwrap();
        assert_eq!(addrs["admin"], "127.0.0.1:4191".parse().unwrap());
        assert_eq!(addrs["inbound"], "0.0.0.0:4143".parse().unwrap());
        assert!(parse_listening_line(r#"{"event":"request","admin":"x"}"#).is_none());
        assert!(parse_listening_line("not json").is_none());
    }
}
