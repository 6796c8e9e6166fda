use super::*;

fn parse_text(text: &str) -> Result<MeshModel, MeshFileError> {
    parse(Path::new("/etc/seam/mesh.yaml"), text, "seam.local")
}

#[test]
fn parses_the_documented_example() {
    let model = parse_text(
        "trust_domain: seam.local\nservices:\n  api:\n    join_token: \"s3cret-api\"\n    endpoints: [\"127.0.0.1:24143\"]\n  web:\n    join_token: w\n",
    )
    .unwrap();
    let api = &model.services()["api"];
    assert_eq!(api.endpoints.len(), 1);
    assert_eq!(api.endpoints[0].address, "127.0.0.1:24143".parse().unwrap());
    assert_eq!(
        api.endpoints[0].identity.as_ref().unwrap().as_str(),
        "spiffe://seam.local/ns/default/sa/api"
    );
    assert!(api.join_token.matches("s3cret-api"));
    assert!(model.services()["web"].endpoints.is_empty());
}

#[test]
fn refusals_name_file_line_and_reason() {
    let cases: &[(&str, u64, &str)] = &[
        (
            "services:\n  api:\n    join_token: t\n    endpoints: [nope]\n",
            4,
            "endpoint \"nope\" of service \"api\" is not an IP:port",
        ),
        (
            "services:\n  api:\n    join_token: \"\"\n",
            3,
            "empty join_token",
        ),
        (
            "services:\n  API:\n    join_token: t\n",
            3,
            "service name \"API\" may hold only lowercase",
        ),
        (
            "trust_domain: other.local\nservices: {}\n",
            1,
            "differs from the control plane's trust domain",
        ),
        (
            "services:\n  api:\n    join_token: t\n    endpoint: []\n",
            4,
            "endpoint",
        ),
        (
            "services:\n  api:\n    join_token: t\n    endpoints: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
            4,
            "listed twice",
        ),
        ("services:\n  api: [unclosed\n", 2, ""),
        ("services:\n  api:\n    endpoints: []\n", 3, "join_token"),
    ];
    for (text, line, reason) in cases {
        let err = parse_text(text).unwrap_err();
        assert_eq!(err.line, *line, "{text:?}: {err}");
        assert!(err.reason.contains(reason), "{text:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/seam/mesh.yaml:{line}:")),
            "{err}"
        );
    }
}

#[test]
fn an_empty_file_is_refused() {
    let err = parse_text("  \n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/seam/mesh.yaml: the mesh file is empty"
    );
}

#[test]
fn an_unreadable_file_is_refused_with_its_path() {
    let err = load(Path::new("/nonexistent/mesh.yaml"), "seam.local").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/mesh.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn syntax_errors_name_the_position_once() {
    let err = parse_text("services:\n  api: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(!err.contains(" at line "), "{err}");
    assert_eq!(
        wording::without_position("bad thing at line 5, column 3"),
        "bad thing"
    );
    assert_eq!(
        wording::without_position("at line 5 is fine"),
        "at line 5 is fine"
    );
}

const ISSUE_EXAMPLE: &str = "services:
  api:
    join_token: t
    timeout: 2s
    retries:
      attempts: 3
      per_try_timeout: 500ms
      on: [5xx, connect-failure]
      budget_percent: 25
      non_idempotent: true
    circuit_breaker:
      consecutive_failures: 4
      base_ejection_time: 10s
      max_ejection_percent: 30
    max_concurrent_requests: 64
    load_balancer: round_robin
    routes:
      - match: { path_prefix: /v2, method: GET, headers: { X-Canary: \"1\" } }
        timeout: 5s
        backends:
          - { service: api-v2, weight: 10 }
          - { service: api, weight: 90 }
      - match: { path: /exact }
  api-v2:
    join_token: t2
";

#[test]
fn reads_request_handling_keys_and_routes_with_overrides() {
    use crate::model::{LoadBalancer, PathMatch, RetryOn};
    use std::time::Duration;

    let model = parse_text(ISSUE_EXAMPLE).unwrap();
    let api = &model.services()["api"];
    let policy = &api.policy;
    assert_eq!(policy.timeout, Some(Duration::from_secs(2)));
    assert_eq!(policy.retries.attempts, 3);
    assert_eq!(
        policy.retries.per_try_timeout,
        Some(Duration::from_millis(500))
    );
    assert_eq!(
        policy.retries.on,
        [RetryOn::ServerError, RetryOn::ConnectFailure]
    );
    assert_eq!(policy.retries.budget_percent, 25);
    assert!(policy.retries.non_idempotent);
    assert_eq!(policy.circuit_breaker.consecutive_failures, 4);
    assert_eq!(
        policy.circuit_breaker.base_ejection_time,
        Duration::from_secs(10)
    );
    assert_eq!(policy.circuit_breaker.max_ejection_percent, 30);
    assert_eq!(policy.max_concurrent_requests, 64);
    assert_eq!(policy.load_balancer, LoadBalancer::RoundRobin);

    let canary = &api.routes[0];
    assert_eq!(
        canary.route_match.path,
        Some(PathMatch::Prefix("/v2".into()))
    );
    assert_eq!(canary.route_match.method.as_deref(), Some("GET"));
    assert_eq!(canary.route_match.headers["x-canary"], "1");
    assert_eq!(canary.policy.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        canary.policy.retries, policy.retries,
        "a route keeps the keys it does not override"
    );
    let weights: Vec<(&str, u32)> = canary
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("api-v2", 10), ("api", 90)]);
    assert_eq!(
        api.routes[1].route_match.path,
        Some(PathMatch::Exact("/exact".into()))
    );
    assert!(api.routes[1].backends.is_empty());

    let defaults = &model.services()["api-v2"].policy;
    assert_eq!(*defaults, crate::model::Policy::default());
    assert_eq!(
        defaults.timeout,
        Some(seam_proto::defaults::TIMEOUT),
        "unset keys take the documented defaults"
    );
}

#[test]
fn bad_request_handling_keys_are_refused_with_line_and_reason() {
    let service = |body: &str| format!("services:\n  api:\n    join_token: t\n{body}");
    let cases: Vec<(String, u64, &str)> = vec![
        (
            service("    timeout: soon\n"),
            4,
            "timeout \"soon\" is not a duration",
        ),
        (
            service("    timeout: 0s\n"),
            4,
            "timeout must be more than 0",
        ),
        (
            service("    retries:\n      attempts: 11\n"),
            5,
            "at most 10",
        ),
        (
            service("    retries:\n      on: [5xx, sometimes]\n"),
            5,
            "retries.on has \"sometimes\"",
        ),
        (
            service("    retries:\n      budget_percent: 101\n"),
            5,
            "0 to 100",
        ),
        (
            service("    circuit_breaker:\n      consecutive_failures: 0\n"),
            5,
            "at least 1",
        ),
        (
            service("    load_balancer: random\n"),
            4,
            "expected ewma or round_robin",
        ),
        (
            service("    routes:\n      - backends: [{ service: nowhere, weight: 1 }]\n"),
            5,
            "\"nowhere\", which is not a service",
        ),
        (
            service("    routes:\n      - match: { path: v2 }\n"),
            5,
            "must start with '/'",
        ),
        (
            service("    routes:\n      - match: { path: /a, path_prefix: /b }\n"),
            5,
            "not both",
        ),
        (
            service("    routes:\n      - match: { method: \"G T\" }\n"),
            5,
            "not an HTTP method",
        ),
        (
            service("    routes:\n      - backends: [{ service: api, weight: 0 }]\n"),
            5,
            "weights are all 0",
        ),
        (service("    retry: {}\n"), 4, "retry"),
    ];
    for (text, line, reason) in cases {
        let err = parse_text(&text).unwrap_err();
        assert!(err.reason.contains(reason), "{text:?}: {err}");
        assert_eq!(err.line, line, "{text:?}: {err}");
    }
}

#[test]
fn allow_lists_take_service_names_and_spiffe_ids() {
    let model = parse_text(
        "services:\n  api:\n    join_token: t\n    allow: [web, \"spiffe://seam.local/ns/prod/sa/billing\", web]\n    allow_plaintext: true\n  web:\n    join_token: w\n",
    )
    .unwrap();
    let api = &model.services()["api"].authorization;
    let allowed: Vec<&str> = api.allow.iter().flatten().map(|id| id.as_str()).collect();
    assert_eq!(
        allowed,
        [
            "spiffe://seam.local/ns/default/sa/web",
            "spiffe://seam.local/ns/prod/sa/billing"
        ]
    );
    assert!(api.allow_plaintext);
    let web = &model.services()["web"].authorization;
    assert_eq!(web.allow, None, "no allow list means any mesh identity");
    assert!(
        !web.allow_plaintext,
        "plaintext is refused unless asked for"
    );

    let empty = parse_text("services:\n  api:\n    join_token: t\n    allow: []\n").unwrap();
    assert_eq!(empty.services()["api"].authorization.allow, Some(vec![]));
}

#[test]
fn allow_entries_that_can_never_match_are_refused_with_their_line() {
    let cases: &[(&str, u64, &str)] = &[
        (
            "services:\n  api:\n    join_token: t\n    allow: [wbe]\n",
            4,
            "names \"wbe\", which is neither a service of this file nor a spiffe:// id",
        ),
        (
            "services:\n  api:\n    join_token: t\n    allow:\n      - \"spiffe://other.local/ns/x/sa/y\"\n",
            5,
            "outside trust domain \"seam.local\"",
        ),
        (
            "services:\n  api:\n    join_token: t\n    allow: [\"spiffe://seam.local/ns//sa\"]\n",
            4,
            "invalid path",
        ),
    ];
    for (text, line, reason) in cases {
        let err = parse_text(text).unwrap_err();
        assert_eq!(err.line, *line, "{err}");
        assert!(err.reason.contains(reason), "{err}");
    }
}

#[test]
fn a_route_takes_its_own_allow_list_and_refuses_unknown_callers_with_the_line() {
    let model = parse_text(
        "services:\n  api:\n    join_token: t\n    routes:\n      - match: { path_prefix: /admin }\n        allow: [ops]\n  ops:\n    join_token: o\n",
    )
    .unwrap();
    let allow = model.services()["api"].routes[0]
        .allow
        .as_ref()
        .expect("route allow");
    assert_eq!(allow[0].as_str(), "spiffe://seam.local/ns/default/sa/ops");
    assert_eq!(
        model.services()["api"].authorization.allow,
        None,
        "the service's own list is untouched"
    );

    let err = parse_text(
        "services:\n  api:\n    join_token: t\n    routes:\n      - match: { path_prefix: /admin }\n        allow: [nobody]\n",
    )
    .unwrap_err();
    assert_eq!(err.line, 6, "{err}");
    assert!(err.reason.contains("nobody"), "{err}");
}

/// Every shape mistake the YAML library reports, said in Seam's words: the key as a path
/// through the file, the value as written, and what the key takes.
#[test]
fn yaml_shape_errors_name_the_key_the_value_and_what_it_takes() {
    let service = "services:\n  api:\n    join_token: t\n";
    let cases: Vec<(String, u64, &str)> = vec![
        (
            format!("{service}    retries:\n      attempts: \"three\"\n"),
            5,
            "services.api.retries.attempts is \"three\"; expected a whole number from 0 to 10",
        ),
        (
            format!("{service}    retries:\n      attempts: 2.5\n"),
            5,
            "services.api.retries.attempts is 2.5; expected a whole number from 0 to 10",
        ),
        (
            "services:\n  api:\n    join_token: t\n  api:\n    join_token: u\n".into(),
            4,
            "service \"api\" is listed twice (the second time here)",
        ),
        (
            format!("{service}    endpoint: []\n"),
            4,
            "service \"api\" has no key \"endpoint\" (did you mean endpoints?); its keys are \
             join_token, endpoints, ports, addresses, opaque_ports, timeout, retries, \
             circuit_breaker, max_concurrent_requests, load_balancer, fault, mirror, routes, \
             allow, allow_plaintext, rate_limit, request_id",
        ),
        (
            format!("{service}    endpoints: \"127.0.0.1:1\"\n"),
            4,
            "services.api.endpoints is \"127.0.0.1:1\"; expected a list of IP:port addresses or \
             dns:NAME:PORT names, like [\"10.0.0.7:4143\", \"dns:api:4143\"]",
        ),
        (
            "services:\n  api:\n    endpoints: []\n".into(),
            3,
            "service \"api\" has no join_token, which every service needs",
        ),
        (
            "services: [api]\n".into(),
            1,
            "services is [api]; expected a map of service names to their settings",
        ),
        (
            format!("{service}    max_concurrent_requests: -1\n"),
            4,
            "services.api.max_concurrent_requests is -1; expected a whole number, at least 1",
        ),
        (
            format!("{service}    retries: 3\n"),
            4,
            "services.api.retries is 3; expected a map of attempts, per_try_timeout, on, \
             budget_percent and non_idempotent",
        ),
        (
            format!(
                "{service}    routes:\n      - match: {{ path_prefix: /x }}\n        backends: [{{ service: api, weight: \"a\" }}]\n"
            ),
            6,
            "services.api.routes[0].backends[0].weight is \"a\"; expected a whole number, 0 or more",
        ),
        (
            format!(
                "{service}    routes:\n      - match: {{ path_prefix: /x }}\n        backends: [{{ service: api }}]\n"
            ),
            6,
            "services.api.routes[0].backends[0] has no weight, which it needs",
        ),
        (
            format!("{service}    routes:\n      - match: {{ pathprefix: /x }}\n"),
            5,
            "services.api.routes[0].match has no key \"pathprefix\" (did you mean path_prefix?); \
             its keys are path_prefix, path, method, headers",
        ),
        (
            format!("{service}    routes:\n      match: {{ path_prefix: /x }}\n"),
            5,
            "services.api.routes is a map; expected a list of routes, each with match and backends",
        ),
        (
            format!("{service}    retries:\n      on: 5xx\n"),
            5,
            "services.api.retries.on is 5xx; expected a list of 5xx, connect-failure, reset, \
             unavailable and rate-limited",
        ),
        (
            format!("{service}    allow: web\n"),
            4,
            "services.api.allow is web; expected a list of service names or spiffe:// ids, like [web]",
        ),
        (
            format!("{service}    circuit_breaker:\n      consecutive_failures: many\n"),
            5,
            "services.api.circuit_breaker.consecutive_failures is many; expected a whole number, \
             at least 1",
        ),
        (
            format!("{service}    retries:\n      non_idempotent: maybe\n"),
            5,
            "services.api.retries.non_idempotent is maybe; expected true or false",
        ),
        (
            "version: 2\nservices: {}\n".into(),
            1,
            "the mesh file has no key \"version\"; its keys are trust_domain, services",
        ),
        (
            "services:\n  api:\n    join_token: [a]\n".into(),
            3,
            "services.api.join_token is [a]; expected the service's join token, as text",
        ),
        (
            "services:\n  api:\n\tjoin_token: t\n".into(),
            3,
            "a line is indented with a tab; YAML indentation must be spaces",
        ),
        (
            "services:\n  api: [unclosed\n".into(),
            2,
            "service \"api\" is [unclosed; expected a map of the service's settings \
             (join_token, endpoints, ...)",
        ),
        (
            "services:\n  api: {join_token: t\n".into(),
            3,
            "the file is not valid YAML: ",
        ),
    ];
    for (text, line, reason) in &cases {
        let err = parse_text(text).unwrap_err();
        if reason.ends_with(": ") {
            assert!(err.reason.starts_with(reason), "{err}");
            continue;
        }
        assert_eq!(
            (err.line, err.reason.as_str()),
            (*line, *reason),
            "{text:?}"
        );
    }
}
