//! `dns:NAME:PORT` endpoints: how they are read, and every refusal with its place.

use std::path::Path;

use crate::mesh_file::parse;
use crate::model::{DnsName, NamedEndpoint};

/// A file whose service `api` lists `endpoints` (written as is) on line 4.
fn with_endpoints(endpoints: &str) -> String {
    format!("services:\n  api:\n    join_token: t\n    endpoints: {endpoints}\n")
}

#[test]
fn reads_dns_endpoints_beside_literal_ones() {
    let text = with_endpoints(r#"["dns:API:4143", "10.0.0.7:4143", "dns:db.internal.:5432"]"#);
    let model = parse(Path::new("mesh.yaml"), &text, "seam.local").unwrap();
    let api = &model.services()["api"];
    assert_eq!(
        api.named_endpoints,
        vec![
            NamedEndpoint {
                name: DnsName::parse("api").unwrap(),
                port: 4143
            },
            NamedEndpoint {
                name: DnsName::parse("db.internal.").unwrap(),
                port: 5432
            },
        ]
    );
    assert_eq!(api.named_endpoints[0].to_string(), "dns:api:4143");
    // Unresolved, they bring no endpoints yet, but their ports are instance ports.
    assert_eq!(api.endpoints.len(), 1);
    assert_eq!(
        api.instance_ports().into_iter().collect::<Vec<_>>(),
        vec![4143, 5432]
    );
}

#[test]
fn a_virtual_address_may_map_to_the_port_of_an_unresolved_name() {
    let text = format!(
        "{}    addresses: [\"10.96.0.1:4143\"]\n",
        with_endpoints(r#"["dns:api:4143"]"#)
    );
    assert!(parse(Path::new("mesh.yaml"), &text, "seam.local").is_ok());
}

/// Every refusal of a `dns:` endpoint: line, column and reason.
#[test]
fn bad_dns_endpoints_are_refused_at_their_entry() {
    let long = format!("dns:{}:80", "a".repeat(64));
    let cases: Vec<(String, u64, u64, String)> = vec![
        (
            with_endpoints(r#"["dns:api"]"#),
            4,
            17,
            r#"endpoint "dns:api" of service "api" has no port; expected dns:NAME:PORT, like dns:api:4143"#.into(),
        ),
        (
            with_endpoints(r#"["dns:api:http"]"#),
            4,
            17,
            r#"endpoint "dns:api:http" of service "api" has port "http"; expected a port from 1 to 65535"#.into(),
        ),
        (
            with_endpoints(r#"["dns:api:0"]"#),
            4,
            17,
            r#"endpoint "dns:api:0" of service "api" has port "0"; expected a port from 1 to 65535"#.into(),
        ),
        (
            with_endpoints(r#"["dns:api:65536"]"#),
            4,
            17,
            r#"endpoint "dns:api:65536" of service "api" has port "65536"; expected a port from 1 to 65535"#.into(),
        ),
        (
            with_endpoints(r#"["dns::4143"]"#),
            4,
            17,
            r#"endpoint "dns::4143" of service "api" has a bad DNS name "": it is empty"#.into(),
        ),
        (
            with_endpoints(r#"["dns:api..x:4143"]"#),
            4,
            17,
            r#"endpoint "dns:api..x:4143" of service "api" has a bad DNS name "api..x": it has an empty label (two dots in a row, or a leading dot)"#.into(),
        ),
        (
            with_endpoints(&format!("[\"{long}\"]")),
            4,
            17,
            format!(
                "endpoint {long:?} of service \"api\" has a bad DNS name {:?}: it has a label \
                 longer than 63 characters",
                "a".repeat(64)
            ),
        ),
        (
            with_endpoints(r#"["dns:api/v1:80"]"#),
            4,
            17,
            r#"endpoint "dns:api/v1:80" of service "api" has a bad DNS name "api/v1": it may hold only letters, digits, '-', '_' and dots"#.into(),
        ),
        (
            with_endpoints(r#"["dns:-api:80"]"#),
            4,
            17,
            r#"endpoint "dns:-api:80" of service "api" has a bad DNS name "-api": a label may not start or end with '-'"#.into(),
        ),
        (
            with_endpoints(r#"["dns:10.0.0.7:80"]"#),
            4,
            17,
            r#"endpoint "dns:10.0.0.7:80" of service "api" names an IP address; list it without dns:, like "10.0.0.7:80""#.into(),
        ),
        (
            with_endpoints(r#"["dns:api:80", "dns:API:80"]"#),
            4,
            31,
            "endpoint dns:api:80 is listed twice".into(),
        ),
        (
            with_endpoints(r#"["api:80"]"#),
            4,
            17,
            r#"endpoint "api:80" of service "api" is not an IP:port (like 10.0.0.7:80 or [fd00::7]:80), nor dns:NAME:PORT (like dns:api:4143)"#.into(),
        ),
    ];
    for (text, line, column, reason) in &cases {
        let err = parse(Path::new("/etc/seam/mesh.yaml"), text, "seam.local").unwrap_err();
        assert_eq!(
            (err.line, err.column, err.reason.as_str()),
            (*line, *column, reason.as_str()),
            "{text}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/seam/mesh.yaml:{line}:{column}: ")),
            "{err}"
        );
    }
}
