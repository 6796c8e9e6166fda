//! Fault injection end to end: a real caller proxy with a route `fault` in the mesh
//! file, in front of a real upstream proxy and app. Delays and aborts land on the
//! configured share of requests (within binomial bounds over 1,000 requests), a delayed
//! request takes at least the delay, an aborted one never reaches the upstream and is
//! never retried, a delay does not count against the route's timeout, gRPC aborts are
//! trailers-only, a mesh file change takes effect on the next request, and bad values are
//! refused with their line while the last good file keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seam_tests::client::{self, AppClient, Reply};
use seam_tests::mesh::{RELOAD_TIMEOUT, TestMesh, metric_sum};
use seam_tests::policy_mesh::{self, PolicyService};
use seam_tests::{CallerAndEndpoints, EchoServer, TestProxy};

const FAULT_HEADER: &str = "x-seam-fault";

fn service<'a>(name: &'a str, endpoints: &[SocketAddr], extra: &'a str) -> PolicyService<'a> {
    PolicyService {
        name,
        endpoints: endpoints.to_vec(),
        extra,
    }
}

/// `a` calling `b` (one proxy in front of an echo app), with `b`'s keys `extra` applied
/// and known to `a`'s proxy.
struct Faulted {
    a: TestProxy,
    b: TestProxy,
    app_b: EchoServer,
    mesh: TestMesh,
    _app_a: EchoServer,
}

impl Faulted {
    async fn start(extra: &str) -> Self {
        let app_b = EchoServer::start("b").await.expect("echo app b");
        let CallerAndEndpoints {
            mesh,
            app_a,
            a,
            endpoints: [b],
        } = CallerAndEndpoints::start("b", [app_b.addr()])
            .await
            .expect("mesh and proxies start");
        let started = Self {
            a,
            b,
            app_b,
            mesh,
            _app_a: app_a,
        };
        // `a` subscribes to `b` before any fault is written, so this first request is
        // not among the faults a test counts.
        started.write("").await;
        let reply = client::http1_get(started.a.outbound(), "b", "/subscribe", &[])
            .await
            .expect("a first request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        if !extra.is_empty() {
            started.apply(extra).await;
        }
        started
    }

    /// Writes the mesh file with `b`'s keys `extra`; returns its version.
    async fn write(&self, extra: &str) -> u64 {
        policy_mesh::apply(
            &self.mesh,
            &[
                service("a", &[], ""),
                service("b", &[self.b.inbound()], extra),
            ],
        )
        .await
        .expect("the mesh file is accepted")
    }

    /// Writes `b`'s keys and waits until `a`'s proxy (subscribed to `b`) holds them.
    async fn apply(&self, extra: &str) {
        let version = self.write(extra).await;
        policy_mesh::wait_applied(&self.a, "b", version, RELOAD_TIMEOUT)
            .await
            .expect("a applies the new version");
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let metrics = self.a.metrics().await.expect("a's /metrics");
        metric_sum(&metrics, name, labels).unwrap_or(0.0)
    }
}

/// What the tests read of one reply: its status, fault header and latency.
struct Timed {
    reply: Reply,
    latency: Duration,
}

impl Timed {
    fn fault(&self) -> &str {
        self.reply
            .headers
            .get(FAULT_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends `count` GETs to `b` through `outbound`, `concurrency` at a time, each timed;
/// bounded in count and by `max_time` overall.
async fn timed_load(
    outbound: SocketAddr,
    count: usize,
    concurrency: usize,
    max_time: Duration,
) -> Vec<Timed> {
    let app = AppClient::new(outbound);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + max_time;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (app, next) = (app.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut timed = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < count
                && Instant::now() < deadline
            {
                let started = Instant::now();
                let reply = app.get("b", "/load").await.expect("a reply");
                timed.push(Timed {
                    reply,
                    latency: started.elapsed(),
                });
            }
            timed
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await.expect("load worker"));
    }
    assert_eq!(all.len(), count, "the load ran out of time");
    all
}

/// `n·p ± 5σ` for a binomial draw: the range a correct share cannot miss by chance.
fn binomial_bounds(n: usize, percent: f64) -> (f64, f64) {
    let p = percent / 100.0;
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 5.0 * sigma, mean + 5.0 * sigma)
}

fn assert_within(what: &str, observed: usize, n: usize, percent: f64) {
    let (low, high) = binomial_bounds(n, percent);
    assert!(
        (low..=high).contains(&(observed as f64)),
        "{what}: {observed} of {n}, expected {percent} % within ±5σ [{low:.1}, {high:.1}]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delays_and_aborts_land_on_their_share_and_aborts_never_reach_the_upstream() {
    let mesh = Faulted::start(
        "    fault:
      delay: { fixed: 20ms, percent: 10 }
      abort: { status: 503, percent: 10 }
",
    )
    .await;
    let seen_before = mesh.app_b.requests_seen();
    let n = 1_000;
    let replies = timed_load(mesh.a.outbound(), n, 16, Duration::from_secs(120)).await;

    let delayed: Vec<&Timed> = replies
        .iter()
        .filter(|t| t.fault().contains("delay"))
        .collect();
    let aborted: Vec<&Timed> = replies
        .iter()
        .filter(|t| t.fault().contains("abort"))
        .collect();
    assert_within("delayed", delayed.len(), n, 10.0);
    assert_within("aborted", aborted.len(), n, 10.0);
    for timed in &delayed {
        assert!(
            timed.latency >= Duration::from_millis(20),
            "a delayed request answered in {:?}",
            timed.latency
        );
    }
    for timed in &aborted {
        assert_eq!(timed.reply.status, 503);
        assert_eq!(timed.reply.text(), "fault injected: abort\n");
    }
    let both = replies
        .iter()
        .filter(|t| t.fault() == "delay, abort")
        .count();
    assert!(both <= delayed.len().min(aborted.len()));
    let passed = replies
        .iter()
        .filter(|t| !t.fault().contains("abort"))
        .count();
    assert!(
        replies
            .iter()
            .filter(|t| !t.fault().contains("abort"))
            .all(|t| t.reply.status == 200),
        "every request not aborted succeeds"
    );
    assert_eq!(
        mesh.app_b.requests_seen() - seen_before,
        passed,
        "the upstream sees exactly the requests that were not aborted"
    );
    assert_eq!(
        mesh.metric(
            "seam_faults_injected_total",
            &[("service", "b"), ("kind", "abort")]
        )
        .await,
        aborted.len() as f64
    );
    assert_eq!(
        mesh.metric(
            "seam_faults_injected_total",
            &[("service", "b"), ("kind", "delay")]
        )
        .await,
        delayed.len() as f64
    );
    let mean = |set: &[&Timed]| {
        set.iter().map(|t| t.latency).sum::<Duration>() / u32::try_from(set.len().max(1)).unwrap()
    };
    let plain: Vec<&Timed> = replies.iter().filter(|t| t.fault().is_empty()).collect();
    println!(
        "mean latency: delayed {:?}, untouched {:?}",
        mean(&delayed),
        mean(&plain)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_request_is_answered_at_once_and_never_retried() {
    let mesh = Faulted::start(
        "    retries:
      attempts: 3
      on: [5xx]
    fault:
      abort: { status: 503, percent: 100 }
",
    )
    .await;
    let seen_before = mesh.app_b.requests_seen();
    for _ in 0..20 {
        let reply = client::http1_get(mesh.a.outbound(), "b", "/", &[])
            .await
            .expect("a reply");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers[FAULT_HEADER], "abort");
        assert_eq!(reply.text(), "fault injected: abort\n");
    }
    assert_eq!(
        mesh.app_b.requests_seen(),
        seen_before,
        "the upstream saw none"
    );
    assert_eq!(
        mesh.metric("seam_retries_total", &[("service", "b")]).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_longer_than_the_timeout_still_succeeds_after_the_delay() {
    let mesh = Faulted::start(
        "    timeout: 100ms
    fault:
      delay: { fixed: 300ms, percent: 100 }
",
    )
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = client::http1_get(mesh.a.outbound(), "b", "/slow", &[])
            .await
            .expect("a reply");
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.headers[FAULT_HEADER], "delay");
        assert_eq!(reply.json().expect("echo JSON")["path"], "/slow");
        assert!(took >= Duration::from_millis(300), "answered in {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_abort_is_http_200_trailers_only_with_the_status() {
    let mesh = Faulted::start(
        "    fault:
      abort: { grpc_status: 14, percent: 100 }
",
    )
    .await;
    let seen_before = mesh.app_b.requests_seen();
    let reply = client::h2c_get(
        mesh.a.outbound(),
        "b",
        "/grpc.health.v1.Health/Check",
        &[("content-type", "application/grpc"), ("te", "trailers")],
    )
    .await
    .expect("a reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["grpc-status"], "14");
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(reply.headers[FAULT_HEADER], "abort");
    assert!(reply.body.is_empty(), "trailers-only: {:?}", reply.body);

    // A real gRPC client reads it as UNAVAILABLE.
    let channel = client::grpc_channel(mesh.a.outbound(), "b")
        .await
        .expect("a gRPC channel");
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect_err("the call is aborted");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(mesh.app_b.requests_seen(), seen_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mesh_file_change_takes_effect_on_the_next_request() {
    let mesh = Faulted::start("").await;
    let get = || client::http1_get(mesh.a.outbound(), "b", "/", &[]);
    let reply = get().await.expect("a reply");
    assert_eq!(reply.status, 200);
    assert!(reply.headers.get(FAULT_HEADER).is_none());

    mesh.apply("    fault:\n      abort: { status: 418, percent: 100 }\n")
        .await;
    let reply = get().await.expect("a reply");
    assert_eq!(reply.status, 418);
    assert_eq!(reply.headers[FAULT_HEADER], "abort");

    // A route's fault replaces the service's; other paths keep the service's.
    mesh.apply(
        "    fault:
      abort: { status: 418, percent: 100 }
    routes:
      - match: { path_prefix: /calm }
        fault:
          delay: { fixed: 1ms, percent: 100 }
",
    )
    .await;
    let calm = client::http1_get(mesh.a.outbound(), "b", "/calm/x", &[])
        .await
        .expect("a reply");
    assert_eq!(calm.status, 200);
    assert_eq!(calm.headers[FAULT_HEADER], "delay");
    assert_eq!(get().await.expect("a reply").status, 418);

    mesh.apply("").await;
    let reply = get().await.expect("a reply");
    assert_eq!(reply.status, 200);
    assert!(reply.headers.get(FAULT_HEADER).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_fault_values_are_refused_with_their_line_and_the_last_good_file_serves() {
    let mesh = Faulted::start("    fault:\n      abort: { status: 503, percent: 100 }\n").await;
    let cases = [
        (
            "    fault:\n      abort: { status: 503, percent: 101 }\n",
            "fault.abort.percent is 101; it must be a number from 0 to 100",
        ),
        (
            "    fault:\n      delay: { fixed: -20ms, percent: 5 }\n",
            "fault.delay.fixed \"-20ms\" is not a duration",
        ),
        (
            "    fault:\n      abort: { status: 700, percent: 5 }\n",
            "from 200 to 599",
        ),
    ];
    for (extra, reason) in cases {
        let text = policy_mesh::render(&[
            service("a", &[], ""),
            service("b", &[mesh.b.inbound()], extra),
        ]);
        let line = text
            .lines()
            .position(|line| line.contains("percent") || line.contains("fixed"))
            .expect("the bad line")
            + 1;
        mesh.mesh
            .expect_refused(&text, line, reason, RELOAD_TIMEOUT)
            .await
            .expect("refused with its line, the last good model kept");
        let reply = client::http1_get(mesh.a.outbound(), "b", "/", &[])
            .await
            .expect("a reply");
        assert_eq!(reply.status, 503, "the last good fault still applies");
        assert_eq!(reply.headers[FAULT_HEADER], "abort");
    }
    let rejected = mesh.mesh.reloads_total("rejected").await.expect("/metrics");
    assert!(rejected >= 3.0, "{rejected}");
}
