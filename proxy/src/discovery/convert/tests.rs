use super::*;

fn update(endpoints: Vec<(&str, &str)>) -> ServiceUpdate {
    ServiceUpdate {
        authority: "api".into(),
        version: 3,
        state: Some(service_update::State::Service(v1::Service {
            name: "api".into(),
            endpoints: endpoints
                .into_iter()
                .map(|(address, identity)| v1::Endpoint {
                    address: address.into(),
                    identity: identity.into(),
                    plaintext: false,
                })
                .collect(),
            ..v1::Service::default()
        })),
    }
}

#[test]
fn converts_valid_updates_and_refuses_malformed_ones_with_a_reason() {
    let ok = update(vec![(
        "127.0.0.1:1",
        "spiffe://seam.local/ns/default/sa/api",
    )]);
    match update_from_proto(ok).unwrap() {
        Resolution::Found(backend) => assert_eq!(backend.endpoints[0].address.port(), 1),
        other => panic!("{other:?}"),
    }
    let not_found = ServiceUpdate {
        state: Some(service_update::State::NotFound(v1::NotFound {})),
        ..ServiceUpdate::default()
    };
    assert!(matches!(
        update_from_proto(not_found),
        Ok(Resolution::NotFound)
    ));

    let cases = [
        (
            update(vec![("nowhere", "spiffe://seam.local/ns/default/sa/api")]),
            "\"nowhere\" is not an IP:port",
        ),
        (update(vec![("127.0.0.1:1", "api")]), "invalid identity"),
        (ServiceUpdate::default(), "no state"),
    ];
    for (input, reason) in cases {
        let err = update_from_proto(input).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }
}

#[test]
fn converts_policies_and_routes_and_refuses_bad_ones_with_a_reason() {
    use std::time::Duration;

    let policy = |attempts, percent| v1::Policy {
        timeout_ms: 2_000,
        retries: Some(v1::RetryPolicy {
            attempts,
            per_try_timeout_ms: 500,
            on: vec![v1::RetryOn::RetryOn5xx as i32],
            budget_percent: percent,
            non_idempotent: false,
        }),
        circuit_breaker: Some(v1::CircuitBreaker {
            consecutive_failures: 3,
            base_ejection_time_ms: 10_000,
            max_ejection_percent: 50,
        }),
        max_concurrent_requests: 8,
        load_balancer: v1::LoadBalancer::RoundRobin as i32,
        ..v1::Policy::default()
    };
    let with = |policy: Option<v1::Policy>, routes: Vec<v1::Route>| {
        let mut update = update(vec![(
            "127.0.0.1:1",
            "spiffe://seam.local/ns/default/sa/api",
        )]);
        if let Some(service_update::State::Service(service)) = &mut update.state {
            service.policy = policy;
            service.routes = routes;
        }
        update
    };
    let canary = |path_prefix: &str, path: &str, weight| v1::Route {
        r#match: Some(v1::RouteMatch {
            path_prefix: path_prefix.into(),
            path: path.into(),
            method: "GET".into(),
            headers: [("x-canary".to_string(), "1".to_string())].into(),
        }),
        policy: Some(policy(1, 20)),
        backends: vec![v1::WeightedBackend {
            service: "api-v2".into(),
            weight,
            endpoints: Vec::new(),
        }],
        authorization: Some(v1::Authorization {
            restricted: true,
            allowed_identities: vec!["spiffe://seam.local/ns/default/sa/ops".into()],
            allow_plaintext: false,
        }),
    };
    let Resolution::Found(backend) =
        update_from_proto(with(Some(policy(2, 20)), vec![canary("/v2", "", 1)])).unwrap()
    else {
        panic!("found")
    };
    let request = http::Request::get("/v2/x")
        .header("x-canary", "1")
        .body(())
        .unwrap();
    let route = backend.route_for(&request);
    assert_eq!(route.policy.retries.attempts, 1);
    assert_eq!(route.backends[0].target.service.as_ref(), "api-v2");
    let allow = route.allow.as_deref().expect("the route's allow list");
    assert_eq!(allow[0].as_str(), "spiffe://seam.local/ns/default/sa/ops");
    let other = backend.route_for(&http::Request::get("/v2/x").body(()).unwrap());
    let policy_in_force = &other.policy;
    assert_eq!(policy_in_force.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        policy_in_force.retries.per_try_timeout,
        Some(Duration::from_millis(500))
    );
    assert!(policy_in_force.retries.on.server_error && !policy_in_force.retries.on.reset);
    assert_eq!(
        policy_in_force.load_balancer,
        crate::state::policy::LoadBalancer::RoundRobin
    );
    assert_eq!(
        other.backends[0].target.service.as_ref(),
        "api",
        "its own endpoints"
    );
    assert_eq!(
        other.allow, None,
        "the service's own route has no list of its own"
    );

    let Resolution::Found(defaults) = update_from_proto(with(None, Vec::new())).unwrap() else {
        panic!("found")
    };
    let any = http::Request::get("/").body(()).unwrap();
    assert_eq!(
        defaults.route_for(&any).policy,
        crate::state::policy::Policy::default(),
        "no policy: every default"
    );

    let cases = [
        (
            with(Some(policy(11, 20)), Vec::new()),
            "retries.attempts 11",
        ),
        (with(Some(policy(2, 101)), Vec::new()), "budget_percent 101"),
        (
            with(Some(policy(2, 20)), vec![canary("/a", "/b", 1)]),
            "both path_prefix and path",
        ),
        (
            with(Some(policy(2, 20)), vec![canary("v2", "", 1)]),
            "does not start with '/'",
        ),
        (
            with(Some(policy(2, 20)), vec![canary("/v2", "", 0)]),
            "weights are all 0",
        ),
    ];
    for (input, reason) in cases {
        let err = update_from_proto(input).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }
}

#[test]
fn reads_the_opaque_ports_and_refuses_what_is_not_a_port() {
    let with_ports = |ports: Vec<u32>| {
        let mut update = update(Vec::new());
        if let Some(service_update::State::Service(service)) = &mut update.state {
            service.opaque_ports = ports;
        }
        update
    };
    match update_from_proto(with_ports(vec![3306, 25])).unwrap() {
        Resolution::Found(service) => {
            assert_eq!(service.opaque_ports, [3306, 25]);
            assert!(service.is_opaque_port(25) && !service.is_opaque_port(80));
        }
        other => panic!("{other:?}"),
    }
    for port in [0, 70_000] {
        let err = update_from_proto(with_ports(vec![port])).unwrap_err();
        assert_eq!(err, InvalidUpdate::OpaquePort(port));
    }
}

#[test]
fn reads_rate_limits_and_refuses_empty_rules() {
    use crate::discovery::policy::policy_from_proto;

    let rule = |millirequests_per_second, burst| v1::RateLimitRule {
        millirequests_per_second,
        burst,
    };
    let with = |limit: v1::RateLimit| {
        policy_from_proto(Some(v1::Policy {
            max_concurrent_requests: 8,
            rate_limit: Some(limit),
            ..v1::Policy::default()
        }))
    };
    let policy = with(v1::RateLimit {
        total: Some(rule(33_333, 7)),
        per_caller: None,
        overrides: vec![v1::RateLimitOverride {
            callers: vec!["spiffe://seam.local/ns/default/sa/web".into()],
            limit: Some(rule(500, 2)),
        }],
        instances: 3,
    })
    .expect("a valid limit");
    let limit = policy.rate_limit.expect("kept");
    assert_eq!(limit.total.unwrap().millirequests_per_second, 33_333);
    assert_eq!(limit.total.unwrap().burst.get(), 7);
    assert_eq!(
        limit.overrides[0].callers[0].as_str(),
        "spiffe://seam.local/ns/default/sa/web"
    );
    assert_eq!(limit.instances, 3);
    for bad in [
        v1::RateLimit {
            total: Some(rule(0, 1)),
            ..v1::RateLimit::default()
        },
        v1::RateLimit {
            per_caller: Some(rule(1000, 0)),
            ..v1::RateLimit::default()
        },
        v1::RateLimit {
            overrides: vec![v1::RateLimitOverride {
                callers: vec!["web".into()],
                limit: Some(rule(1000, 1)),
            }],
            ..v1::RateLimit::default()
        },
    ] {
        let err = with(bad.clone()).expect_err("refused");
        assert!(err.to_string().contains("rate_limit"), "{bad:?}: {err}");
    }
}

#[test]
fn a_plaintext_endpoint_has_no_identity_and_only_it() {
    let endpoint = |identity: &str, plaintext| v1::Endpoint {
        address: "10.0.0.7:8080".into(),
        identity: identity.into(),
        plaintext,
    };
    let with = |endpoints| {
        let mut update = update(vec![]);
        if let Some(service_update::State::Service(service)) = &mut update.state {
            service.endpoints = endpoints;
        }
        update_from_proto(update)
    };
    match with(vec![endpoint("", true)]).unwrap() {
        Resolution::Found(service) => {
            assert_eq!(service.endpoints[0].identity, None);
            assert!(service.endpoints[0].is_plaintext());
        }
        other => panic!("{other:?}"),
    }
    let api = "spiffe://seam.local/ns/default/sa/api";
    let cases = [
        (
            endpoint(api, true),
            "10.0.0.7:8080",
            "must have no identity",
        ),
        (endpoint("", false), "10.0.0.7:8080", "not marked plaintext"),
    ];
    for (bad, address, reason) in cases {
        let err = with(vec![bad]).unwrap_err().to_string();
        assert!(err.contains(address) && err.contains(reason), "{err}");
    }
}
