//! Traffic mirroring end to end: service `a`'s proxy calls `b` and mirrors a share of the
//! requests to `shadow`, whose proxy fronts an app that records what it gets. The mirror
//! sees its share (within binomial bounds) of identical requests marked `x-seam-mirror`,
//! with traces not sampled; a hanging or failing mirror changes nothing for the caller;
//! bodies over 64 KiB are not copied; a mesh file change takes effect on the next
//! request, and bad mirrors are refused with their line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use seam_tests::client::{self, AppClient};
use seam_tests::load::{failures, load};
use seam_tests::mesh::{RELOAD_TIMEOUT, TestMesh, metric_sum, metric_value};
use seam_tests::policy_mesh::{self, PolicyService};
use seam_tests::recording::{Answer, RecordingServer};
use seam_tests::{EchoServer, TestProxy, wait};

const MIRROR_HEADER: &str = "x-seam-mirror";
/// The proxy's bound on copies in flight (`outbound::mirror::MAX_COPIES_IN_FLIGHT`).
const MAX_COPIES_IN_FLIGHT: usize = 32;
/// The proxy's limit on a mirrored body (`outbound::mirror::MAX_MIRROR_BODY`).
const MAX_MIRROR_BODY: usize = 64 * 1024;

/// `a` calls `b` (an echo app); `shadow` is a recording app behind its own proxy.
struct Mirrored {
    a: TestProxy,
    b: TestProxy,
    shadow: TestProxy,
    app_b: EchoServer,
    recorder: RecordingServer,
    mesh: TestMesh,
    _app_a: EchoServer,
}

impl Mirrored {
    async fn start(answer: Answer, b_extra: &str) -> Self {
        let mesh = TestMesh::start(&["a", "b", "shadow"])
            .await
            .expect("a mesh");
        let app_a = EchoServer::start("a").await.expect("echo a");
        let app_b = EchoServer::start("b").await.expect("echo b");
        let recorder = RecordingServer::start(answer).await.expect("recorder");
        let (a, b, shadow) = tokio::try_join!(
            mesh.start_proxy("a", app_a.addr()),
            mesh.start_proxy("b", app_b.addr()),
            mesh.start_proxy("shadow", recorder.addr()),
        )
        .expect("the proxies start");
        let started = Self {
            a,
            b,
            shadow,
            app_b,
            recorder,
            mesh,
            _app_a: app_a,
        };
        // `a` subscribes to `b` with nothing mirrored yet, so no copy of this first
        // request lands among the copies a test counts.
        started.write(&started.render("")).await;
        let reply = client::http1_get(started.a.outbound(), "b", "/subscribe", &[])
            .await
            .expect("a first request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        if !b_extra.is_empty() {
            started.apply(b_extra).await;
        }
        started
    }

    fn render(&self, b_extra: &str) -> String {
        policy_mesh::render(&[
            service("a", &[], ""),
            service("b", &[self.b.inbound()], b_extra),
            service("shadow", &[self.shadow.inbound()], ""),
        ])
    }

    /// Writes `text` as the mesh file; returns the version the control plane gave it.
    async fn write(&self, text: &str) -> u64 {
        let before = self.mesh.mesh_state().await.expect("/mesh")["version"].clone();
        self.mesh
            .write_raw_mesh_file(text)
            .expect("write the mesh file");
        let state = self
            .mesh
            .wait_version_change(&before, RELOAD_TIMEOUT)
            .await
            .expect("the control plane takes the file");
        assert!(state["last_error"].is_null(), "refused: {state}");
        state["version"].as_u64().expect("a version")
    }

    /// Writes `b`'s keys and waits until `a`'s proxy (subscribed to `b`) holds them.
    async fn apply(&self, b_extra: &str) {
        let version = self.write(&self.render(b_extra)).await;
        policy_mesh::wait_applied(&self.a, "b", version, RELOAD_TIMEOUT)
            .await
            .expect("a applies the new version");
    }

    /// `seam_mirror_requests_total{service="shadow"}` for `result` (every result if `None`).
    async fn mirrored(&self, result: Option<&str>) -> f64 {
        let metrics = self.a.metrics().await.expect("a's /metrics");
        let mut labels = vec![("service", "shadow")];
        labels.extend(result.map(|result| ("result", result)));
        metric_sum(&metrics, "seam_mirror_requests_total", &labels).unwrap_or(0.0)
    }

    /// Waits until the mirror has recorded a copy of a request for `path`.
    async fn wait_copy_of(&self, path: &str) {
        wait::until(
            &format!("a copy of {path}"),
            Duration::from_secs(10),
            || async {
                let copies = self.recorder.requests();
                anyhow::ensure!(
                    copies.iter().any(|copy| copy.path_and_query == path),
                    "{} copies, none of {path}",
                    copies.len()
                );
                Ok(())
            },
        )
        .await
        .expect("the request is mirrored");
    }

    /// Waits until the copies counted with `result` reach `count`.
    async fn wait_mirrored(&self, result: &str, count: usize) {
        wait::until(
            &format!("{count} copies counted as {result}"),
            Duration::from_secs(20),
            || async {
                let seen = self.mirrored(Some(result)).await;
                anyhow::ensure!(seen >= count as f64, "{seen} so far");
                Ok(())
            },
        )
        .await
        .expect("the copies are counted");
    }
}

fn service<'a>(name: &'a str, endpoints: &[SocketAddr], extra: &'a str) -> PolicyService<'a> {
    PolicyService {
        name,
        endpoints: endpoints.to_vec(),
        extra,
    }
}

fn pattern(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A request with a streamed (chunked) body of `body`, sent in 4 KiB frames.
fn streamed(
    method: &str,
    path: &str,
    body: &Bytes,
) -> Request<impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = body
        .chunks(4096)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "b")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("a request")
}

fn with_body(method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "b")
        .header("x-app", "kept")
        .body(Full::new(body))
        .expect("a request")
}

/// `n·p ± 5σ`: the range a correct share cannot miss by chance.
fn assert_within(what: &str, observed: usize, n: usize, percent: f64) {
    let p = percent / 100.0;
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let (low, high) = (mean - 5.0 * sigma, mean + 5.0 * sigma);
    assert!(
        (low..=high).contains(&(observed as f64)),
        "{what}: {observed} of {n}, expected {percent} % within ±5σ [{low:.1}, {high:.1}]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_sees_its_share_of_the_requests() {
    let mesh = Mirrored::start(
        Answer::Status(200),
        "    mirror: { service: shadow, percent: 20 }\n",
    )
    .await;
    let before = mesh.recorder.count();
    let n = 1_000;
    let app = AppClient::new(mesh.a.outbound());
    let replies = load(&app, "b", "/load?share=20", n, 16, Default::default()).await;
    assert_eq!(failures(&replies), Vec::<String>::new());
    // Every copy drawn is counted once it is answered; the recorder has seen it by then.
    let copies = wait::until(
        "every copy is answered",
        Duration::from_secs(20),
        || async {
            let counted = mesh.mirrored(None).await;
            let seen = mesh.recorder.count() - before;
            anyhow::ensure!(counted == seen as f64, "counted {counted}, recorded {seen}");
            Ok(seen)
        },
    )
    .await
    .expect("the copies settle");
    assert_within("mirrored", copies, n, 20.0);
    assert_eq!(
        mesh.mirrored(Some("dropped")).await,
        0.0,
        "16 at a time fit the bound"
    );
    for copy in &mesh.recorder.requests()[before..] {
        assert_eq!(copy.method, "GET");
        assert_eq!(copy.path_and_query, "/load?share=20");
        assert_eq!(copy.headers[MIRROR_HEADER], "1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn at_100_percent_every_request_is_copied_as_it_was_sent() {
    let mesh = Mirrored::start(
        Answer::Status(200),
        "    mirror: { service: shadow, percent: 100 }\n",
    )
    .await;
    let before = mesh.recorder.count();
    let outbound = mesh.a.outbound();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let get = client::http1_get(
        outbound,
        "b",
        "/items?x=1&y=two",
        &[("traceparent", traceparent), ("x-app", "kept")],
    )
    .await
    .expect("GET");
    assert_eq!(get.status, 200);
    let posted = pattern(1_000);
    let post = client::http1_send(outbound, with_body("POST", "/items?id=7", posted.clone()))
        .await
        .expect("POST");
    assert_eq!(post.json().expect("echo")["body_bytes"], 1_000);
    let put_body = pattern(10 * 1024);
    let put = client::http1_send(outbound, streamed("PUT", "/stream?part=1", &put_body))
        .await
        .expect("streamed PUT");
    assert_eq!(put.json().expect("echo")["body_bytes"], 10 * 1024);
    let h2 = client::h2c_get(outbound, "b", "/over-h2?v=2", &[])
        .await
        .expect("h2c GET");
    assert_eq!(h2.status, 200);
    mesh.recorder
        .wait_count(before + 4, Duration::from_secs(10))
        .await
        .expect("four copies");

    let copies = &mesh.recorder.requests()[before..];
    let copy = |path: &str| {
        copies
            .iter()
            .find(|copy| copy.path_and_query == path)
            .unwrap_or_else(|| panic!("no copy of {path}: {copies:?}"))
    };
    let get_copy = copy("/items?x=1&y=two");
    assert_eq!(get_copy.method, "GET");
    assert!(get_copy.body.is_empty());
    assert_eq!(get_copy.headers["x-app"], "kept");
    let context = get_copy.headers["traceparent"].to_str().expect("ASCII");
    assert!(
        context.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && context.ends_with("-00"),
        "the copy keeps the trace, not sampled: {context}"
    );
    let post_copy = copy("/items?id=7");
    assert_eq!(
        (post_copy.method.as_str(), &post_copy.body),
        ("POST", &posted)
    );
    assert_eq!(post_copy.headers["x-app"], "kept");
    let put_copy = copy("/stream?part=1");
    assert_eq!(
        (put_copy.method.as_str(), &put_copy.body),
        ("PUT", &put_body)
    );
    assert_eq!(copy("/over-h2?v=2").method, "GET");
    for copy in copies {
        assert_eq!(copy.headers[MIRROR_HEADER], "1", "{}", copy.path_and_query);
    }
    mesh.wait_mirrored("success", 4).await;
}

/// The p50 and p99 of `latencies`.
fn percentiles(mut latencies: Vec<Duration>) -> (Duration, Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

async fn timed_gets(outbound: SocketAddr, count: usize) -> Vec<Duration> {
    let app = AppClient::new(outbound);
    let mut latencies = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut batch = Vec::new();
    for _ in 0..count {
        assert!(Instant::now() < deadline, "the load ran out of time");
        let app = app.clone();
        batch.push(tokio::spawn(async move {
            let started = Instant::now();
            let reply = app.get("b", "/timed").await.expect("a reply");
            assert_eq!(reply.status, 200, "{}", reply.text());
            started.elapsed()
        }));
        if batch.len() == 8 {
            for task in batch.drain(..) {
                latencies.push(task.await.expect("a request task"));
            }
        }
    }
    for task in batch {
        latencies.push(task.await.expect("a request task"));
    }
    latencies
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_mirror_neither_slows_nor_fails_the_caller() {
    let mesh = Mirrored::start(Answer::Hang, "").await;
    let n = 200;
    let (p50, p99) = percentiles(timed_gets(mesh.a.outbound(), n).await);
    println!("without a mirror: p50 {p50:?}, p99 {p99:?}");

    mesh.apply("    mirror: { service: shadow, percent: 100 }\n")
        .await;
    let started = Instant::now();
    let (p50, p99) = percentiles(timed_gets(mesh.a.outbound(), n).await);
    let took = started.elapsed();
    println!("with a hanging mirror: p50 {p50:?}, p99 {p99:?} ({n} requests in {took:?})");
    // Every primary answered while no copy has been answered or timed out (a copy may
    // hang for 10 s): the primaries did not wait for them.
    assert!(took < Duration::from_secs(9), "the load took {took:?}");
    let finished = mesh.mirrored(Some("success")).await
        + mesh.mirrored(Some("failure")).await
        + mesh.mirrored(Some("timeout")).await;
    assert_eq!(finished, 0.0, "every copy is still hanging");
    // The bound holds: at most 32 copies reach the hanging app, the rest are dropped.
    mesh.recorder
        .wait_count(MAX_COPIES_IN_FLIGHT, Duration::from_secs(5))
        .await
        .expect("the bound's worth of copies is held");
    assert_eq!(mesh.recorder.count(), MAX_COPIES_IN_FLIGHT);
    let dropped = mesh.mirrored(Some("dropped")).await;
    assert_eq!(
        dropped,
        (n - MAX_COPIES_IN_FLIGHT) as f64,
        "every copy past the bound is dropped"
    );
    // A hanging copy gives its slot back after its timeout.
    mesh.wait_mirrored("timeout", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_answering_500_changes_nothing_for_the_caller() {
    let mesh = Mirrored::start(
        Answer::Status(500),
        "    mirror: { service: shadow, percent: 100 }\n",
    )
    .await;
    let before = mesh.mirrored(Some("failure")).await as usize;
    let app = AppClient::new(mesh.a.outbound());
    let replies = load(&app, "b", "/", 100, 4, Default::default()).await;
    assert_eq!(failures(&replies), Vec::<String>::new());
    for reply in replies.iter().flatten() {
        assert_eq!(reply.json().expect("echo")["name"], "b");
    }
    mesh.wait_mirrored("failure", before + 100).await;
    assert_eq!(mesh.mirrored(Some("success")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_64_kib_is_not_mirrored_and_is_counted() {
    let mesh = Mirrored::start(
        Answer::Status(200),
        "    mirror: { service: shadow, percent: 100 }\n",
    )
    .await;
    let before = mesh.recorder.count();
    let outbound = mesh.a.outbound();
    let large = pattern(100 * 1024);
    let declared = client::http1_send(outbound, with_body("POST", "/large", large.clone()))
        .await
        .expect("POST with content-length");
    assert_eq!(declared.json().expect("echo")["body_bytes"], 100 * 1024);
    let chunked = client::http1_send(outbound, streamed("POST", "/large-streamed", &large))
        .await
        .expect("streamed POST");
    assert_eq!(chunked.json().expect("echo")["body_bytes"], 100 * 1024);
    assert_eq!(mesh.mirrored(Some("too_large")).await, 2.0);

    let limit = pattern(MAX_MIRROR_BODY);
    client::http1_send(outbound, streamed("POST", "/at-the-limit", &limit))
        .await
        .expect("streamed POST at the limit");
    mesh.recorder
        .wait_count(before + 1, Duration::from_secs(10))
        .await
        .expect("the copy at the limit");
    let copies = &mesh.recorder.requests()[before..];
    assert_eq!(copies.len(), 1, "only the body within the limit is copied");
    assert_eq!(copies[0].path_and_query, "/at-the-limit");
    assert_eq!(copies[0].body, limit);
    assert!(mesh.app_b.requests_seen() >= 3, "the primaries all arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_change_applies_to_the_next_request_and_bad_mirrors_are_refused() {
    let mesh = Mirrored::start(Answer::Status(200), "").await;
    let get = |path: &'static str| client::http1_get(mesh.a.outbound(), "b", path, &[]);
    assert_eq!(get("/before").await.expect("a reply").status, 200);
    assert_eq!(mesh.recorder.count(), 0, "nothing is mirrored yet");

    mesh.apply("    mirror: { service: shadow, percent: 100 }\n")
        .await;
    let before = mesh.recorder.count();
    get("/after").await.expect("a reply");
    mesh.recorder
        .wait_count(before + 1, Duration::from_secs(10))
        .await
        .expect("the next request is mirrored");
    assert_eq!(mesh.recorder.requests()[before].path_and_query, "/after");

    let cases = [
        (
            "    mirror: { service: nowhere, percent: 100 }\n",
            "\"b\" mirrors to \"nowhere\", which is not a service in this file",
        ),
        (
            "    mirror: { service: b, percent: 100 }\n",
            "\"b\" mirrors to itself",
        ),
        (
            "    mirror: { service: shadow, percent: 150 }\n",
            "mirror.percent is 150; it must be a number from 0 to 100",
        ),
    ];
    for (extra, reason) in cases {
        let text = mesh.render(extra);
        let line = text
            .lines()
            .position(|line| line.contains("mirror:"))
            .expect("the mirror line")
            + 1;
        mesh.mesh
            .expect_refused(&text, line, reason, RELOAD_TIMEOUT)
            .await
            .expect("refused with its line, the last good model kept");
    }
    get("/still-mirrored").await.expect("a reply");
    mesh.wait_copy_of("/still-mirrored").await;
    let rejected = metric_value(
        &mesh.mesh.metrics().await.expect("/metrics"),
        "seam_mesh_reloads_total",
        &[("result", "rejected")],
    );
    assert!(rejected >= Some(3.0), "{rejected:?}");
}
