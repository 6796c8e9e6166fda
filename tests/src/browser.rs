//! Headless Chromium for the tests that need a real browser (Debian's `chromium`): one-shot
//! runs (`--dump-dom`, `--screenshot`) and a page driven over the DevTools protocol, whose
//! DOM a test can query while the page stays live (an `EventSource` never finishes
//! loading, so `--dump-dom` cannot wait for one). A missing browser fails the test, never
//! skips it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::wait;
use seam_control_plane::launch;

/// How long one headless run may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the browser is: Debian's `chromium`. Never skipped: the test fails without it.
pub fn chromium() -> Command {
    let probe = std::process::Command::new("chromium")
        .arg("--version")
        .output();
    match probe {
        Ok(output) if output.status.success() => Command::new("chromium"),
        _ => panic!(
            "the dashboard test needs a real browser: `chromium` was not found or does not \
             run; install it with `apt-get install chromium` (see .ci/run)"
        ),
    }
}

/// Chromium, headless, with its own profile directory (as root, without its sandbox).
fn headless(profile: &tempfile::TempDir) -> Command {
    let mut command = chromium();
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    command
}

/// Runs headless Chromium with `args` on `url` and returns its stdout.
pub async fn run_chromium(profile: &tempfile::TempDir, args: &[&str], url: &str) -> String {
    let mut command = headless(profile);
    command
        .arg("--virtual-time-budget=8000")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(CHROMIUM_TIMEOUT, command.output())
        .await
        .expect("chromium finishes within its timeout")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The start tag of the element whose `attribute` is `value`, as Chromium serialized it
/// (it may escape `>` in attribute values as `&gt;`).
pub fn start_tag<'a>(dom: &'a str, attribute: &str, value: &str) -> Option<&'a str> {
    [value.to_owned(), value.replace('>', "&gt;")]
        .iter()
        .find_map(|spelling| {
            let needle = format!("{attribute}=\"{spelling}\"");
            let at = dom.find(&needle)?;
            let open = dom[..at].rfind('<')?;
            let close = at + needle.len() + dom[at + needle.len()..].find('>')?;
            Some(&dom[open..=close])
        })
}

/// A headless Chromium driven over the DevTools protocol: a page at a URL, whose DOM the
/// test queries with JavaScript while the page stays live.
pub struct DevToolsPage {
    _browser: Child,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl DevToolsPage {
    pub async fn open(profile: &tempfile::TempDir, url: &str) -> anyhow::Result<Self> {
        let mut command = headless(profile);
        command
            .args(["--remote-debugging-port=0", "--window-size=1400,900"])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut browser = command.spawn().context("cannot start chromium")?;
        let stderr = browser.stderr.take().context("chromium stderr not piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let browser_url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!("chromium exited without opening its DevTools port")
        })
        .await
        .context("chromium opened no DevTools port within 30s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_url
            .strip_prefix("ws://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .with_context(|| format!("unexpected DevTools URL {browser_url}"))?;
        let devtools = format!("127.0.0.1:{port}");
        let page_socket = wait::until(
            "chromium lists the page",
            Duration::from_secs(20),
            || async {
                let (_, body) = launch::http_get(devtools.parse()?, "/json/list").await?;
                let targets: Value = serde_json::from_str(&body)?;
                targets
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|target| target["type"] == "page")
                    .and_then(|target| target["webSocketDebuggerUrl"].as_str())
                    .map(str::to_owned)
                    .with_context(|| format!("no page target in {targets}"))
            },
        )
        .await?;
        let (socket, _) = tokio_tungstenite::connect_async(page_socket.as_str()).await?;
        Ok(Self {
            _browser: browser,
            socket,
            next_id: 0,
        })
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn evaluate(&mut self, expression: &str) -> anyhow::Result<Value> {
        let params = serde_json::json!({ "expression": expression, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params).await?;
        Ok(result["result"]["value"].clone())
    }

    /// Saves what the page shows now as a PNG.
    pub async fn screenshot(&mut self, path: &std::path::Path) -> anyhow::Result<usize> {
        use base64::Engine as _;
        let result = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({ "format": "png" }),
            )
            .await?;
        let data = result["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, &png)?;
        Ok(png.len())
    }

    /// Calls a DevTools method on the page and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let call = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket.send(Message::text(call.to_string())).await?;
        while let Some(message) = self.socket.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str())?;
            if answer["id"] == id {
                ensure!(answer.get("error").is_none(), "{method}: {answer}");
                return Ok(answer["result"].clone());
            }
        }
        bail!("the DevTools connection closed")
    }
}
