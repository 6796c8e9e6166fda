use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use prometheus_client::encoding::text::encode;
use seam_proto::SpiffeId;

use super::*;
use crate::body;
use crate::metrics::Direction;

struct Fixture {
    taps: Arc<Taps>,
    registry: Registry,
}

fn fixture() -> Fixture {
    let mut registry = Registry::with_prefix("seam");
    let metrics = TapMetrics::register(&mut registry);
    Fixture {
        taps: Arc::new(Taps::new(metrics)),
        registry,
    }
}

impl Fixture {
    fn metrics(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("metrics encode");
        text
    }
}

fn query(text: &str) -> TapQuery {
    TapQuery::parse(Some(text)).expect("valid query")
}

fn request(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, "api:8080")
        .header("x-foo", "foo-value")
        .header(header::AUTHORIZATION, "Bearer secret")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap()
}

fn head(direction: Direction, service: &str) -> EventHead {
    EventHead {
        direction,
        service: service.into(),
        route: "default".into(),
        peer: Some(
            "spiffe://seam.local/ns/default/sa/api"
                .parse::<SpiffeId>()
                .unwrap(),
        ),
        peer_verified: true,
        method: Method::POST,
        status: 201,
        grpc_status: None,
        retries: 1,
        endpoint: Some("127.0.0.1:4143".parse().unwrap()),
    }
}

/// Sends one finished request through `follow`, reading its whole response body.
async fn finish_one(taps: &Arc<Taps>, path: &str, direction: Direction, service: &str) {
    let captured = taps.capture(&request(path)).expect("a tap is open");
    let response = Response::new(body::text("twelve bytes".into()));
    let event = captured.into_event(head(direction, service));
    let response = taps.follow(response, event, tokio::time::Instant::now());
    response.into_body().collect().await.expect("body reads");
}

/// `count` inbound requests from web, to `/0`, `/1`, ...
async fn finish_inbound(taps: &Arc<Taps>, count: usize) {
    for round in 0..count {
        finish_one(taps, &format!("/{round}"), Direction::Inbound, "web").await;
    }
}

#[test]
fn nothing_is_captured_while_no_tap_is_open() {
    let fixture = fixture();
    assert!(fixture.taps.capture(&request("/x")).is_none());
    let opened = fixture.taps.open(&query("")).unwrap();
    assert!(fixture.taps.capture(&request("/x")).is_some());
    assert!(fixture.metrics().contains("seam_taps_open 1"));
    drop(opened);
    assert!(fixture.taps.capture(&request("/x")).is_none());
    assert!(fixture.metrics().contains("seam_taps_open 0"));
}

#[tokio::test]
async fn a_finished_request_reaches_the_taps_whose_filter_it_passes() {
    let fixture = fixture();
    let mut everything = fixture.taps.open(&query("headers=x-foo")).unwrap();
    let mut v1_only = fixture.taps.open(&query("path_prefix=/v1")).unwrap();
    finish_one(&fixture.taps, "/v2/items", Direction::Outbound, "api").await;
    finish_one(&fixture.taps, "/v1/items", Direction::Outbound, "api").await;

    let first = everything.events.recv().await.unwrap();
    assert_eq!(first.path, "/v2/items");
    let second = everything.events.recv().await.unwrap();
    assert_eq!(second.path, "/v1/items");
    let only = v1_only.events.recv().await.unwrap();
    assert_eq!(only.path, "/v1/items");
    assert!(v1_only.events.try_recv().is_err(), "/v2 passed the filter");

    let json = first.to_json(
        Some("spiffe://seam.local/ns/default/sa/web"),
        &[HeaderName::from_static("x-foo")],
    );
    assert_eq!(json["direction"], "outbound");
    assert_eq!(json["caller"], "spiffe://seam.local/ns/default/sa/web");
    assert_eq!(json["callee"], "spiffe://seam.local/ns/default/sa/api");
    assert_eq!(json["proxy"], "spiffe://seam.local/ns/default/sa/web");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["authority"], "api:8080");
    assert_eq!(json["status"], 201);
    assert_eq!(json["request_bytes"], 5);
    assert_eq!(json["response_bytes"], 12);
    assert_eq!(json["retries"], 1);
    assert_eq!(json["endpoint"], "127.0.0.1:4143");
    assert_eq!(json["mtls"], true);
    assert_eq!(json["headers"], serde_json::json!({"x-foo": "foo-value"}));
    // The tap that named no header sees none, not even those another tap captured.
    let plain = only.to_json(None, &[]);
    assert!(plain.get("headers").is_none(), "{plain}");
    assert!(!plain.to_string().contains("secret"), "{plain}");
}

#[tokio::test]
async fn inbound_events_name_the_peer_as_caller() {
    let fixture = fixture();
    let mut tap = fixture.taps.open(&query("direction=inbound")).unwrap();
    finish_one(&fixture.taps, "/x", Direction::Outbound, "api").await;
    finish_one(&fixture.taps, "/y", Direction::Inbound, "web").await;
    let event = tap.events.recv().await.unwrap();
    let json = event.to_json(Some("spiffe://seam.local/ns/default/sa/web"), &[]);
    assert_eq!(json["path"], "/y");
    assert_eq!(json["caller"], "spiffe://seam.local/ns/default/sa/api");
    assert_eq!(json["callee"], "spiffe://seam.local/ns/default/sa/web");
    assert!(tap.events.try_recv().is_err());
}

#[tokio::test]
async fn a_tap_gets_at_most_its_rate_and_the_rest_is_counted() {
    let fixture = fixture();
    let mut tap = fixture.taps.open(&query("max_rps=3")).unwrap();
    finish_inbound(&fixture.taps, 10).await;
    let mut received = 0;
    while tap.events.try_recv().is_ok() {
        received += 1;
    }
    // GCRA at 3/s allows a burst of 3; the loop above takes far less than a second.
    assert!((3..=4).contains(&received), "{received}");
    let metrics = fixture.metrics();
    let dropped = 10 - received;
    assert!(
        metrics.contains(&format!(
            "seam_tap_events_dropped_total{{reason=\"rate_limited\"}} {dropped}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_tap_that_is_not_read_loses_events_beyond_its_queue() {
    let fixture = fixture();
    let _tap = fixture.taps.open(&query("max_rps=10000")).unwrap();
    finish_inbound(&fixture.taps, TAP_QUEUE + 5).await;
    let metrics = fixture.metrics();
    assert!(
        metrics.contains("seam_tap_events_dropped_total{reason=\"queue_full\"} 5"),
        "{metrics}"
    );
}

#[test]
fn at_most_sixteen_taps_are_open_at_once() {
    let fixture = fixture();
    let mut open: Vec<OpenedTap> = (0..MAX_OPEN_TAPS)
        .map(|_| fixture.taps.open(&query("")).unwrap())
        .collect();
    assert!(fixture.taps.open(&query("")).is_err());
    open.pop();
    assert!(fixture.taps.open(&query("")).is_ok());
}

#[tokio::test]
async fn the_event_is_published_when_the_body_ends_with_trailers_or_is_dropped() {
    let fixture = fixture();
    let mut tap = fixture.taps.open(&query("")).unwrap();

    // A gRPC body: its status comes in the trailers, after two data frames.
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "5".parse().unwrap());
    let frames = vec![
        Ok::<_, body::BodyError>(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::data(Bytes::from_static(b"defg"))),
        Ok(Frame::trailers(trailers)),
    ];
    let streamed = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let captured = fixture.taps.capture(&request("/grpc")).unwrap();
    let response = fixture.taps.follow(
        Response::new(streamed),
        captured.into_event(head(Direction::Outbound, "api")),
        tokio::time::Instant::now(),
    );
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(tap.events.try_recv().is_err(), "published before the end");
    body.collect().await.unwrap();
    let event = tap.events.recv().await.unwrap();
    assert_eq!((event.response_bytes, event.grpc_status), (7, Some(5)));

    // A response the client never read: published when hyper drops it.
    let captured = fixture.taps.capture(&request("/gone")).unwrap();
    let response = fixture.taps.follow(
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(body::text("no endpoints for api\n".into()))
            .unwrap(),
        captured.into_event(head(Direction::Outbound, "api")),
        tokio::time::Instant::now(),
    );
    drop(response);
    let event = tokio::time::timeout(Duration::from_secs(1), tap.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((event.path.as_str(), event.response_bytes), ("/gone", 0));
}
