//! `seamctl tap` against real proxies: a tap shows every request that was sent, with its
//! fields as both proxies saw it (identities, status, path, mTLS, endpoint); filters
//! narrow it at the proxy; `--max-rps` caps it; header values appear only when named;
//! `/tap` is refused outside `--tap-allow`; closing the tap removes it from the proxy, and
//! so does a reader that goes away (`| head`), after which seamctl ends cleanly.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use seam_tests::client::{self, AppClient};
use seam_tests::mesh::{TestMesh, metric_value, seam_command, spiffe_id};
use seam_tests::proxy::TestProxy;
use seam_tests::upstream::EchoServer;
use seam_tests::{TwoHop, wait};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::time::Instant;

/// How long the events of requests already answered may take to arrive.
const EVENT_DEADLINE: Duration = Duration::from_secs(15);

/// A running `seamctl tap` and its output, line by line.
struct Tap {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Tap {
    /// Starts `seamctl tap <args>` against the mesh's control plane and waits until the
    /// proxy `tapped` has it open (so requests sent from now on are seen).
    async fn start(mesh: &TestMesh, tapped: &TestProxy, args: &[&str]) -> anyhow::Result<Self> {
        let open_before = taps_open(tapped).await?;
        let mut command = seam_command("seamctl")?;
        command
            .arg("tap")
            .args(args)
            .arg("--admin")
            .arg(mesh.admin_addr().to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("seamctl tap starts")?;
        let stdout = child.stdout.take().context("seamctl's stdout")?;
        wait::until("the proxy opens the tap", EVENT_DEADLINE, || async {
            let open = taps_open(tapped).await?;
            anyhow::ensure!(open > open_before, "{open} taps open");
            Ok(())
        })
        .await?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line of output, within the deadline.
    async fn line(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(EVENT_DEADLINE, self.lines.next_line())
            .await
            .context("no tap line within the deadline")??
            .context("seamctl tap ended")
    }

    /// Ends seamctl as Ctrl-C does; it must exit cleanly.
    async fn interrupt(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("seamctl already exited")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        let status = tokio::time::timeout(EVENT_DEADLINE, self.child.wait())
            .await
            .context("seamctl did not stop on SIGINT")??;
        anyhow::ensure!(status.success(), "seamctl tap exited with {status}");
        Ok(())
    }

    /// The next `count` events of a `--output json` tap.
    async fn events(&mut self, count: usize) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            let line = self.line().await?;
            events.push(serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?);
        }
        Ok(events)
    }
}

async fn taps_open(proxy: &TestProxy) -> anyhow::Result<f64> {
    let metrics = proxy.metrics().await?;
    metric_value(&metrics, "seam_taps_open", &[]).context("no seam_taps_open gauge")
}

/// `GET <path>` from `a`'s app to `service`, with a header to show and one never to show.
async fn send(hop: &TwoHop, service: &str, method: &str, path: &str) -> anyhow::Result<()> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, service)
        .header("x-tap-test", format!("value of {path}"))
        .header(http::header::AUTHORIZATION, "Bearer never-shown")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let reply = client::http1_send(hop.a.outbound(), request).await?;
    anyhow::ensure!(reply.status == 200, "{method} {path}: {}", reply.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tap_shows_every_request_with_its_fields_from_both_sides() {
    let hop = TwoHop::start().await.expect("two-hop mesh starts");
    let mut inbound = Tap::start(&hop.mesh, &hop.b, &["b", "--output", "json"])
        .await
        .expect("tap of b");
    let mut wide = Tap::start(&hop.mesh, &hop.a, &["a"])
        .await
        .expect("wide tap of a");
    let mut outbound = Tap::start(
        &hop.mesh,
        &hop.a,
        &[
            "a",
            "--to",
            "b",
            "--headers",
            "x-tap-test",
            "--output",
            "json",
        ],
    )
    .await
    .expect("tap of a");

    const REQUESTS: usize = 12;
    let sent: BTreeSet<String> = (0..REQUESTS).map(|n| format!("/tap/{n}")).collect();
    for path in &sent {
        send(&hop, "b", "GET", path)
            .await
            .expect("request answered");
    }

    let seen = inbound.events(REQUESTS).await.expect("b's tap shows them");
    let paths: BTreeSet<String> = seen
        .iter()
        .map(|event| event["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(paths, sent);
    for event in &seen {
        assert_eq!(event["direction"], "inbound", "{event}");
        assert_eq!(event["proxy"], spiffe_id("b"), "{event}");
        assert_eq!(event["service"], "b", "{event}");
        assert_eq!(event["caller"], spiffe_id("a"), "{event}");
        assert_eq!(event["callee"], spiffe_id("b"), "{event}");
        assert_eq!(event["method"], "GET", "{event}");
        assert_eq!(event["status"], 200, "{event}");
        assert_eq!(event["grpc_status"], Value::Null, "{event}");
        assert_eq!(event["mtls"], true, "{event}");
        assert_eq!(event["retries"], 0, "{event}");
        assert_eq!(event["request_bytes"], 0, "{event}");
        assert!(event["response_bytes"].as_u64().unwrap_or(0) > 0, "{event}");
        assert!(
            event["latency_ms"].as_f64().unwrap_or(-1.0) >= 0.0,
            "{event}"
        );
        assert!(event.get("headers").is_none(), "unasked headers: {event}");
        assert!(!event.to_string().contains("never-shown"), "{event}");
    }

    let seen = outbound.events(REQUESTS).await.expect("a's tap shows them");
    let endpoint = hop.b.inbound().to_string();
    for event in &seen {
        assert_eq!(event["direction"], "outbound", "{event}");
        assert_eq!(event["proxy"], spiffe_id("a"), "{event}");
        assert_eq!(event["service"], "b", "{event}");
        assert_eq!(event["caller"], spiffe_id("a"), "{event}");
        assert_eq!(event["callee"], spiffe_id("b"), "{event}");
        assert_eq!(event["authority"], "b", "{event}");
        assert_eq!(event["endpoint"], endpoint.as_str(), "{event}");
        assert_eq!(event["mtls"], true, "{event}");
        assert_eq!(event["retries"], 0, "{event}");
        let path = event["path"].as_str().unwrap_or_default();
        assert!(sent.contains(path), "{event}");
        // Only the named header, with its value; never the authorization it did not name.
        assert_eq!(
            event["headers"],
            serde_json::json!({ "x-tap-test": format!("value of {path}") }),
            "{event}"
        );
    }

    let header = wide.line().await.expect("the wide header");
    assert!(header.starts_with("TIME "), "{header}");
    for n in 0..REQUESTS {
        let line = wide.line().await.expect("a wide line");
        println!("{line}");
        let endpoint_cell = format!(" {} ", hop.b.inbound());
        for part in [" out ", " a → b ", " GET ", " 200 ", &endpoint_cell, "mTLS"] {
            assert!(line.contains(part), "{part:?} missing: {line}");
        }
        assert!(line.contains("/tap/"), "{n}: {line}");
    }

    // Ending seamctl closes its taps on the proxies at once.
    inbound.interrupt().await.expect("Ctrl-C ends seamctl tap");
    drop((wide, outbound));
    for proxy in [&hop.a, &hop.b] {
        wait::until("the taps close", EVENT_DEADLINE, || async {
            let open = taps_open(proxy).await?;
            anyhow::ensure!(open == 0.0, "{open} taps still open");
            Ok(())
        })
        .await
        .expect("taps close when seamctl ends");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_tap_at_the_proxy() {
    let hop = TwoHop::start_in(
        TestMesh::start(&["a", "b", "c"])
            .await
            .expect("mesh starts"),
    )
    .await
    .expect("a and b start");
    let app_c = EchoServer::start("c").await.expect("app c");
    let c = hop
        .mesh
        .start_proxy("c", app_c.addr())
        .await
        .expect("proxy c starts");
    hop.mesh
        .set_endpoints(&[("c", &[c.inbound()])])
        .await
        .expect("c listed");
    let mut tap = Tap::start(
        &hop.mesh,
        &hop.a,
        &[
            "a",
            "--to",
            "b",
            "--path-prefix",
            "/keep/",
            "--method",
            "POST",
            "--output",
            "json",
        ],
    )
    .await
    .expect("filtered tap of a");

    // Each round sends one request that passes and three that fail one condition each.
    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        send(&hop, "b", "GET", &format!("/keep/{round}/get"))
            .await
            .expect("GET to b");
        send(&hop, "b", "POST", &format!("/drop/{round}"))
            .await
            .expect("POST elsewhere on b");
        send(&hop, "c", "POST", &format!("/keep/{round}/c"))
            .await
            .expect("POST to c");
        send(&hop, "b", "POST", &format!("/keep/{round}/pass"))
            .await
            .expect("POST to b");
    }
    // Events of one proxy arrive in the order the requests finished: had any request
    // that fails the filter passed, it would be among the first ROUNDS events.
    let events = tap.events(ROUNDS).await.expect("the passing requests");
    let paths: Vec<&str> = events
        .iter()
        .map(|event| event["path"].as_str().unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..ROUNDS).map(|n| format!("/keep/{n}/pass")).collect();
    assert_eq!(paths, expected);
    for event in &events {
        assert_eq!(event["method"], "POST", "{event}");
        assert_eq!(event["service"], "b", "{event}");
        assert_eq!(event["direction"], "outbound", "{event}");
    }
    drop(tap);
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_rps_caps_the_events_a_tap_gets() {
    let hop = TwoHop::start().await.expect("two-hop mesh starts");
    const MAX_RPS: f64 = 5.0;
    const REQUESTS: usize = 100;
    let opened = Instant::now();
    let mut tap = Tap::start(
        &hop.mesh,
        &hop.b,
        &["b", "--max-rps", "5", "--output", "json"],
    )
    .await
    .expect("tap of b");
    let app = AppClient::new(hop.a.outbound());
    for n in 0..REQUESTS {
        let reply = app.get("b", &format!("/fast/{n}")).await.expect("answered");
        assert_eq!(reply.status, 200);
    }
    // Every request is either sent to the tap or counted as dropped by its limit: read
    // events until the two add up to the requests sent.
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut received = 0;
    loop {
        let dropped = rate_limited(&hop.b).await.expect("metrics");
        if received + dropped == REQUESTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{received} events and {dropped} dropped of {REQUESTS} requests"
        );
        // `next_line` is cancel-safe: a line cut short here is read whole next time.
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(100), tap.line()).await {
            let event: Value = serde_json::from_str(&line.expect("a line")).expect("JSON");
            assert_eq!(event["direction"], "inbound", "{event}");
            received += 1;
        }
    }
    let window = opened.elapsed().as_secs_f64();
    // GCRA at 5/s: a burst of 5, then one more per 200 ms of the window at most.
    let bound = MAX_RPS + (window * MAX_RPS).ceil();
    assert!(
        (received as f64) <= bound,
        "{received} events in {window:.2}s, above the GCRA bound {bound}"
    );
    assert!(received >= 5, "not even the burst arrived: {received}");
    assert!(received < REQUESTS, "nothing was held back");
}

/// Events `proxy`'s taps matched but did not send because of their rate.
async fn rate_limited(proxy: &TestProxy) -> anyhow::Result<usize> {
    let metrics = proxy.metrics().await?;
    let dropped = metric_value(
        &metrics,
        "seam_tap_events_dropped_total",
        &[("reason", "rate_limited")],
    )
    .unwrap_or(0.0);
    Ok(dropped as usize)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tap_whose_reader_goes_away_ends_quietly_and_closes_its_taps() {
    let hop = TwoHop::start().await.expect("two-hop mesh starts");
    let mut tap = Tap::start(&hop.mesh, &hop.b, &["b", "--output", "json"])
        .await
        .expect("seamctl tap starts");
    send(&hop, "b", "GET", "/tap/first")
        .await
        .expect("a request");
    tap.line().await.expect("the first event");
    // As `seamctl tap b | head -1` does once it has its line, the reader goes away.
    let Tap { mut child, lines } = tap;
    drop(lines);
    // seamctl finds out at its next write: requests keep coming until it has ended.
    let deadline = Instant::now() + EVENT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("seamctl's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "seamctl tap still runs after its reader went away"
        );
        send(&hop, "b", "GET", "/tap/more")
            .await
            .expect("a request");
    };
    assert!(status.success(), "seamctl tap exited with {status}");
    wait::until("the tap closes", EVENT_DEADLINE, || async {
        let open = taps_open(&hop.b).await?;
        anyhow::ensure!(open == 0.0, "{open} taps still open");
        Ok(())
    })
    .await
    .expect("the tap closes when seamctl ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn tap_is_refused_outside_tap_allow_and_bad_queries_are_named() {
    let hop = TwoHop::start_with(|options| options.args(&["--tap-allow", "127.0.0.1/32"]))
        .await
        .expect("two-hop mesh starts");
    let admin = hop.b.admin();

    // 127.0.0.2 is loopback too, but outside 127.0.0.1/32.
    let (status, body) = get_from("127.0.0.2", admin, "/tap").await.expect("answer");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--tap-allow (127.0.0.1/32)"), "{body}");
    assert!(body.contains("127.0.0.2 is not"), "{body}");

    let (status, body) = get_from("127.0.0.1", admin, "/tap?max_rps=0&direction=inbound")
        .await
        .expect("answer");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"max_rps\""), "{body}");
    let (status, body) = get_from("127.0.0.1", admin, "/tap?path=/x")
        .await
        .expect("answer");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown tap parameter \"path\""), "{body}");

    // The same request from an address inside the list opens a tap.
    let (status, body) = get_from("127.0.0.1", admin, "/tap").await.expect("answer");
    assert_eq!(status, 200, "{body}");
}

/// `GET path` on `server` from a socket bound to `local` (HTTP/1.1, read whole); a tap
/// that opens is answered 200 with a body that never ends, so only its status is read.
async fn get_from(
    local: &str,
    server: std::net::SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse()?)?;
    let stream = socket.connect(server).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, server.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = tokio::time::timeout(EVENT_DEADLINE, sender.send_request(request)).await??;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok((status, String::new()));
    }
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
