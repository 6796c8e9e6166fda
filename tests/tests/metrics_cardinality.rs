//! The proxies' metrics stay bounded whatever the app and the upstream send. Through proxy
//! `a` to proxy `b` and a real upstream, 1,000 and then 10,000 more requests go out with a
//! distinct Host each (half of them names the mesh does not know, the others `b` with a
//! distinct port), distinct paths, standard and made-up methods, 250 distinct upstream
//! status codes (200 to 947, beyond HTTP's own range) and `grpc-status` values in and out
//! of the 17 codes and not numbers at all. The number of series on both proxies'
//! `/metrics` is the same after both runs and below a fixed bound, promtool accepts the
//! exposition, and the names `a` cannot track any more (5,000 authorities at most) are
//! refused and counted without closing its discovery stream.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use seam_tests::mesh::metric_value;
use seam_tests::{CallerAndEndpoints, client, prometheus, wait};
use tokio::net::{TcpListener, TcpStream};

/// Keep-alive connections the requests are spread over.
const CONNECTIONS: usize = 8;
/// The most series one proxy may show after any traffic of this shape (one service, one
/// route, one peer): at most 69 status labels (registered codes, five classes, `other`)
/// for plain responses, 18 gRPC labels for gRPC ones, `unknown`'s 503, two latency
/// histograms of 19 lines and some 50 fixed series make under 200, whatever the input
/// (a run here shows about 100 on `a` and 80 on `b`).
const MAX_SERIES_PER_PROXY: usize = 250;
/// How many authorities a proxy tracks at once (`MAX_AUTHORITIES` in the proxy).
const MAX_AUTHORITIES: usize = 5_000;
/// The made-up `grpc-status` values: the 17 codes, out of range and not numbers.
const GRPC_STATUSES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "17",
    "99",
    "255",
    "256",
    "65536",
    "4294967296",
    "-1",
    "abc",
    "1.5",
];

/// An upstream that answers `/status/<code>/…` with that status and `/grpc/<value>/…` as
/// a trailers-only gRPC response with that `grpc-status`.
async fn upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(request.uri().path()))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(path: &str) -> Response<Full<Bytes>> {
    let mut parts = path.trim_start_matches('/').split('/');
    let (kind, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = Response::builder();
    let response = match kind {
        "status" => response.status(
            value
                .parse::<u16>()
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .unwrap_or(StatusCode::BAD_REQUEST),
        ),
        "grpc" => response
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", value),
        _ => response.status(StatusCode::NOT_FOUND),
    };
    response
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("the status and headers are valid")
}

/// Request number `n`: its Host, method and path.
fn request(n: usize) -> (String, Method, String) {
    if n % 2 == 1 {
        return (format!("unknown-{n}.example"), Method::GET, format!("/{n}"));
    }
    let k = n / 2;
    let method = match k % 5 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::DELETE,
        3 => Method::OPTIONS,
        _ => Method::from_bytes(format!("M{n}").as_bytes()).expect("a token is a method"),
    };
    let path = if k.is_multiple_of(2) {
        format!("/grpc/{}/{n}", GRPC_STATUSES[(k / 2) % GRPC_STATUSES.len()])
    } else {
        format!("/status/{}/{n}", 200 + ((k / 2) % 250) * 3)
    };
    // Every `b:<port>` names service b; the port makes each Host distinct.
    (format!("b:{}", 1 + n % 65_000), method, path)
}

/// Sends requests `numbers` through `outbound`, each connection kept alive and opened
/// again only when the proxy closes it; returns the answers' statuses by request number.
async fn send_all(
    outbound: SocketAddr,
    numbers: Range<usize>,
) -> anyhow::Result<Vec<(usize, u16, String)>> {
    let mut workers = Vec::new();
    for worker in 0..CONNECTIONS {
        let mine: Vec<usize> = numbers.clone().skip(worker).step_by(CONNECTIONS).collect();
        workers.push(tokio::spawn(async move {
            let mut sender = None;
            let mut answers = Vec::with_capacity(mine.len());
            for n in mine {
                let (host, method, path) = request(n);
                let mut connection = match sender.take() {
                    Some(open) => open,
                    None => connect(outbound).await?,
                };
                let request = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(http::header::HOST, host)
                    .body(Empty::<Bytes>::new())?;
                let response = connection
                    .send_request(request)
                    .await
                    .with_context(|| format!("request {n}"))?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                answers.push((n, status, String::from_utf8_lossy(&body).into_owned()));
                if !connection.is_closed() {
                    sender = Some(connection);
                }
            }
            anyhow::Ok(answers)
        }));
    }
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await??);
    }
    Ok(answers)
}

async fn connect(
    outbound: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(outbound).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The series of an exposition (its samples without their values): all of them, and
/// those of the request families.
fn series(exposition: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let all: BTreeSet<String> = exposition
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect();
    let requests = all
        .iter()
        .filter(|series| {
            series.starts_with("seam_requests_total{")
                || series.starts_with("seam_request_duration_seconds")
        })
        .cloned()
        .collect();
    (all, requests)
}

#[tokio::test(flavor = "multi_thread")]
async fn series_stay_bounded_whatever_hosts_paths_methods_and_statuses_come() {
    let upstream = upstream().await.expect("upstream listens");
    let mesh = CallerAndEndpoints::start("b", [upstream])
        .await
        .expect("mesh starts");
    let b = &mesh.endpoints[0];
    mesh.mesh
        .set_endpoints(&[("b", &[b.inbound()])])
        .await
        .expect("b listed");
    wait::until("a reaches b", Duration::from_secs(10), || async {
        let reply = client::http1_get(mesh.a.outbound(), "b", "/status/200/ready", &[]).await?;
        anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.text());
        Ok(())
    })
    .await
    .expect("b's endpoint reaches a");

    let mut counts = Vec::new();
    let mut refused = Vec::new();
    for run in [0..1_000, 1_000..11_000] {
        let answers = send_all(mesh.a.outbound(), run.clone())
            .await
            .expect("every request answered");
        assert_eq!(answers.len(), run.len());
        for (n, status, body) in &answers {
            if n.is_multiple_of(2) && body.contains("already tracks") {
                panic!("request {n} to b was refused: {body}");
            }
            if *status == 503 && body.contains("already tracks") {
                refused.push(body.clone());
            }
        }
        let (a_text, b_text) = (
            mesh.a.metrics().await.expect("a's /metrics"),
            b.metrics().await.expect("b's /metrics"),
        );
        for text in [&a_text, &b_text] {
            prometheus::check_metrics(text)
                .await
                .expect("promtool accepts the exposition");
            assert!(!text.contains("unknown-"), "a Host became a label:\n{text}");
            assert!(
                !text.contains("/status/") && !text.contains("/grpc/"),
                "a path became a label:\n{text}"
            );
            assert!(
                !text.contains("\"M") && !text.contains("\"b:"),
                "a method or Host became a label:\n{text}"
            );
        }
        counts.push((series(&a_text), series(&b_text), a_text, b_text));
    }
    let (first, last) = (&counts[0], &counts[1]);
    for (proxy, before, after, text) in [
        ("a", &first.0, &last.0, &last.2),
        ("b", &first.1, &last.1, &last.3),
    ] {
        let grown: Vec<&String> = after.1.difference(&before.1).collect();
        assert!(
            grown.is_empty(),
            "{proxy}'s request series grew from 1,000 to 11,000 requests: {grown:#?}"
        );
        assert!(
            after.0.len() <= MAX_SERIES_PER_PROXY,
            "{proxy} has {} series:\n{text}",
            after.0.len()
        );
        eprintln!(
            "{proxy}: {} series after 1,000 requests, {} after 11,000 ({} and {} of requests)",
            before.0.len(),
            after.0.len(),
            before.1.len(),
            after.1.len()
        );
    }
    let a_text = &last.2;
    for code in ["unknown", "0", "16"] {
        assert!(
            metric_value(
                a_text,
                "seam_requests_total",
                &[("service", "b"), ("grpc_status", code)]
            )
            .is_some(),
            "grpc_status {code}:\n{a_text}"
        );
    }
    assert!(
        metric_value(
            a_text,
            "seam_requests_total",
            &[("service", "b"), ("grpc_status", "17")]
        )
        .is_none()
    );
    for status in ["other", "2xx", "503"] {
        assert!(
            metric_value(
                a_text,
                "seam_requests_total",
                &[("service", "b"), ("status", status)]
            )
            .is_some(),
            "status {status}:\n{a_text}"
        );
    }

    // 5,500 distinct unknown names, a's own policy and b: the names beyond the limit are
    // refused, with a reason, and counted; the discovery stream stays up.
    let expected_refusals = 5_500 + 2 - MAX_AUTHORITIES;
    assert_eq!(refused.len(), expected_refusals, "{:?}", refused.first());
    assert!(refused[0].contains("5000 authorities"), "{}", refused[0]);
    assert_eq!(
        metric_value(a_text, "seam_authorities_refused_total", &[]),
        Some(expected_refusals as f64)
    );
    assert_eq!(
        metric_value(a_text, "seam_discovery_connected", &[]),
        Some(1.0),
        "{a_text}"
    );
    let config = mesh.a.config().await.expect("a's /config");
    assert_eq!(
        config["subscriptions"]
            .as_object()
            .map(serde_json::Map::len),
        Some(MAX_AUTHORITIES),
        "a tracks its limit"
    );
}
