//! The control plane's web dashboard, in a real browser and through its JSON.
//!
//! `the_demo_dashboard_in_chromium`: `seamctl demo` runs as a child process (our own
//! binaries, the four services over mTLS); once `/api/graph` shows traffic on every edge,
//! headless Chromium (Debian's `chromium`) loads `/ui`, and the DOM it built must hold
//! every demo service, every demo edge and an edge marked mTLS. A screenshot goes to
//! `target/dashboard.png` (a CI artifact). Then the live tap view of `front` is opened in
//! Chromium driven over the DevTools protocol (`--dump-dom` cannot wait on a page whose
//! `EventSource` never finishes loading), and its table must fill with front's requests.
//!
//! `the_api_answers_for_a_running_control_plane`: a control plane with two proxies
//! (`a` → `b`) under bounded traffic; `/api/graph`, `/api/services/NAME`, `/api/certs`
//! and the page's assets answer with the expected shapes and content types, and the tap
//! relay streams b's requests and closes the proxy's tap when its client goes.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::Empty;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use seam_tests::browser::{DevToolsPage, chromium, run_chromium, start_tag};
use seam_tests::mesh::seam_command;
use seam_tests::{TwoHop, client, fresh_binaries, wait};

const DEMO_SERVICES: [&str; 4] = ["loadgen", "front", "middle", "back"];
const DEMO_EDGES: [(&str, &str); 3] = [
    ("loadgen", "front"),
    ("front", "middle"),
    ("middle", "back"),
];
/// The demo stops by itself after this long, even if the test process dies.
const DEMO_DURATION_SECS: &str = "150";
/// Traffic of the API test stops after this many requests even if the test still waits.
const MAX_REQUESTS: usize = 5_000;

/// `seamctl demo`, stopped with SIGTERM (so it stops its own children) when dropped.
struct DemoProcess(Child);

impl DemoProcess {
    fn terminate(&self) {
        if let Some(pid) = self.0.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts `seamctl demo` and reads the dashboard URL it prints.
async fn start_demo() -> anyhow::Result<(DemoProcess, String)> {
    let mut command = seam_command("seamctl")?;
    command
        .args(["demo", "--duration", DEMO_DURATION_SECS])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().context("cannot start seamctl demo")?;
    let stdout = child.stdout.take().context("demo stdout not piped")?;
    let demo = DemoProcess(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.trim().strip_prefix("dashboard") {
                return Ok(url.trim().to_owned());
            }
        }
        bail!("seamctl demo ended without printing its dashboard URL")
    })
    .await
    .context("seamctl demo printed no dashboard URL within 60s")??;
    // Keep reading, so the demo never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((demo, url))
}

/// `GET path` on the control plane's admin listener.
async fn get(admin: &str, path: &str) -> anyhow::Result<client::Reply> {
    let request = http::Request::get(path)
        .header(http::header::HOST, admin)
        .body(Empty::<Bytes>::new())?;
    client::http1_send(admin.parse()?, request).await
}

async fn get_json(admin: &str, path: &str) -> anyhow::Result<Value> {
    let reply = get(admin, path).await?;
    ensure!(
        reply.status == 200,
        "{path}: {} {}",
        reply.status,
        reply.text()
    );
    let content_type = reply.headers.get(http::header::CONTENT_TYPE);
    ensure!(
        content_type.is_some_and(|value| value == "application/json"),
        "{path}: content-type {content_type:?}"
    );
    reply.json()
}

/// Opens `/api/tap?service=SERVICE` and returns its content type, its first event and
/// the stream, still open.
async fn first_tap_event(
    admin: &str,
    service: &str,
) -> anyhow::Result<(String, Value, hyper::body::Incoming)> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(format!("/api/tap?service={service}"))
        .header(http::header::HOST, admin)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    ensure!(
        response.status() == 200,
        "/api/tap answered {}",
        response.status()
    );
    let content_type = response.headers()[http::header::CONTENT_TYPE]
        .to_str()?
        .to_owned();
    let mut body = response.into_body();
    let mut text = String::new();
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            // An event is complete at its blank line.
            if let Some(start) = text.find("data: ")
                && let Some(length) = text[start..].find("\n\n")
            {
                let event = serde_json::from_str(&text[start + 6..start + length])?;
                return Ok(event);
            }
        }
        bail!("the tap stream ended before an event: {text:?}")
    })
    .await
    .with_context(|| format!("no tap event within 20s; got {text:?}"))??;
    Ok((content_type, event, body))
}

/// The edge `caller -> callee` of an `/api/graph` answer.
fn edge<'a>(graph: &'a Value, caller: &str, callee: &str) -> Option<&'a Value> {
    graph["edges"]
        .as_array()?
        .iter()
        .find(|edge| edge["caller"] == caller && edge["callee"] == callee)
}

/// Waits until `/api/graph` shows traffic over mTLS on each of `edges`.
async fn wait_for_edges(admin: &str, edges: &[(&str, &str)]) -> anyhow::Result<Value> {
    wait::until(
        "traffic on every edge of /api/graph",
        Duration::from_secs(60),
        || async {
            let graph = get_json(admin, "/api/graph").await?;
            for (caller, callee) in edges {
                let found = edge(&graph, caller, callee)
                    .with_context(|| format!("no edge {caller} -> {callee} yet in {graph}"))?;
                ensure!(
                    found["rps"].as_f64().unwrap_or(0.0) > 0.0 && found["transport"] == "mtls",
                    "edge {caller} -> {callee} not yet busy over mTLS: {found}"
                );
            }
            Ok(graph)
        },
    )
    .await
}

fn artifact_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fresh_binaries::workspace().join("target"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_dashboard_in_chromium() {
    // Fail at once, before the demo starts, when there is no browser.
    drop(chromium());
    fresh_binaries::ensure().expect("the Seam binaries are built");
    let (demo, url) = start_demo().await.expect("seamctl demo starts");
    let admin = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/ui"))
        .unwrap_or_else(|| panic!("the demo printed {url:?}, not http://ADMIN/ui"))
        .to_owned();
    wait_for_edges(&admin, &DEMO_EDGES)
        .await
        .expect("the demo's traffic shows in /api/graph");

    let profile = tempfile::tempdir().expect("a browser profile directory");
    let dom = run_chromium(&profile, &["--dump-dom"], &url).await;
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded its data:\n{dom}"
    );
    for service in DEMO_SERVICES {
        let node = start_tag(&dom, "data-service", service)
            .unwrap_or_else(|| panic!("no node for {service} in the DOM:\n{dom}"));
        assert!(node.contains("data-health=\""), "{node}");
    }
    for (caller, callee) in DEMO_EDGES {
        let tag = start_tag(&dom, "data-edge", &format!("{caller}->{callee}"))
            .unwrap_or_else(|| panic!("no edge {caller} -> {callee} in the DOM:\n{dom}"));
        // Every hop of the demo crosses two proxies over mTLS: marked so.
        assert!(tag.contains("data-mtls=\"true\""), "{tag}");
        assert!(tag.contains("mtls"), "{tag}");
    }
    assert!(
        dom.contains("class=\"padlock\""),
        "no padlock drawn on the mTLS edges"
    );

    let screenshot = artifact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        &profile,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1400,900",
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "the screenshot is only {} bytes: a blank page?",
        png.len()
    );
    eprintln!("screenshot: {}", screenshot.display());

    // The live tap of front: its rows arrive over an EventSource while the page is open.
    let tap_profile = tempfile::tempdir().expect("a browser profile directory");
    let mut page = DevToolsPage::open(&tap_profile, &format!("{url}#tap/front"))
        .await
        .expect("chromium opens the tap view");
    // Polled like `wait::until`, which cannot lend the page to its probe.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = page
            .evaluate(
                "[...document.querySelectorAll('#tap-body tr[data-tap-row]')]\
                 .slice(0, 20).map((row) => row.dataset.direction + ' ' + row.textContent)",
            )
            .await
            .expect("the page answers");
        if rows.as_array().is_some_and(|rows| rows.len() >= 10) {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tap view did not fill within 30s: {rows}"
        );
        tokio::time::sleep(wait::POLL_INTERVAL).await;
    };
    // front's proxy sees loadgen's calls coming in and its own calls to middle going out.
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rows.iter()
            .any(|row| row.starts_with("inbound") && row.contains("loadgen → front")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|row| row.starts_with("outbound") && row.contains("front → middle")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .all(|row| row.contains("mTLS") && row.contains("GET")),
        "{rows:#?}"
    );
    let limit = page
        .evaluate("document.querySelectorAll('#tap-body tr').length")
        .await
        .expect("the page answers");
    assert!(limit.as_u64().is_some_and(|rows| rows <= 200), "{limit}");
    let tap_screenshot = artifact_dir().join("dashboard-tap.png");
    let size = page
        .screenshot(&tap_screenshot)
        .await
        .expect("a screenshot of the tap view");
    assert!(size > 20_000, "the tap screenshot is only {size} bytes");

    demo.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_for_a_running_control_plane() {
    let mesh = Arc::new(TwoHop::start().await.expect("two-hop mesh starts"));
    let admin = mesh.mesh.admin_addr().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (mesh, stop) = (mesh.clone(), stop.clone());
        tokio::spawn(async move {
            for round in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = client::http1_get(mesh.a.outbound(), "b", &format!("/{round}"), &[]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let graph = wait_for_edges(&admin, &[("a", "b")])
        .await
        .expect("a -> b shows in /api/graph");
    let a_to_b = edge(&graph, "a", "b").unwrap();
    assert_eq!(a_to_b["success_rate"], 1.0, "{a_to_b}");
    assert!(
        a_to_b["p99_ms"].as_f64().is_some_and(|p99| p99 > 0.0),
        "{a_to_b}"
    );
    assert!(graph["window_seconds"].as_f64().unwrap() > 0.0, "{graph}");
    for service in ["a", "b"] {
        let node = graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["service"] == service)
            .unwrap_or_else(|| panic!("no node {service}: {graph}"));
        assert_eq!(node["health"], "healthy", "{node}");
        assert_eq!(node["proxies"], 1, "{node}");
    }
    assert_eq!(graph["unreachable"], Value::Array(Vec::new()), "{graph}");

    // b in detail: a series point or more, a's calls, its endpoint, its proxy's ACKs.
    let b = wait::until(
        "b has golden-metric points",
        Duration::from_secs(20),
        || async {
            let b = get_json(&admin, "/api/services/b").await?;
            ensure!(!b["series"].as_array().unwrap().is_empty(), "{b}");
            Ok(b)
        },
    )
    .await
    .expect("b's series fills");
    let point = &b["series"][0];
    for field in [
        "at_unix_ms",
        "rps",
        "success_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    ] {
        assert!(point.get(field).is_some(), "{field} missing in {point}");
    }
    assert_eq!(b["called_by"][0]["caller"], "a", "{b}");
    let mesh_view = get_json(&admin, "/mesh").await.unwrap();
    let listed: Vec<&Value> = mesh_view["services"]["b"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let endpoints = b["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), listed.len(), "{b}");
    assert_eq!(&endpoints[0]["address"], listed[0], "{b}");
    assert_eq!(endpoints[0]["state"], "ok", "{b}");
    assert!(
        endpoints[0]["identity"]
            .as_str()
            .unwrap()
            .ends_with("/sa/b"),
        "{b}"
    );
    assert!(b["pushed"]["policy"]["retries"]["attempts"].is_u64(), "{b}");
    let proxy = &b["proxies"][0];
    assert_eq!(proxy["service"], "b", "{b}");
    assert_eq!(proxy["scrape_error"], Value::Null, "{b}");
    let own = proxy["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["authority"] == "b")
        .unwrap_or_else(|| panic!("b's proxy subscribed to its own service: {proxy}"));
    assert!(own["acked_version"].as_u64().is_some(), "{own}");
    assert_eq!(own["nack"], Value::Null, "{own}");

    let missing = get(&admin, "/api/services/nowhere").await.unwrap();
    assert_eq!(missing.status, 404, "{}", missing.text());

    let certs = get_json(&admin, "/api/certs").await.unwrap();
    assert_eq!(certs["rotation"]["phase"], "idle", "{certs}");
    assert!(!certs["roots"].as_array().unwrap().is_empty(), "{certs}");
    let proxies = certs["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 2, "{certs}");
    for proxy in proxies {
        assert!(
            proxy["expires_in_seconds"].as_f64().unwrap() > 0.0,
            "{proxy}"
        );
        assert_eq!(proxy["issuer_trusted"], true, "{proxy}");
        assert_eq!(proxy["issued_by_signing_root"], true, "{proxy}");
    }

    // The live tap relay: b's proxy's requests as server-sent events.
    let (content_type, event, stream) = first_tap_event(&admin, "b")
        .await
        .expect("a tap event of b");
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(event["service"], "b", "{event}");
    assert_eq!(event["direction"], "inbound", "{event}");
    assert_eq!(event["mtls"], true, "{event}");
    assert!(
        event["caller"].as_str().unwrap().ends_with("/sa/a"),
        "{event}"
    );
    assert_eq!(event["status"], 200, "{event}");
    let taps_open = |count: u32| {
        let mesh = mesh.clone();
        async move {
            let metrics = mesh.b.metrics().await?;
            ensure!(
                metrics.contains(&format!("seam_taps_open {count}\n")),
                "{metrics}"
            );
            Ok(())
        }
    };
    taps_open(1)
        .await
        .expect("the relay holds one tap open on b's proxy");
    // A browser that goes away closes the proxies' taps (found by the relay's keep-alive).
    drop(stream);
    wait::until("b's proxy closes the tap", Duration::from_secs(20), || {
        taps_open(0)
    })
    .await
    .expect("the tap closes");
    assert_eq!(
        get(&admin, "/api/tap?service=nowhere")
            .await
            .unwrap()
            .status,
        404
    );
    let refused = get(&admin, "/api/tap?service=b&colour=red").await.unwrap();
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("colour"), "{}", refused.text());

    // The page and its assets, embedded in the binary.
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let reply = get(&admin, path).await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.headers[http::header::CONTENT_TYPE],
            content_type,
            "{path}"
        );
        assert_eq!(
            reply.headers[http::header::CACHE_CONTROL],
            "no-cache",
            "{path}"
        );
        assert!(!reply.body.is_empty(), "{path}");
    }
    assert!(
        get(&admin, "/ui")
            .await
            .unwrap()
            .text()
            .contains("/ui/app.js")
    );
    let root = get(&admin, "/").await.unwrap();
    assert_eq!(root.status, 302);
    assert_eq!(root.headers[http::header::LOCATION], "/ui");

    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
}
