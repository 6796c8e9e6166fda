use std::path::Path;
use std::time::Duration;

use crate::mesh_file::parse;
use crate::model::{AbortAnswer, MeshModel, Percent};

fn parse_text(text: &str) -> Result<MeshModel, crate::mesh_file::MeshFileError> {
    parse(Path::new("/etc/seam/mesh.yaml"), text, "seam.local")
}

/// A file with `api` (whose body is `body`, indented four spaces) and `shadow`.
fn with_api(body: &str) -> String {
    format!("services:\n  api:\n    join_token: t\n{body}  shadow:\n    join_token: s\n")
}

#[test]
fn reads_faults_and_mirrors_and_routes_inherit_or_replace_them() {
    let model = parse_text(&with_api(
        "    fault:
      delay: { fixed: 200ms, percent: 10 }
      abort: { status: 503, percent: 0.5 }
    mirror: { service: shadow, percent: 100 }
    routes:
      - match: { path: /inherits }
      - match: { path: /own }
        fault:
          abort: { grpc_status: 14, percent: 5 }
        mirror: { service: shadow, percent: 1 }
",
    ))
    .unwrap();
    let api = &model.services()["api"];
    let fault = api.policy.fault.as_ref().expect("a service fault");
    let delay = fault.delay.as_ref().expect("a delay");
    assert_eq!(delay.fixed, Duration::from_millis(200));
    assert_eq!(delay.percent, Percent::new(10.0).unwrap());
    let abort = fault.abort.as_ref().expect("an abort");
    assert_eq!(abort.answer, AbortAnswer::Http(503));
    assert_eq!(abort.percent.value(), 0.5);
    let mirror = api.policy.mirror.as_ref().expect("a mirror");
    assert_eq!(
        (mirror.service.as_str(), mirror.percent.value()),
        ("shadow", 100.0)
    );

    let inherits = &api.routes[0].policy;
    assert_eq!(inherits.fault, api.policy.fault);
    assert_eq!(inherits.mirror, api.policy.mirror);
    let own = &api.routes[1].policy;
    let own_fault = own.fault.as_ref().unwrap();
    assert!(
        own_fault.delay.is_none(),
        "a route's fault replaces the service's whole"
    );
    assert_eq!(
        own_fault.abort.as_ref().unwrap().answer,
        AbortAnswer::Grpc(14)
    );
    assert_eq!(own.mirror.as_ref().unwrap().percent.value(), 1.0);
    assert_eq!(model.services()["shadow"].policy.fault, None);
}

#[test]
fn bad_faults_and_mirrors_are_refused_with_line_and_reason() {
    let cases: &[(&str, u64, &str)] = &[
        (
            "    fault:\n      delay: { fixed: 20ms, percent: 101 }\n",
            5,
            "fault.delay.percent is 101; it must be a number from 0 to 100",
        ),
        (
            "    fault:\n      abort: { status: 503, percent: -1 }\n",
            5,
            "fault.abort.percent is -1",
        ),
        (
            "    fault:\n      delay: { fixed: -20ms, percent: 5 }\n",
            5,
            "fault.delay.fixed \"-20ms\" is not a duration",
        ),
        (
            "    fault:\n      delay: { fixed: 0s, percent: 5 }\n",
            5,
            "fault.delay.fixed must be more than 0",
        ),
        (
            "    fault:\n      delay: { percent: 5 }\n",
            5,
            "has no fixed",
        ),
        (
            "    fault:\n      abort: { status: 199, percent: 5 }\n",
            5,
            "fault.abort.status is 199; it must be an HTTP status from 200 to 599",
        ),
        (
            "    fault:\n      abort: { status: 600, percent: 5 }\n",
            5,
            "from 200 to 599",
        ),
        (
            "    fault:\n      abort: { grpc_status: 0, percent: 5 }\n",
            5,
            "fault.abort.grpc_status is 0; it must be a gRPC status from 1 to 16",
        ),
        (
            "    fault:\n      abort: { grpc_status: 17, percent: 5 }\n",
            5,
            "from 1 to 16",
        ),
        (
            "    fault:\n      abort: { status: 503, grpc_status: 14, percent: 5 }\n",
            5,
            "exactly one of status and grpc_status",
        ),
        (
            "    fault:\n      abort: { percent: 5 }\n",
            5,
            "exactly one of status and grpc_status",
        ),
        (
            "    fault:\n      abort: { status: 503 }\n",
            5,
            "has no percent",
        ),
        ("    fault: {}\n", 4, "fault needs delay, abort or both"),
        (
            "    fault:\n      delay: { fixed: 1s, percent: 5, jitter: 1s }\n",
            5,
            "has no key \"jitter\"",
        ),
        ("    fault:\n      dealy: {}\n", 5, "did you mean delay?"),
        (
            "    fault:\n      abort: { status: 503, percent: lots }\n",
            5,
            "expected a number from 0 to 100",
        ),
        (
            "    mirror: { service: nowhere, percent: 5 }\n",
            4,
            "\"api\" mirrors to \"nowhere\", which is not a service in this file",
        ),
        (
            "    mirror: { service: api, percent: 5 }\n",
            4,
            "\"api\" mirrors to itself",
        ),
        (
            "    mirror: { service: shadow, percent: 100.5 }\n",
            4,
            "mirror.percent is 100.5",
        ),
        ("    mirror: { service: shadow }\n", 4, "has no percent"),
        (
            "    mirror: { service: shadow, percent: 5, timeout: 1s }\n",
            4,
            "has no key \"timeout\"",
        ),
        (
            "    routes:\n      - match: { path: /x }\n        mirror: { service: nope, percent: 5 }\n",
            6,
            "which is not a service",
        ),
        (
            "    routes:\n      - fault:\n          delay: { fixed: 1s, percent: 200 }\n",
            6,
            "fault.delay.percent is 200",
        ),
    ];
    for (body, line, reason) in cases {
        let text = with_api(body);
        let err = parse_text(&text).unwrap_err();
        assert_eq!(err.line, *line, "{body:?}: {err}");
        assert!(err.reason.contains(reason), "{body:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/seam/mesh.yaml:{line}:")),
            "{err}"
        );
    }
}
