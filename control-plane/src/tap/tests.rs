use super::*;

fn proxy(service: &str, admin_addr: &str) -> TapProxy {
    TapProxy {
        service: service.to_owned(),
        admin_addr: Some(admin_addr.to_owned()),
    }
}

#[test]
fn each_proxy_gets_an_equal_share_of_the_rate_and_the_filters() {
    let query = TapQuery {
        to: Some("api".into()),
        path_prefix: Some("/v1/a b".into()),
        method: Some("POST".into()),
        max_rps: 10,
        headers: vec!["x-foo".into(), "user-agent".into()],
        ..TapQuery::service("web")
    };
    assert_eq!(
        query.path_for_one_of(3),
        "/tap?to=api&path_prefix=%2Fv1%2Fa+b&method=POST&max_rps=3&headers=x-foo%2Cuser-agent"
    );
    // Never less than one event per second per proxy.
    assert_eq!(
        TapQuery {
            max_rps: 2,
            ..TapQuery::service("web")
        }
        .path_for_one_of(5),
        "/tap?max_rps=1"
    );
    assert_eq!(
        TapQuery::service("web").path_for_one_of(1),
        "/tap?max_rps=100"
    );
}

#[test]
fn reads_the_proxy_event_contract() {
    let line = r#"{"time":"2026-12-03T08:00:00.123Z","direction":"outbound",
        "proxy":"spiffe://seam.local/ns/default/sa/web","service":"api","route":"default",
        "caller":"spiffe://seam.local/ns/default/sa/web","callee":"spiffe://seam.local/ns/default/sa/api",
        "method":"GET","authority":"api:8080","path":"/x","status":200,"grpc_status":null,
        "latency_ms":1.23,"request_bytes":0,"response_bytes":12,"retries":0,
        "endpoint":"127.0.0.1:4143","mtls":true,"headers":{"x-foo":"bar"}}"#;
    let event: TapEvent = serde_json::from_str(line).expect("the contract parses");
    assert_eq!(
        event.callee.as_deref(),
        Some("spiffe://seam.local/ns/default/sa/api")
    );
    assert_eq!(
        (event.status, event.response_bytes, event.mtls),
        (200, 12, true)
    );
    assert_eq!(event.headers.as_ref().unwrap()["x-foo"], "bar");
    // Written back, it is the same object.
    let again: serde_json::Value = serde_json::to_value(&event).unwrap();
    let original: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(again, original);
}

#[tokio::test]
async fn a_service_with_no_connected_proxy_is_an_error_naming_those_there_are() {
    let error = open(
        [proxy("web", "127.0.0.1:1"), proxy("db", "127.0.0.1:2")],
        &TapQuery::service("api"),
    )
    .expect_err("api has no proxy");
    assert_eq!(
        error.to_string(),
        "no connected proxy of service \"api\" (connected: db, web)"
    );
}

#[tokio::test]
async fn an_unreachable_proxy_is_reported_and_the_stream_ends() {
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap().to_string();
    drop(free);
    let mut merged = open(
        [
            proxy("web", &address),
            TapProxy {
                service: "web".into(),
                admin_addr: None,
            },
        ],
        &TapQuery::service("web"),
    )
    .expect("web has proxies");
    let mut failed = Vec::new();
    while let Some(message) = merged.recv().await {
        match message {
            TapMessage::ProxyFailed { admin_addr, reason } => failed.push((admin_addr, reason)),
            TapMessage::Event(event) => panic!("no proxy runs, yet {event:?}"),
        }
    }
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "-");
    assert!(failed[0].1.contains("did not say where"), "{failed:?}");
    assert_eq!(failed[1].0, address);
    assert!(failed[1].1.contains("cannot connect"), "{failed:?}");
}
