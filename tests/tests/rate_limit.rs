//! Rate limits, enforced by the callee's own inbound proxy: a total for the service, a
//! bucket per caller identity (every plaintext caller sharing one), overrides for named
//! callers. A refused request gets 429 with `retry-after` (gRPC: RESOURCE_EXHAUSTED) and
//! never reaches the app; refusals are counted by limit kind. Rates here are slow (one
//! request every 10 s or less) so that a short burst's counts are exact: nothing refills
//! while a test sends its handful of requests.

use std::collections::BTreeMap;
use std::time::Duration;

use seam_tests::mesh::{self, TestMesh, metric_value};
use seam_tests::policy_mesh::{self, PolicyService};
use seam_tests::tls::{self, ProbeOutcome};
use seam_tests::upstream::GrpcHealthServer;
use seam_tests::{EchoServer, TestProxy, client};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Callers (each its own service and identity) and the callee `b`.
struct Limited {
    callers: BTreeMap<&'static str, TestProxy>,
    b: TestProxy,
    app_b: EchoServer,
    _apps: Vec<EchoServer>,
    mesh: TestMesh,
}

async fn start(callers: &[&'static str]) -> Limited {
    let mut names = callers.to_vec();
    names.push("b");
    let mesh = TestMesh::start(&names).await.expect("mesh starts");
    let app_b = EchoServer::start("b").await.expect("app b");
    let b = mesh.start_proxy("b", app_b.addr()).await.expect("b starts");
    let mut apps = Vec::new();
    let mut proxies = BTreeMap::new();
    for name in callers {
        let app = EchoServer::start(name).await.expect("caller app");
        let proxy = mesh.start_proxy(name, app.addr()).await.expect("caller");
        proxies.insert(*name, proxy);
        apps.push(app);
    }
    Limited {
        callers: proxies,
        b,
        app_b,
        _apps: apps,
        mesh,
    }
}

impl Limited {
    /// Writes the mesh file with `b_lines` under `b` and waits until b's proxy holds it.
    async fn configure(&self, b_lines: &str) {
        let mut services: Vec<PolicyService<'_>> = self
            .callers
            .keys()
            .map(|name| PolicyService {
                name,
                endpoints: Vec::new(),
                extra: "",
            })
            .collect();
        services.push(PolicyService {
            name: "b",
            endpoints: vec![self.b.inbound()],
            extra: b_lines,
        });
        let version = policy_mesh::apply(&self.mesh, &services)
            .await
            .expect("the mesh file is accepted");
        policy_mesh::wait_applied(&self.b, "b", version, APPLY_TIMEOUT)
            .await
            .expect("b applies its limits");
    }

    /// Sends `count` requests from `caller` to b one after another; their replies.
    async fn send(&self, caller: &str, count: usize) -> Vec<client::Reply> {
        self.send_to(caller, "/limited", count).await
    }

    /// [`Self::send`] for `path`.
    async fn send_to(&self, caller: &str, path: &str, count: usize) -> Vec<client::Reply> {
        let outbound = self.callers[caller].outbound();
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            let reply = client::http1_get(outbound, "b", path, &[])
                .await
                .expect("request to b");
            replies.push(reply);
        }
        replies
    }

    async fn refused(&self, service: &str, caller: &str, limit: &str) -> f64 {
        let metrics = self.b.metrics().await.expect("b's metrics");
        metric_value(
            &metrics,
            "seam_rate_limited_total",
            &[("service", service), ("caller", caller), ("limit", limit)],
        )
        .unwrap_or(0.0)
    }
}

fn statuses(replies: &[client::Reply]) -> Vec<u16> {
    replies.iter().map(|reply| reply.status).collect()
}

fn count(replies: &[client::Reply], status: u16) -> usize {
    replies
        .iter()
        .filter(|reply| reply.status == status)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_beyond_the_total_gets_429s_and_the_app_sees_only_the_admitted() {
    let mesh = start(&["a"]).await;
    mesh.configure("rate_limit: { requests_per_second: 0.1, burst: 5 }")
        .await;
    let replies = mesh.send("a", 8).await;
    assert_eq!(
        statuses(&replies),
        [200, 200, 200, 200, 200, 429, 429, 429],
        "{:?}",
        replies.last().map(client::Reply::text)
    );
    assert_eq!(
        mesh.app_b.requests_seen(),
        5,
        "the app saw a refused request"
    );
    let refused = &replies[5];
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("retry-after is delta-seconds");
    assert!((1..=10).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(
        refused.text(),
        "rate limit: total limit of service b (0.1 requests/s for this instance) exceeded\n"
    );
    assert_eq!(refused.headers["x-seam-proxy-error"], "true");
    assert_eq!(
        mesh.refused("b", &mesh::spiffe_id("a"), "total").await,
        3.0,
        "every refusal is counted by limit kind"
    );
    let state = mesh.mesh.mesh_state().await.expect("/mesh");
    assert_eq!(
        state["services"]["b"]["rate_limit"]["requests_per_second"], 0.1,
        "/mesh shows the limit: {state}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_caller_has_its_own_bucket_and_an_override_gives_its_caller_another() {
    let mesh = start(&["a", "c", "d"]).await;
    mesh.configure(
        "rate_limit:\n  per_caller: 0.1\n  burst: 2\n  \
         overrides: [{ callers: [d], requests_per_second: 0.1, burst: 4 }]",
    )
    .await;
    let a = mesh.send("a", 4).await;
    assert_eq!(statuses(&a), [200, 200, 429, 429]);
    assert_eq!(
        a[2].text(),
        format!(
            "rate limit: per-caller limit of service b (0.1 requests/s for this instance) \
             exceeded by {}\n",
            mesh::spiffe_id("a")
        )
    );
    let c = mesh.send("c", 4).await;
    assert_eq!(
        statuses(&c),
        [200, 200, 429, 429],
        "a's empty bucket leaves c's alone"
    );
    let d = mesh.send("d", 6).await;
    assert_eq!(statuses(&d), [200, 200, 200, 200, 429, 429], "d's override");
    assert_eq!(mesh.app_b.requests_seen(), 8);
    for (caller, limit) in [("a", "per_caller"), ("c", "per_caller"), ("d", "override")] {
        assert_eq!(
            mesh.refused("b", &mesh::spiffe_id(caller), limit).await,
            2.0,
            "{caller}'s refusals counted as {limit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_callers_share_the_total() {
    let mesh = start(&["a", "c"]).await;
    mesh.configure("rate_limit: { requests_per_second: 0.1, per_caller: 0.1, burst: 3 }")
        .await;
    assert_eq!(statuses(&mesh.send("a", 2).await), [200, 200]);
    let c = mesh.send("c", 3).await;
    assert_eq!(
        statuses(&c),
        [200, 429, 429],
        "c's own bucket is full, but a used two cells of the total"
    );
    assert_eq!(
        c[1].text(),
        "rate limit: total limit of service b (0.1 requests/s for this instance) exceeded\n"
    );
    assert_eq!(mesh.refused("b", &mesh::spiffe_id("c"), "total").await, 2.0);
    assert_eq!(
        mesh.refused("b", &mesh::spiffe_id("c"), "per_caller").await,
        0.0
    );
    assert_eq!(mesh.app_b.requests_seen(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routes_own_limit_has_its_own_buckets_and_other_routes_share_the_services() {
    let mesh = start(&["a"]).await;
    mesh.configure(
        // Indented as under the service (the renderer takes four spaces off each line).
        "    rate_limit: { requests_per_second: 0.1, burst: 2 }
    routes:
      - match: { path_prefix: /export }
        rate_limit: { requests_per_second: 0.1, burst: 1 }
      - match: { path_prefix: /other }",
    )
    .await;
    assert_eq!(statuses(&mesh.send_to("a", "/export", 2).await), [200, 429]);
    assert_eq!(
        statuses(&mesh.send("a", 3).await),
        [200, 200, 429],
        "the service's bucket is untouched by /export"
    );
    assert_eq!(
        statuses(&mesh.send_to("a", "/other", 1).await),
        [429],
        "a route without a limit of its own shares the service's bucket"
    );
    assert_eq!(mesh.app_b.requests_seen(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmeshed_callers_share_one_bucket() {
    let mesh = start(&["a"]).await;
    mesh.configure("allow_plaintext: true\nrate_limit: { per_caller: 0.1, burst: 2 }")
        .await;
    let mut plaintext = Vec::new();
    for _ in 0..3 {
        // Each probe is its own connection, as separate unmeshed clients would be.
        match tls::probe_plaintext(mesh.b.inbound(), "b")
            .await
            .expect("probe runs")
        {
            ProbeOutcome::Answered { status, .. } => plaintext.push(status),
            other => panic!("no answer: {other:?}"),
        }
    }
    assert_eq!(plaintext, [200, 200, 429]);
    assert_eq!(
        statuses(&mesh.send("a", 3).await),
        [200, 200, 429],
        "a meshed caller has a bucket of its own"
    );
    assert_eq!(mesh.refused("b", "plaintext", "per_caller").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_caller_gets_resource_exhausted_with_retry_after() {
    let mesh = TestMesh::start(&["a", "g"]).await.expect("mesh starts");
    let health = GrpcHealthServer::start().await.expect("gRPC app");
    let app_a = EchoServer::start("a").await.expect("app a");
    let g = mesh.start_proxy("g", health.addr()).await.expect("g");
    let a = mesh.start_proxy("a", app_a.addr()).await.expect("a");
    let version = policy_mesh::apply(
        &mesh,
        &[
            PolicyService {
                name: "a",
                endpoints: Vec::new(),
                extra: "",
            },
            PolicyService {
                name: "g",
                endpoints: vec![g.inbound()],
                extra: "rate_limit: { requests_per_second: 0.1, burst: 2 }",
            },
        ],
    )
    .await
    .expect("mesh file accepted");
    policy_mesh::wait_applied(&g, "g", version, APPLY_TIMEOUT)
        .await
        .expect("g applies its limit");
    let channel = client::grpc_channel(a.outbound(), "g")
        .await
        .expect("channel");
    let mut codes = Vec::new();
    let mut refusal = None;
    for _ in 0..3 {
        match HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
        {
            Ok(_) => codes.push(tonic::Code::Ok),
            Err(status) => {
                codes.push(status.code());
                refusal = Some(status);
            }
        }
    }
    assert_eq!(
        codes,
        [
            tonic::Code::Ok,
            tonic::Code::Ok,
            tonic::Code::ResourceExhausted
        ]
    );
    let status = refusal.expect("a refusal");
    assert!(
        status
            .message()
            .starts_with("rate limit: total limit of service g"),
        "{status:?}"
    );
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
    let metrics = g.metrics().await.expect("g's metrics");
    assert_eq!(
        metric_value(
            &metrics,
            "seam_rate_limited_total",
            &[("service", "g"), ("limit", "total")]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_limit_takes_effect_on_the_next_request_and_an_unrelated_push_keeps_the_buckets()
{
    let mesh = start(&["a"]).await;
    mesh.configure("rate_limit: { requests_per_second: 0.1, burst: 2 }")
        .await;
    assert_eq!(statuses(&mesh.send("a", 3).await), [200, 200, 429]);
    // Another key of b changes: b gets a new snapshot, its limit and buckets stay.
    mesh.configure("timeout: 7s\nrate_limit: { requests_per_second: 0.1, burst: 2 }")
        .await;
    assert_eq!(
        statuses(&mesh.send("a", 1).await),
        [429],
        "an unrelated update must not refill the bucket"
    );
    // The limit changes: fresh buckets of the new size.
    mesh.configure("timeout: 7s\nrate_limit: { requests_per_second: 0.1, burst: 4 }")
        .await;
    assert_eq!(
        statuses(&mesh.send("a", 5).await),
        [200, 200, 200, 200, 429]
    );
    // And it goes away.
    mesh.configure("timeout: 7s").await;
    assert_eq!(count(&mesh.send("a", 6).await, 200), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rate_limits_are_refused_with_their_line_and_the_old_limit_stays() {
    let mesh = start(&["a"]).await;
    mesh.configure("rate_limit: { requests_per_second: 0.1, burst: 2 }")
        .await;
    let b = format!(
        "  b:\n    join_token: \"{}\"\n    endpoints: [\"{}\"]\n",
        mesh::join_token("b"),
        mesh.b.inbound()
    );
    let head = format!(
        "trust_domain: seam.local\nservices:\n  a:\n    join_token: \"{}\"\n{b}",
        mesh::join_token("a")
    );
    // Line 8 is the first line after b's endpoints.
    let cases = [
        (
            "    rate_limit: { requests_per_second: -3 }\n",
            8,
            "rate_limit.requests_per_second is -3",
        ),
        (
            "    rate_limit:\n      requests_per_second: 1\n      burst: 0\n",
            10,
            "rate_limit.burst is 0; it must be at least 1",
        ),
        (
            "    rate_limit:\n      overrides:\n        - { callers: [nobody], requests_per_second: 1 }\n",
            10,
            "names \"nobody\", which is neither a service of this file nor a spiffe:// id",
        ),
    ];
    for (tail, line, reason) in cases {
        mesh.mesh
            .expect_refused(&format!("{head}{tail}"), line, reason, APPLY_TIMEOUT)
            .await
            .expect("refused with its line, the last good model kept");
    }
    assert_eq!(
        statuses(&mesh.send("a", 3).await),
        [200, 200, 429],
        "the last good limit is still enforced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_callers_outbound_retries_a_429_after_retry_after_only_when_told() {
    let mesh = start(&["a"]).await;
    let limit = "rate_limit: { requests_per_second: 1, burst: 1 }";
    mesh.configure(limit).await;
    assert_eq!(
        statuses(&mesh.send("a", 2).await),
        [200, 429],
        "a 429 is not retried by default"
    );
    assert_eq!(mesh.app_b.requests_seen(), 1);

    mesh.configure(&format!(
        "retries: {{ attempts: 2, on: [rate-limited] }}\n{limit}"
    ))
    .await;
    // The caller's outbound picks the new retry policy up with b's next update.
    policy_mesh::wait_applied(
        &mesh.callers["a"],
        "b",
        mesh.mesh.mesh_state().await.expect("/mesh")["version"]
            .as_u64()
            .expect("version"),
        APPLY_TIMEOUT,
    )
    .await
    .expect("a applies b's retries");
    let rate_limited_retries = || async {
        let metrics = mesh.callers["a"].metrics().await.expect("a's metrics");
        metric_value(
            &metrics,
            "seam_retries_total",
            &[("service", "b"), ("reason", "rate-limited")],
        )
        .unwrap_or(0.0)
    };
    // This one takes b's only cell (after a retry of its own if the cell is not back yet
    // from the requests above); the next one finds the bucket empty.
    let seen = mesh.app_b.requests_seen();
    let first = mesh.send("a", 1).await;
    assert_eq!(statuses(&first), [200]);
    let retries_before = rate_limited_retries().await;
    let started = std::time::Instant::now();
    let retried = mesh.send("a", 1).await;
    assert_eq!(statuses(&retried), [200], "{}", retried[0].text());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited retry-after (1s)"
    );
    assert_eq!(
        mesh.app_b.requests_seen(),
        seen + 2,
        "refused tries never reach it"
    );
    assert_eq!(rate_limited_retries().await, retries_before + 1.0);
}
