//! The dashboard's JSON views from scraped samples: proxies' `/metrics` text (the shape
//! `seam-proxy` serves), `/callers`, `/config` and `/identity` answers written here.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::certs::certs_view;
use super::graph::{Health, Transport, graph};
use super::history::{History, MAX_SERIES, RECENT_ROUNDS, Round, SERIES_POINTS};
use super::scrape::{INTERVAL, ProxyScrape};
use super::service::service_view;
use crate::ctl::stat_table::{RowKey, Snapshot};
use crate::model::MeshModel;
use crate::registry::{NackRecord, ProxyRecord, SubscriptionRecord};

const TD: &str = "spiffe://seam.local/ns/default/sa";

/// The `seam_requests_total` and `seam_request_duration_seconds` lines a proxy serves
/// for one direction and service: `ok` 200s and `failed` 503s, all of them under 4 ms
/// except `slow`, which took between 8 and 16 ms.
fn metrics(direction: &str, service: &str, ok: u64, failed: u64, slow: u64) -> String {
    let total = ok + failed;
    let mut text = String::from(
        "# HELP seam_requests_total HTTP requests handled.\n# TYPE seam_requests_total counter\n",
    );
    for (status, count) in [(200, ok), (503, failed)] {
        text.push_str(&format!(
            "seam_requests_total{{direction=\"{direction}\",service=\"{service}\",route=\"default\",status=\"{status}\",grpc_status=\"\",tls=\"true\",peer=\"{TD}/{service}\"}} {count}\n"
        ));
    }
    text.push_str("# TYPE seam_request_duration_seconds histogram\n");
    for (le, count) in [
        ("0.002", 0),
        ("0.004", total - slow),
        ("0.008", total - slow),
        ("0.016", total),
        ("+Inf", total),
    ] {
        text.push_str(&format!(
            "seam_request_duration_seconds_bucket{{le=\"{le}\",direction=\"{direction}\",service=\"{service}\",route=\"default\"}} {count}\n"
        ));
    }
    text.push_str(&format!(
        "seam_request_duration_seconds_count{{direction=\"{direction}\",service=\"{service}\",route=\"default\"}} {total}\n"
    ));
    text
}

fn record(id: u64, service: &str) -> ProxyRecord {
    ProxyRecord {
        id,
        service: service.into(),
        spiffe_id: format!("{TD}/{service}"),
        admin_addr: Some(format!("127.0.0.1:{}", 4190 + id)),
        proxy_version: Some("0.1.0".into()),
        connected_at_unix: 1_796_281_775,
        subscriptions: Default::default(),
        nacks_total: 0,
    }
}

fn callers(service: &str, callers: &[(&str, &str)]) -> Value {
    let entries: Vec<Value> = callers
        .iter()
        .map(|(caller, transport)| {
            json!({"caller": caller, "transport": transport, "allowed": 10, "denied": 0})
        })
        .collect();
    json!({"service": service, "spiffe_id": format!("{TD}/{service}"), "callers": entries})
}

fn scrape(id: u64, service: &str, callers_answer: Option<Value>) -> ProxyScrape {
    ProxyScrape {
        record: record(id, service),
        callers: callers_answer,
        config: Some(json!({"service": service, "ejected_endpoints": []})),
        identity: None,
        error: None,
    }
}

/// A round at `start + seconds`, from the given proxies' metrics texts.
fn round(
    start: Instant,
    seconds: u64,
    texts: &[(&str, String)],
    proxies: Vec<ProxyScrape>,
) -> Round {
    let mut snapshot = Snapshot::default();
    for (service, text) in texts {
        snapshot.add_proxy(service, text);
    }
    Round {
        taken: start + Duration::from_secs(seconds),
        at_unix_ms: 1_000_000 + seconds * 1000,
        snapshot,
        proxies,
    }
}

/// front calls middle over mTLS: two scrapes 2 s apart of front's proxy (outbound to
/// middle, inbound from loadgen) and middle's (inbound).
fn front_and_middle(second: (u64, u64, u64)) -> History {
    let start = Instant::now();
    let proxies = || {
        vec![
            scrape(
                1,
                "front",
                Some(callers("front", &[(&format!("{TD}/loadgen"), "mtls")])),
            ),
            scrape(
                2,
                "middle",
                Some(callers("middle", &[(&format!("{TD}/front"), "mtls")])),
            ),
        ]
    };
    let texts = |ok: u64, failed: u64, slow: u64| {
        vec![
            (
                "front",
                metrics("outbound", "middle", ok, failed, slow)
                    + &metrics("inbound", "front", ok, failed, slow),
            ),
            ("middle", metrics("inbound", "middle", ok, failed, slow)),
        ]
    };
    let mut history = History::default();
    history.record(round(start, 0, &texts(100, 0, 0), proxies()));
    let (ok, failed, slow) = second;
    history.record(round(start, 2, &texts(100 + ok, failed, slow), proxies()));
    history
}

#[test]
fn graph_has_rates_latency_and_mtls_per_edge_from_two_scrapes() {
    // 2 s later: 38 more 200s, 2 503s (95 %), 1 of the 40 slow.
    let history = front_and_middle((38, 2, 1));
    let graph = graph(&history, ["loadgen", "front", "middle", "back"]);
    assert_eq!(graph.window_seconds, 2.0);
    let edge = graph
        .edges
        .iter()
        .find(|edge| edge.caller == "front" && edge.callee == "middle")
        .expect("front -> middle edge");
    assert_eq!(edge.rps, 20.0);
    assert_eq!(edge.success_rate, Some(0.95));
    // Rank 39.6 of 40 falls in the 8-16 ms bucket holding 1: 8 + 8 * 0.6.
    assert!(
        (edge.p99_ms.unwrap() - 12.8).abs() < 1e-6,
        "{:?}",
        edge.p99_ms
    );
    assert_eq!(edge.transport, Transport::Mtls);
    assert_eq!(graph.edges.len(), 1);

    let node = |name: &str| {
        graph
            .nodes
            .iter()
            .find(|node| node.service == name)
            .unwrap()
    };
    assert_eq!(node("middle").health, Health::Degraded);
    assert_eq!(node("middle").rps, 20.0);
    assert_eq!(node("middle").proxies, 1);
    // In the model but without a proxy or traffic: present and idle.
    assert_eq!(node("back").health, Health::Idle);
    assert_eq!(node("back").proxies, 0);
    assert_eq!(graph.nodes.len(), 4);
    let json = serde_json::to_value(&graph).unwrap();
    assert_eq!(json["edges"][0]["transport"], "mtls");
    let middle = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["service"] == "middle");
    assert_eq!(middle.unwrap()["health"], "degraded");
}

#[test]
fn health_follows_the_success_rate_thresholds() {
    assert_eq!(Health::of(Some(1.0)), Health::Healthy);
    assert_eq!(Health::of(Some(0.99)), Health::Healthy);
    assert_eq!(Health::of(Some(0.989)), Health::Degraded);
    assert_eq!(Health::of(Some(0.95)), Health::Degraded);
    assert_eq!(Health::of(Some(0.5)), Health::Failing);
    assert_eq!(Health::of(None), Health::Idle);
    let healthy = front_and_middle((40, 0, 0));
    let graph = graph(&healthy, ["middle"]);
    assert_eq!(
        graph
            .nodes
            .iter()
            .find(|n| n.service == "middle")
            .unwrap()
            .health,
        Health::Healthy
    );
    // front is called by nobody in these metrics... except its inbound row: healthy too.
    assert_eq!(
        graph
            .nodes
            .iter()
            .find(|n| n.service == "front")
            .unwrap()
            .health,
        Health::Healthy
    );
}

#[test]
fn transport_comes_from_the_callees_callers() {
    let start = Instant::now();
    let texts = |n: u64| {
        vec![
            (
                "web",
                metrics("outbound", "api", n, 0, 0) + &metrics("outbound", "db", n, 0, 0),
            ),
            ("api", metrics("inbound", "api", n, 0, 0)),
        ]
    };
    let proxies = || {
        vec![
            scrape(1, "web", None),
            // api counted only unauthenticated callers; db has no proxy at all.
            scrape(
                2,
                "api",
                Some(callers("api", &[("plaintext", "plaintext")])),
            ),
        ]
    };
    let mut history = History::default();
    history.record(round(start, 0, &texts(0), proxies()));
    history.record(round(start, 2, &texts(10), proxies()));
    let graph = graph(&history, []);
    let transport = |callee: &str| {
        graph
            .edges
            .iter()
            .find(|edge| edge.callee == callee)
            .unwrap()
            .transport
    };
    assert_eq!(transport("api"), Transport::Plaintext);
    assert_eq!(transport("db"), Transport::Unknown);
    // A service only seen calling is a node, coloured by what its calls got back.
    let web = graph
        .nodes
        .iter()
        .find(|node| node.service == "web")
        .unwrap();
    assert_eq!((web.health, web.success_rate), (Health::Healthy, Some(1.0)));
    assert_eq!(web.rps, 10.0, "two edges of 5 rps each");
}

#[test]
fn an_unreachable_proxy_is_listed_and_counted() {
    let start = Instant::now();
    let mut down = scrape(3, "back", None);
    down.error = Some("127.0.0.1:4193 did not answer within 1.5s".into());
    let mut history = History::default();
    history.record(round(start, 0, &[], vec![down.clone()]));
    let graph = graph(&history, ["back"]);
    assert_eq!(graph.window_seconds, 0.0, "one round is no window");
    assert_eq!(graph.unreachable.len(), 1);
    assert!(graph.unreachable[0].error.contains("did not answer"));
    assert_eq!(graph.nodes[0].unreachable_proxies, 1);
}

#[test]
fn the_history_keeps_bounded_rings() {
    let start = Instant::now();
    let mut history = History::default();
    let rounds = SERIES_POINTS as u64 + 20;
    let step = INTERVAL.as_secs();
    for index in 0..rounds {
        let text = metrics("inbound", "api", index * 10, 0, 0);
        history.record(round(start, index * step, &[("api", text)], Vec::new()));
    }
    let series = history.series(&RowKey::Service("api".into()));
    assert_eq!(series.len(), SERIES_POINTS);
    assert_eq!(
        series.last().unwrap().at_unix_ms,
        1_000_000 + (rounds - 1) * step * 1000
    );
    assert_eq!(series.last().unwrap().rps, 10.0 / step as f64);
    // The window spans the recent rounds only.
    let (window, _) = history.window().unwrap();
    assert_eq!(window, INTERVAL * (RECENT_ROUNDS as u32 - 1));

    // A series nobody reports any more is forgotten once its ring's span has passed.
    let later = rounds * step + INTERVAL.as_secs() * SERIES_POINTS as u64 + step;
    history.record(round(start, later, &[], Vec::new()));
    assert!(history.series(&RowKey::Service("api".into())).is_empty());
    assert_eq!(history.series_count(), 0);
}

#[test]
fn the_number_of_series_is_capped() {
    let start = Instant::now();
    let texts = |count: u64| -> Vec<(&str, String)> {
        let text: String = (0..MAX_SERIES + 10)
            .map(|index| metrics("inbound", &format!("svc{index}"), count, 0, 0))
            .collect();
        vec![("x", text)]
    };
    let mut history = History::default();
    history.record(round(start, 0, &texts(0), Vec::new()));
    history.record(round(start, 2, &texts(5), Vec::new()));
    assert_eq!(history.series_count(), MAX_SERIES);
}

fn model() -> MeshModel {
    let text = "services:
  middle:
    join_token: m
    endpoints: [\"127.0.0.1:4001\", \"127.0.0.1:4002\"]
    timeout: 3s
    routes:
      - match: { path_prefix: /v2, method: GET }
        backends:
          - { service: back, weight: 100 }
  front:
    join_token: f
    endpoints: [\"127.0.0.1:4000\"]
  back:
    join_token: b
";
    crate::mesh_file::parse(Path::new("/tmp/mesh.yaml"), text, "seam.local").unwrap()
}

#[test]
fn service_view_marks_ejected_endpoints_and_shows_acks_nacks_and_routes() {
    let mut history = front_and_middle((40, 0, 0));
    // front's proxy has ejected one of middle's endpoints.
    let start = Instant::now();
    let mut front = scrape(1, "front", None);
    front.config = Some(json!({"service": "front", "ejected_endpoints": [
        {"address": "127.0.0.1:4002", "times_ejected": 1, "remaining_ms": 2500, "probing": false}
    ]}));
    let texts = vec![
        ("front", metrics("outbound", "middle", 160, 0, 0)),
        ("middle", metrics("inbound", "middle", 160, 0, 0)),
    ];
    history.record(round(
        start,
        4,
        &texts,
        vec![front, scrape(2, "middle", None)],
    ));

    let mut middle = record(2, "middle");
    middle.subscriptions.insert(
        "back".into(),
        SubscriptionRecord {
            authority: "back".into(),
            sent_version: Some(3),
            acked_version: Some(2),
            nack: Some(NackRecord {
                version: 3,
                reason: "bad route".into(),
            }),
        },
    );
    let view = service_view("middle", &history, &model(), &[record(1, "front"), middle])
        .expect("middle is known");
    assert_eq!(view["service"], "middle");
    let states: Vec<(&str, &str)> = view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["address"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("127.0.0.1:4001", "ok"), ("127.0.0.1:4002", "ejected")]
    );
    assert_eq!(view["endpoints"][1]["ejected_by"][0]["service"], "front");
    assert_eq!(view["endpoints"][0]["identity"], format!("{TD}/middle"));
    let series = view["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0]["rps"], 20.0);
    assert_eq!(series[0]["success_rate"], 1.0);
    assert_eq!(view["called_by"][0]["caller"], "front");
    assert_eq!(view["pushed"]["policy"]["timeout_ms"], 3000);
    assert_eq!(
        view["pushed"]["routes"][0]["match"]["path"]["prefix"],
        "/v2"
    );
    assert_eq!(
        view["pushed"]["routes"][0]["backends"][0]["service"],
        "back"
    );
    let proxies = view["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 1, "only middle's own proxies");
    assert_eq!(proxies[0]["subscriptions"][0]["acked_version"], 2);
    assert_eq!(
        proxies[0]["subscriptions"][0]["nack"]["reason"],
        "bad route"
    );
    assert_eq!(proxies[0]["scraped"], true);

    assert_eq!(view["series_of"], "inbound");
    assert!(service_view("nowhere", &history, &model(), &[]).is_none());

    // front is called by nobody here: its series is what it sent to middle.
    let front = service_view("front", &front_and_middle((40, 0, 0)), &model(), &[]).unwrap();
    assert_eq!(
        front["series_of"], "inbound",
        "front's own proxy counted loadgen's calls"
    );
    let mut history = History::default();
    let start = Instant::now();
    for (second, count) in [(0, 0), (2, 40), (4, 100)] {
        let text = metrics("outbound", "middle", count, 0, 0)
            + &metrics("outbound", "back", count / 2, count / 2, 0);
        history.record(round(start, second, &[("loadgen", text)], Vec::new()));
    }
    let loadgen = service_view("loadgen", &history, &MeshModel::empty("seam.local"), &[]).unwrap();
    assert_eq!(loadgen["series_of"], "outbound");
    let points = loadgen["series"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    // 2 s apart: 40 to middle (all 200) and 40 to back (half 503): 40 rps, 75 %.
    assert_eq!(points[0]["rps"], 40.0);
    assert_eq!(points[0]["success_rate"], 0.75);
    assert_eq!(points[1]["rps"], 60.0);
}

#[test]
fn certs_view_gives_expiry_and_whether_the_issuer_is_trusted() {
    let now = humantime::parse_rfc3339("2026-12-03T08:00:00Z").unwrap();
    let identity = |key_id: &str| {
        json!({"spiffe_id": format!("{TD}/front"), "serial": "ab", "not_before": "2026-12-03T07:00:00Z",
               "not_after": "2026-12-03T09:00:00Z", "issuer": "CN=root", "issuer_key_id": key_id})
    };
    let mut current = scrape(1, "front", None);
    current.identity = Some(identity("new"));
    let mut previous = scrape(2, "middle", None);
    previous.identity = Some(identity("old"));
    let mut stranger = scrape(3, "back", None);
    stranger.identity = Some(identity("other"));
    let mut down = scrape(4, "loadgen", None);
    down.error = Some("connection refused".into());
    let ca = json!({"trust_domain": "seam.local", "rotation": {"phase": "idle"},
                    "roots": [{"key_id": "new", "subject": "CN=new"}, {"key_id": "old", "subject": "CN=old"}]});
    let view = certs_view(ca, &[current, previous, stranger, down], now);
    assert_eq!(view["rotation"]["phase"], "idle");
    assert_eq!(view["roots"].as_array().unwrap().len(), 2);
    let proxies = view["proxies"].as_array().unwrap();
    assert_eq!(proxies[0]["expires_in_seconds"], 3600.0);
    assert_eq!(
        (
            &proxies[0]["issuer_trusted"],
            &proxies[0]["issued_by_signing_root"]
        ),
        (&json!(true), &json!(true))
    );
    assert_eq!(
        (
            &proxies[1]["issuer_trusted"],
            &proxies[1]["issued_by_signing_root"]
        ),
        (&json!(true), &json!(false))
    );
    assert_eq!(proxies[2]["issuer_trusted"], false);
    assert_eq!(proxies[3]["error"], "connection refused");
    let _ = SystemTime::now();
}

#[test]
fn the_tap_relay_reads_its_query_and_refuses_what_it_does_not_know() {
    use super::tap_relay::parse_query;
    let query =
        parse_query("service=front&to=middle&path_prefix=%2Fapi&method=GET&max_rps=7").unwrap();
    assert_eq!(query.service, "front");
    assert_eq!(query.to.as_deref(), Some("middle"));
    assert_eq!(query.path_prefix.as_deref(), Some("/api"));
    assert_eq!(query.method.as_deref(), Some("GET"));
    assert_eq!(query.max_rps, 7);
    assert_eq!(
        parse_query("service=front").unwrap().max_rps,
        crate::tap::DEFAULT_MAX_RPS
    );
    assert!(parse_query("").unwrap_err().contains("service=NAME"));
    assert!(
        parse_query("service=a&max_rps=0")
            .unwrap_err()
            .contains("max_rps")
    );
    assert!(
        parse_query("service=a&headers=cookie")
            .unwrap_err()
            .contains("\"headers\"")
    );
}

#[test]
fn tap_messages_become_server_sent_events() {
    use super::tap_relay::server_sent_event;
    use crate::tap::{TapEvent, TapMessage};
    let event: TapEvent = serde_json::from_value(json!({
        "time": "2026-12-03T08:00:00.123Z", "direction": "inbound", "proxy": format!("{TD}/front"),
        "service": "front", "route": "default", "caller": format!("{TD}/loadgen"),
        "callee": format!("{TD}/front"), "method": "GET", "authority": "front", "path": "/",
        "status": 200, "grpc_status": null, "latency_ms": 1.5, "request_bytes": null,
        "response_bytes": 12, "retries": 0, "endpoint": null, "mtls": true
    }))
    .unwrap();
    let text = server_sent_event(&TapMessage::Event(Box::new(event)));
    let text = std::str::from_utf8(&text).unwrap();
    let data = text
        .strip_prefix("data: ")
        .unwrap()
        .strip_suffix("\n\n")
        .unwrap();
    assert!(!data.contains('\n'), "one line of JSON per event");
    let back: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (back["path"].as_str(), back["mtls"].as_bool()),
        (Some("/"), Some(true))
    );

    let failed = server_sent_event(&TapMessage::ProxyFailed {
        admin_addr: "127.0.0.1:1".into(),
        reason: "cannot connect".into(),
    });
    assert!(
        failed.starts_with(b"event: proxy-failed\ndata: {"),
        "{failed:?}"
    );
}
