use std::time::{Duration, SystemTime};

use super::*;

fn parse(query: &str) -> Result<TapQuery, QueryError> {
    TapQuery::parse(Some(query))
}

fn event(direction: Direction, service: &str, method: Method, path: &str) -> TapEvent {
    TapEvent {
        started_at: SystemTime::UNIX_EPOCH,
        direction,
        service: service.into(),
        route: "default".into(),
        peer: None,
        method,
        authority: service.to_owned(),
        path: path.to_owned(),
        status: 200,
        grpc_status: None,
        latency: Duration::ZERO,
        request_bytes: Some(0),
        response_bytes: 0,
        retries: 0,
        endpoint: None,
        mtls: false,
        headers: Vec::new(),
    }
}

#[test]
fn no_query_taps_everything_at_the_default_rate() {
    for query in [None, Some("")] {
        let parsed = TapQuery::parse(query).expect("an empty query is valid");
        assert_eq!(parsed.filter, TapFilter::default());
        assert_eq!(parsed.max_rps.get(), DEFAULT_MAX_RPS);
        assert!(parsed.headers.is_empty());
    }
}

#[test]
fn every_parameter_is_read() {
    let parsed = parse(
        "direction=outbound&to=api&path_prefix=%2Fv1%2Fusers&method=post&max_rps=7&headers=X-Foo,%20user-agent,x-foo",
    )
    .expect("valid query");
    assert_eq!(
        parsed.filter,
        TapFilter {
            direction: Some(Direction::Outbound),
            to: Some("api".into()),
            path_prefix: Some("/v1/users".into()),
            method: Some(Method::POST),
        }
    );
    assert_eq!(parsed.max_rps.get(), 7);
    assert_eq!(
        parsed.headers,
        [
            HeaderName::from_static("x-foo"),
            HeaderName::from_static("user-agent")
        ]
    );
    // An extension method keeps its case.
    assert_eq!(
        parse("method=PROPFIND").unwrap().filter.method,
        Some(Method::from_bytes(b"PROPFIND").unwrap())
    );
}

#[test]
fn bad_queries_are_refused_naming_the_parameter() {
    let cases = [
        ("dir=inbound", "unknown tap parameter \"dir\""),
        ("to=a&to=b", "tap parameter \"to\" is given twice"),
        (
            "direction=sideways",
            "\"direction\": \"sideways\" is neither",
        ),
        ("to=", "\"to\": is empty"),
        (
            "path_prefix=v1",
            "\"path_prefix\": \"v1\" does not start with /",
        ),
        ("method=G%20T", "\"method\": \"G T\" is not an HTTP method"),
        ("max_rps=0", "\"max_rps\": \"0\" is not a whole number"),
        ("max_rps=-3", "\"max_rps\": \"-3\""),
        ("max_rps=10001", "\"max_rps\": \"10001\""),
        ("max_rps=fast", "\"max_rps\": \"fast\""),
        ("headers=x%20y", "\"headers\": \"x y\" is not a header name"),
        ("headers=", "\"headers\": \"\" is not a header name"),
        ("direction=inbound&to=api", "\"to\": names the callee"),
    ];
    for (query, expected) in cases {
        let error = parse(query).expect_err(query).to_string();
        assert!(error.contains(expected), "{query}: {error}");
    }
    let many: Vec<String> = (0..=MAX_HEADERS).map(|n| format!("x-{n}")).collect();
    let error = parse(&format!("headers={}", many.join(","))).expect_err("too many headers");
    assert!(error.to_string().contains("at most 16"), "{error}");
}

#[test]
fn the_filter_needs_every_condition_it_names() {
    let filter = parse("direction=outbound&path_prefix=/v1&method=GET")
        .unwrap()
        .filter;
    assert!(filter.matches(&event(Direction::Outbound, "api", Method::GET, "/v1/x")));
    assert!(!filter.matches(&event(Direction::Inbound, "api", Method::GET, "/v1/x")));
    assert!(!filter.matches(&event(Direction::Outbound, "api", Method::POST, "/v1/x")));
    assert!(!filter.matches(&event(Direction::Outbound, "api", Method::GET, "/v2/x")));
    assert!(TapFilter::default().matches(&event(Direction::Inbound, "x", Method::PUT, "/")));
}

#[test]
fn to_matches_outbound_requests_to_that_service_only() {
    let filter = parse("to=api").unwrap().filter;
    assert!(filter.matches(&event(Direction::Outbound, "api", Method::GET, "/")));
    assert!(!filter.matches(&event(Direction::Outbound, "db", Method::GET, "/")));
    // Inbound events are counted under the proxy's own service, never a callee.
    assert!(!filter.matches(&event(Direction::Inbound, "api", Method::GET, "/")));
}
