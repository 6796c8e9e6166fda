use std::path::Path;

use crate::mesh_file::parse;
use crate::model::{MeshModel, MilliRate};

fn parse_text(text: &str) -> Result<MeshModel, crate::mesh_file::MeshFileError> {
    parse(Path::new("/etc/seam/mesh.yaml"), text, "seam.local")
}

const SERVICES: &str = "services:\n  web:\n    join_token: w\n  api:\n    join_token: t\n";

#[test]
fn reads_limits_overrides_and_route_limits() {
    let text = format!(
        "{SERVICES}    rate_limit:\n      requests_per_second: 100\n      burst: 20\n      per_caller: 10\n      \
         overrides:\n        - {{ callers: [web, \"spiffe://seam.local/ns/prod/sa/batch\"], requests_per_second: 50, burst: 40 }}\n    \
         routes:\n      - match: {{ path_prefix: /slow }}\n        rate_limit: {{ requests_per_second: 0.5 }}\n      \
         - match: {{ path_prefix: /other }}\n"
    );
    let model = parse_text(&text).unwrap();
    let api = &model.services()["api"];
    let limit = api.policy.rate_limit.as_ref().expect("service limit");
    assert_eq!(limit.total, Some(MilliRate(100_000)));
    assert_eq!(limit.per_caller, Some(MilliRate(10_000)));
    assert_eq!(limit.burst, Some(20));
    assert_eq!(limit.overrides.len(), 1);
    let callers: Vec<&str> = limit.overrides[0]
        .callers
        .iter()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(
        callers,
        [
            "spiffe://seam.local/ns/default/sa/web",
            "spiffe://seam.local/ns/prod/sa/batch"
        ]
    );
    assert_eq!(limit.overrides[0].rate, MilliRate(50_000));
    assert_eq!(limit.overrides[0].burst, Some(40));
    let own = &api.routes[0];
    assert!(own.own_rate_limit);
    let route_limit = own.policy.rate_limit.as_ref().unwrap();
    assert_eq!(route_limit.total, Some(MilliRate(500)));
    assert_eq!(
        route_limit.per_caller, None,
        "a route's limit replaces the service's"
    );
    let inherited = &api.routes[1];
    assert!(!inherited.own_rate_limit);
    assert_eq!(inherited.policy.rate_limit.as_ref(), Some(limit));
    assert_eq!(model.services()["web"].policy.rate_limit, None);
}

#[test]
fn bad_rate_limits_are_refused_with_line_and_reason() {
    let cases: &[(&str, u64, &str)] = &[
        (
            "    rate_limit:\n      requests_per_second: -5\n",
            7,
            "rate_limit.requests_per_second is -5; it must be a rate of at least 0.001",
        ),
        (
            "    rate_limit:\n      requests_per_second: 0\n",
            7,
            "rate_limit.requests_per_second is 0; it must be a rate",
        ),
        (
            "    rate_limit:\n      per_caller: 0\n",
            7,
            "rate_limit.per_caller is 0",
        ),
        (
            "    rate_limit:\n      requests_per_second: 10\n      burst: 0\n",
            8,
            "rate_limit.burst is 0; it must be at least 1",
        ),
        (
            "    rate_limit:\n      requests_per_second: 10\n      burst: -3\n",
            8,
            "rate_limit.burst is -3; it must be at least 1",
        ),
        (
            "    rate_limit:\n      requests_per_second: 10\n      per_caller: 20\n",
            7,
            "per_caller (20) is more than requests_per_second (10)",
        ),
        (
            "    rate_limit:\n      overrides:\n        - { callers: [], requests_per_second: 5 }\n",
            8,
            "a rate_limit override of \"api\" names no callers",
        ),
        (
            "    rate_limit:\n      overrides:\n        - callers: [wbe]\n          requests_per_second: 5\n",
            8,
            "rate_limit.overrides of service \"api\" names \"wbe\", which is neither a service",
        ),
        (
            "    rate_limit:\n      overrides:\n        - callers: [\"spiffe://other.local/ns/x/sa/y\"]\n          requests_per_second: 5\n",
            8,
            "outside trust domain",
        ),
        (
            "    rate_limit:\n      overrides:\n        - callers: [web]\n          requests_per_second: -1\n",
            9,
            "rate_limit.overrides.requests_per_second is -1",
        ),
        (
            "    rate_limit:\n      overrides:\n        - { callers: [web], requests_per_second: 1, burst: 0 }\n",
            8,
            "rate_limit.overrides.burst is 0; it must be at least 1",
        ),
        (
            "    rate_limit:\n      requests_per_second: 10\n      per_second: 5\n",
            8,
            "no key \"per_second\"",
        ),
        ("    rate_limit:\n      burst: 5\n", 7, "sets no limit"),
        (
            "    routes:\n      - match: { path_prefix: /x }\n        rate_limit: { requests_per_second: -1 }\n",
            8,
            "rate_limit.requests_per_second is -1",
        ),
        (
            "    request_id: maybe\n",
            6,
            "services.api.request_id is maybe; expected true or false",
        ),
    ];
    for (tail, line, reason) in cases {
        let text = format!("{SERVICES}{tail}");
        let err = parse_text(&text).unwrap_err();
        assert_eq!(err.line, *line, "{text}\n{err}");
        assert!(err.reason.contains(reason), "{text}\n{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/seam/mesh.yaml:{line}:")),
            "{err}"
        );
    }
}

#[test]
fn request_ids_are_on_unless_the_service_says_false() {
    let model = parse_text(&format!("{SERVICES}    request_id: false\n")).unwrap();
    assert!(model.services()["api"].request_id_off);
    assert!(!model.services()["web"].request_id_off);
}
