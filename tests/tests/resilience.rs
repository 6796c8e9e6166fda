//! Resilience end to end: real proxies in front of real faulty apps (always-503,
//! hanging, resetting, gRPC UNAVAILABLE, killed mid-run), configured through the mesh
//! file. Retries save what they safely can, a bad endpoint is ejected, timeouts answer
//! 504 on time, load beyond `max_concurrent_requests` is shed at once, POSTs are tried
//! once, and weighted and header routes split traffic as written. Outcomes are asserted
//! exactly; waiting is on the binaries' own state under generous deadlines.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use seam_tests::client::{self, AppClient};
use seam_tests::faulty::{Fault, FaultyServer};
use seam_tests::load::{failures, load, served_by};
use seam_tests::mesh::{READY_TIMEOUT, TestMesh, metric_sum, metric_value};
use seam_tests::policy_mesh::{self, PolicyService};
use seam_tests::{CallerAndEndpoints, EchoServer, GrpcHealthServer, wait};
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn service<'a>(name: &'a str, endpoints: &[SocketAddr], extra: &'a str) -> PolicyService<'a> {
    PolicyService {
        name,
        endpoints: endpoints.to_vec(),
        extra,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_always_503_endpoint_is_ejected_and_retries_save_the_requests() {
    let good = EchoServer::start("b-good").await.expect("good app");
    let bad = FaultyServer::start(Fault::Status(503))
        .await
        .expect("503 app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b_good, b_bad],
    } = CallerAndEndpoints::start("b", [good.addr(), bad.addr()])
        .await
        .expect("mesh and proxies start");
    // Every other key keeps its default: 5xx is retried, 5 failures in a row eject.
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service(
                "b",
                &[b_good.inbound(), b_bad.inbound()],
                "    retries:\n      attempts: 2\n",
            ),
        ],
    )
    .await
    .expect("mesh with retries");

    let app = AppClient::new(a.outbound());
    let replies = load(&app, "b", "/", 1_000, 8, Default::default()).await;
    let failed = failures(&replies);
    assert!(
        failed.len() <= 5,
        "{} of 1000 failed (at most 0.5 % may): {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        policy_mesh::ejected(&a).await.expect("a's /config"),
        [b_bad.inbound().to_string()],
        "the 503 endpoint is ejected, the good one is not"
    );
    let metrics = a.metrics().await.expect("a's /metrics");
    let ejections = metric_value(
        &metrics,
        "seam_endpoint_ejections_total",
        &[("service", "b")],
    );
    assert_eq!(ejections, Some(1.0), "{metrics}");
    let retries = metric_value(
        &metrics,
        "seam_retries_total",
        &[("service", "b"), ("reason", "5xx")],
    )
    .unwrap_or(0.0);
    assert!(retries >= 5.0, "retries: {retries}\n{metrics}");
    assert!(
        bad.requests_seen() < 100,
        "once ejected the bad endpoint gets no more traffic: it saw {}",
        bad.requests_seen()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resetting_endpoint_is_ejected_and_costs_no_request() {
    let good = EchoServer::start("b-good").await.expect("good app");
    let resetting = FaultyServer::start(Fault::Reset)
        .await
        .expect("resetting app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b_good, b_reset],
    } = CallerAndEndpoints::start("b", [good.addr(), resetting.addr()])
        .await
        .expect("mesh and proxies start");
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service("b", &[b_good.inbound(), b_reset.inbound()], ""),
        ],
    )
    .await
    .expect("mesh with defaults");

    let app = AppClient::new(a.outbound());
    let replies = load(&app, "b", "/", 200, 4, Default::default()).await;
    assert_eq!(failures(&replies), Vec::<String>::new());
    assert!(
        resetting.requests_seen() >= 5,
        "the resetting app was tried"
    );
    assert_eq!(
        policy_mesh::ejected(&a).await.expect("a's /config"),
        [b_reset.inbound().to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_upstream_gets_504_naming_the_timeout_on_time() {
    let hanging = FaultyServer::start(Fault::Hang).await.expect("hanging app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b],
    } = CallerAndEndpoints::start("b", [hanging.addr()])
        .await
        .expect("mesh and proxies start");
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service("b", &[b.inbound()], "    timeout: 2s\n"),
        ],
    )
    .await
    .expect("mesh with a 2 s timeout");

    let timeout = Duration::from_secs(2);
    // The first request also subscribes a to b; the second is timed alone.
    for round in 0..2 {
        let started = Instant::now();
        let reply = client::http1_get(a.outbound(), "b", "/", &[])
            .await
            .expect("an answer from a");
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 504, "round {round}: {}", reply.text());
        assert_eq!(reply.text(), "timeout after 2s\n");
        assert_eq!(reply.headers["x-seam-proxy-error"], "true");
        // The proxy's unit tests time the 504 exactly on a paused clock; here a loaded
        // machine may add to it, but never as much as a second timeout would.
        if round == 1 {
            assert!(
                elapsed >= timeout && elapsed < timeout * 2,
                "504 after {elapsed:?}, not between {timeout:?} and twice that"
            );
        }
    }
    assert!(hanging.requests_seen() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_of_three_upstreams_mid_load_fails_no_request() {
    let apps = [
        EchoServer::start("b1").await.expect("b1"),
        EchoServer::start("b2").await.expect("b2"),
        EchoServer::start("b3").await.expect("b3"),
    ];
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b1, b2, b3],
    } = CallerAndEndpoints::start("b", apps.each_ref().map(EchoServer::addr))
        .await
        .expect("mesh and proxies start");
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service(
                "b",
                &[b1.inbound(), b2.inbound(), b3.inbound()],
                "    retries:\n      attempts: 2\n",
            ),
        ],
    )
    .await
    .expect("mesh with three endpoints");

    let app = AppClient::new(a.outbound());
    let done = Arc::new(AtomicUsize::new(0));
    let total = 900;
    let loader = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move { load(&app, "b", "/", total, 6, done).await })
    };
    wait::until("a third of the load is done", READY_TIMEOUT, || async {
        let finished = done.load(Ordering::SeqCst);
        anyhow::ensure!(finished >= total / 3, "{finished} done");
        Ok(())
    })
    .await
    .expect("load progresses");
    let pid = b3.pid().expect("b3's proxy is running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL b3's proxy");
    let killed_at = done.load(Ordering::SeqCst);
    let replies = loader.await.expect("load ends");

    assert_eq!(failures(&replies), Vec::<String>::new());
    assert!(
        killed_at < total,
        "the kill came mid-load ({killed_at} done)"
    );
    let served = served_by(&replies);
    assert!(served.get("b3").copied().unwrap_or(0) > 0, "{served:?}");
    assert_eq!(served.values().sum::<usize>(), total, "{served:?}");
    drop(b3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_90_10_split_and_header_routes_send_traffic_where_written() {
    let mesh = TestMesh::start(&["a", "api", "api-v2"])
        .await
        .expect("mesh starts");
    let app_a = EchoServer::start("a").await.expect("app a");
    let v1 = EchoServer::start("api").await.expect("api app");
    let v2 = EchoServer::start("api-v2").await.expect("api-v2 app");
    let (a, api, api_v2) = tokio::try_join!(
        mesh.start_proxy("a", app_a.addr()),
        mesh.start_proxy("api", v1.addr()),
        mesh.start_proxy("api-v2", v2.addr()),
    )
    .expect("proxies start");
    let routes = "    routes:
      - match: { headers: { x-canary: \"1\" } }
        backends:
          - { service: api-v2, weight: 1 }
      - match: { path_prefix: /split, method: GET }
        backends:
          - { service: api-v2, weight: 10 }
          - { service: api, weight: 90 }
";
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service("api", &[api.inbound()], routes),
            service("api-v2", &[api_v2.inbound()], ""),
        ],
    )
    .await
    .expect("mesh with routes");

    let app = AppClient::new(a.outbound());
    let replies = load(&app, "api", "/split/items", 2_000, 8, Default::default()).await;
    assert_eq!(failures(&replies), Vec::<String>::new());
    let served = served_by(&replies);
    let canary = served.get("api-v2").copied().unwrap_or(0);
    // 10 % of 2 000 is 200; ±3 % of the requests is ±60.
    assert!(
        (140..=260).contains(&canary),
        "api-v2 served {canary} of 2000: {served:?}"
    );
    assert_eq!(served.values().sum::<usize>(), 2_000);

    let replies = load(&app, "api", "/other", 20, 2, Default::default()).await;
    assert_eq!(
        served_by(&replies),
        BTreeMap::from([("api".to_string(), 20)]),
        "no route matches /other: the service's own endpoints"
    );
    for path in ["/other", "/split/items"] {
        let reply = client::http1_get(a.outbound(), "api", path, &[("x-canary", "1")])
            .await
            .expect("canary request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.json().expect("echo")["name"],
            "api-v2",
            "x-canary: 1 routes {path} to api-v2"
        );
    }

    let metrics = a.metrics().await.expect("a's /metrics");
    for (route, count) in [
        ("GET /split*", 2_000.0),
        ("default", 20.0),
        ("[x-canary]", 2.0),
    ] {
        let labels = [
            ("direction", "outbound"),
            ("service", "api"),
            ("route", route),
        ];
        assert_eq!(
            metric_sum(&metrics, "seam_requests_total", &labels),
            Some(count),
            "requests on route {route}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_to_an_always_503_endpoint_is_tried_once() {
    let bad = FaultyServer::start(Fault::Status(503))
        .await
        .expect("503 app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b],
    } = CallerAndEndpoints::start("b", [bad.addr()])
        .await
        .expect("mesh and proxies start");
    policy_mesh::apply(
        &mesh,
        &[service("a", &[], ""), service("b", &[b.inbound()], "")],
    )
    .await
    .expect("mesh with defaults");

    let reply = client::http1_post(a.outbound(), "b", "/pay", Bytes::from_static(b"{}"))
        .await
        .expect("POST through a");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.text(), "faulty upstream\n", "the app's own answer");
    assert_eq!(bad.methods(), ["POST"], "a POST is tried once");

    let reply = client::http1_get(a.outbound(), "b", "/read", &[])
        .await
        .expect("GET through a");
    assert_eq!(reply.status, 503);
    assert_eq!(
        bad.methods(),
        ["POST", "GET", "GET", "GET"],
        "a GET is tried 1 + 2 times by default"
    );
}

/// An upstream may answer before it has read the request (a 503 by its headers) while
/// the client is still sending a slow body. The retry must send the whole body: the
/// first attempt's connection, still sending, must not take the chunks that come after
/// the retry began (it did, and the retry waited for its timeout).
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_post_sends_the_whole_slow_body_after_an_early_503() {
    let app = FaultyServer::start(Fault::EarlyStatusOnce(503))
        .await
        .expect("early-503 app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b],
    } = CallerAndEndpoints::start("b", [app.addr()])
        .await
        .expect("mesh and proxies start");
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service(
                "b",
                &[b.inbound()],
                "    timeout: 10s\n    retries:\n      attempts: 2\n      non_idempotent: true\n",
            ),
        ],
    )
    .await
    .expect("mesh with retries for POST");

    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let request = http::Request::post("/upload")
        .header(http::header::HOST, "b")
        .body(StreamBody::new(ReceiverStream::new(body)))
        .expect("request");
    let outbound = a.outbound();
    let reply = tokio::spawn(async move { client::http1_send(outbound, request).await });
    let send = |text: &'static str| {
        let chunks = chunks.clone();
        async move {
            chunks
                .send(Ok(Frame::data(Bytes::from_static(text.as_bytes()))))
                .await
                .expect("the client still sends")
        }
    };
    send("one,").await;
    // The first attempt was answered 503 and retried while the body is still coming.
    wait::until(
        "a retries after the early 503",
        Duration::from_secs(10),
        || async {
            let metrics = a.metrics().await?;
            let retries = metric_value(&metrics, "seam_retries_total", &[("service", "b")]);
            anyhow::ensure!(retries == Some(1.0), "retries: {retries:?}");
            Ok(())
        },
    )
    .await
    .expect("retried");
    for part in ["two,", "three,", "four"] {
        send(part).await;
    }
    drop(chunks);
    let reply = reply.await.expect("client task").expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "one,two,three,four",
        "the retry sent the whole body"
    );
    assert_eq!(app.methods(), ["POST", "POST"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_beyond_max_concurrent_requests_is_shed_and_a_change_spares_requests_in_flight() {
    let app_b = EchoServer::start("b").await.expect("app b");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b],
    } = CallerAndEndpoints::start("b", [app_b.addr()])
        .await
        .expect("mesh and proxies start");
    let limited = "    max_concurrent_requests: 2\n";
    policy_mesh::apply(
        &mesh,
        &[service("a", &[], ""), service("b", &[b.inbound()], limited)],
    )
    .await
    .expect("mesh with a limit of 2");

    let app = AppClient::new(a.outbound());
    let held: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get("b", "/hold").await })
        })
        .collect();
    app_b
        .wait_held(2, READY_TIMEOUT)
        .await
        .expect("two requests held");

    let reply = app.get("b", "/third").await.expect("third request");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply
            .text()
            .starts_with("load shed: every endpoint of b has 2 requests in flight"),
        "{}",
        reply.text()
    );
    let metrics = a.metrics().await.expect("a's /metrics");
    assert_eq!(
        metric_value(&metrics, "seam_load_shed_total", &[("service", "b")]),
        Some(1.0),
        "{metrics}"
    );

    // Raise the limit while both are held: new requests pass, the held ones carry on.
    let version = policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service("b", &[b.inbound()], "    max_concurrent_requests: 10\n"),
        ],
    )
    .await
    .expect("mesh with a limit of 10");
    policy_mesh::wait_applied(&a, "b", version, READY_TIMEOUT)
        .await
        .expect("a applies the new limit");
    let reply = app.get("b", "/fourth").await.expect("fourth request");
    assert_eq!(reply.status, 200, "{}", reply.text());
    app_b.release_held();
    for request in held {
        let reply = request.await.expect("held task").expect("held request");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unavailable_is_retried_on_the_other_endpoint_and_ejected() {
    let healthy = GrpcHealthServer::start().await.expect("gRPC health server");
    let unavailable = FaultyServer::start(Fault::GrpcUnavailable)
        .await
        .expect("UNAVAILABLE app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [good, bad],
    } = CallerAndEndpoints::start("grpc", [healthy.addr(), unavailable.addr()])
        .await
        .expect("mesh and proxies start");
    // gRPC calls are POSTs: retrying them is the service's choice.
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service(
                "grpc",
                &[good.inbound(), bad.inbound()],
                "    retries:\n      non_idempotent: true\n",
            ),
        ],
    )
    .await
    .expect("mesh with gRPC retries");

    let channel = client::grpc_channel(a.outbound(), "grpc")
        .await
        .expect("h2c connection to a's outbound");
    // Eight callers at a time on one HTTP/2 connection, 50 calls each.
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let mut health = HealthClient::new(channel.clone());
            tokio::spawn(async move {
                for call in 0..50 {
                    let response = health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map_err(|status| format!("caller {caller} call {call}: {status:?}"))?;
                    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    let mut failed = Vec::new();
    for caller in callers {
        if let Err(error) = caller.await.expect("caller task") {
            failed.push(error);
        }
    }
    let metrics = a.metrics().await.expect("a's /metrics");
    assert!(
        failed.is_empty(),
        "{failed:?}; the bad app saw {}; {metrics}",
        unavailable.requests_seen()
    );
    assert!(
        unavailable.requests_seen() >= 5,
        "the bad endpoint was tried {} times",
        unavailable.requests_seen()
    );
    assert_eq!(
        policy_mesh::ejected(&a).await.expect("a's /config"),
        [bad.inbound().to_string()]
    );
    let retries = metric_value(
        &metrics,
        "seam_retries_total",
        &[("service", "grpc"), ("reason", "unavailable")],
    );
    assert_eq!(
        retries,
        Some(unavailable.requests_seen() as f64),
        "every UNAVAILABLE was retried: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_try_timeout_moves_a_request_off_a_hanging_endpoint() {
    let good = EchoServer::start("b-good").await.expect("good app");
    let hanging = FaultyServer::start(Fault::Hang).await.expect("hanging app");
    let CallerAndEndpoints {
        mesh,
        app_a: _app_a,
        a,
        endpoints: [b_good, b_hanging],
    } = CallerAndEndpoints::start("b", [good.addr(), hanging.addr()])
        .await
        .expect("mesh and proxies start");
    policy_mesh::apply(
        &mesh,
        &[
            service("a", &[], ""),
            service(
                "b",
                &[b_good.inbound(), b_hanging.inbound()],
                "    timeout: 5s\n    retries:\n      per_try_timeout: 1s\n",
            ),
        ],
    )
    .await
    .expect("mesh with a per-try timeout");

    let app = AppClient::new(a.outbound());
    // Until the hanging endpoint has been tried (it gets its share while unmeasured).
    let mut replies = Vec::new();
    while hanging.requests_seen() == 0 && replies.len() < 200 {
        replies.push(app.get("b", "/").await);
    }
    assert!(
        hanging.requests_seen() > 0,
        "the hanging endpoint was never tried"
    );
    assert_eq!(failures(&replies), Vec::<String>::new());
    let metrics = a.metrics().await.expect("a's /metrics");
    let retries = metric_value(
        &metrics,
        "seam_retries_total",
        &[("service", "b"), ("reason", "per-try-timeout")],
    );
    assert_eq!(
        retries,
        Some(hanging.requests_seen() as f64),
        "every try that hung was retried: {metrics}"
    );
}
