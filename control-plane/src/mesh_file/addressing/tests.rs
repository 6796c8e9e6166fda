use std::path::Path;

use seam_proto::defaults;

use crate::mesh_file::{MeshFileError, parse};
use crate::model::{MeshModel, PortMapping};

fn parse_text(text: &str) -> Result<MeshModel, MeshFileError> {
    parse(Path::new("/etc/seam/mesh.yaml"), text, "seam.local")
}

/// A file with service `db` (one endpoint) and `body` under it, from line 5.
fn with_db(body: &str) -> String {
    format!("services:\n  db:\n    join_token: t\n    endpoints: [\"10.77.0.3:5432\"]\n{body}")
}

const EXAMPLE: &str = r#"services:
  db:
    join_token: "s3cret-db"
    endpoints: ["10.77.0.3:5432"]
    ports:
      - 5432
      - { port: 80, target_port: 8080 }
      - port: 9090
    addresses: ["10.96.0.20:5432", "10.96.0.20:80", "[fd00:96::20]:9090"]
    opaque_ports: [5432, 3306, 5432]
  web:
    join_token: w
    endpoints: ["10.77.0.9:80"]
"#;

#[test]
fn reads_ports_addresses_and_opaque_ports() {
    let model = parse_text(EXAMPLE).unwrap();
    let db = &model.services()["db"];
    let mapping = |port, target_port| PortMapping { port, target_port };
    assert_eq!(
        db.ports,
        [mapping(5432, 5432), mapping(80, 8080), mapping(9090, 9090)]
    );
    let addresses: Vec<String> = db.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(
        addresses,
        ["10.96.0.20:5432", "10.96.0.20:80", "[fd00:96::20]:9090"]
    );
    assert_eq!(db.opaque_ports, [3306, 5432], "ascending, each once");
    assert_eq!(
        db.instance_ports().into_iter().collect::<Vec<_>>(),
        [5432, 8080, 9090]
    );

    let web = &model.services()["web"];
    assert!(web.ports.is_empty() && web.addresses.is_empty());
    assert_eq!(
        web.opaque_ports,
        defaults::OPAQUE_PORTS,
        "absent: the well-known server-first ports"
    );

    let none = parse_text(&with_db("    opaque_ports: []\n")).unwrap();
    assert!(
        none.services()["db"].opaque_ports.is_empty(),
        "[]: detect on every port"
    );
}

/// Every refusal of the addressing keys: line, column and reason.
#[test]
fn bad_addressing_keys_are_refused_at_their_entry() {
    let two = |a: &str, b: &str| {
        format!("services:\n  a:\n    join_token: t\n{a}  b:\n    join_token: t\n{b}")
    };
    let cases: Vec<(String, u64, u64, &str)> = vec![
        (
            with_db("    ports: [0]\n"),
            5,
            13,
            "services.db.ports[0] is 0; expected a port from 1 to 65535",
        ),
        (
            with_db("    ports: [70000]\n"),
            5,
            13,
            "services.db.ports[0] is 70000; expected a port from 1 to 65535, or a map like \
             { port: 80, target_port: 8080 }",
        ),
        (
            with_db("    ports: [\"http\"]\n"),
            5,
            13,
            "services.db.ports[0] is \"http\"; expected a port from 1 to 65535, or a map like \
             { port: 80, target_port: 8080 }",
        ),
        (
            with_db("    ports:\n      - { port: 80, target_port: 0 }\n"),
            6,
            34,
            "services.db.ports[0].target_port is 0; expected a port from 1 to 65535",
        ),
        (
            with_db("    ports:\n      - port: 80\n        target_port: 65536\n"),
            7,
            22,
            "services.db.ports[0].target_port is 65536; expected a port from 1 to 65535",
        ),
        (
            with_db("    ports: [{ port: 0, target_port: 8080 }]\n"),
            5,
            21,
            "services.db.ports[0].port is 0; expected a port from 1 to 65535",
        ),
        (
            with_db("    ports:\n      - 80\n      - { port: 80, target_port: 8080 }\n"),
            7,
            17,
            "port 80 of service \"db\" is listed twice in ports (the second time here)",
        ),
        (
            with_db("    ports: [{ port: 80, targetport: 8080 }]\n"),
            5,
            25,
            "services.db.ports[0] has no key \"targetport\" (did you mean target_port?); its \
             keys are port, target_port",
        ),
        (
            with_db("    ports: 80\n"),
            5,
            12,
            "services.db.ports is 80; expected a list of ports, like [5432, { port: 80, \
             target_port: 8080 }]",
        ),
        (
            with_db("    opaque_ports: [3306, 0]\n"),
            5,
            26,
            "services.db.opaque_ports[1] is 0; expected a port from 1 to 65535",
        ),
        (
            with_db("    opaque_ports: [-25]\n"),
            5,
            20,
            "services.db.opaque_ports[0] is -25; expected a port from 1 to 65535",
        ),
        (
            with_db("    opaque_ports: 3306\n"),
            5,
            19,
            "services.db.opaque_ports is 3306; expected a list of ports, like [3306]",
        ),
        (
            with_db("    addresses: [\"10.96.0.20\"]\n"),
            5,
            17,
            "address \"10.96.0.20\" of service \"db\" is not an IP:port (like 10.0.0.7:80 or \
             [fd00::7]:80)",
        ),
        (
            with_db("    addresses: [\"10.96.0.20:0\"]\n"),
            5,
            17,
            "address \"10.96.0.20:0\" of service \"db\" has port 0; expected a port from 1 to \
             65535",
        ),
        (
            with_db("    addresses: \"10.96.0.20:5432\"\n"),
            5,
            16,
            "services.db.addresses is \"10.96.0.20:5432\"; expected a list of IP:port \
             addresses, like [\"10.96.0.20:80\"]",
        ),
        (
            "services:\n  db:\n    join_token: t\n    endpoints: [\"10.77.0.3:0\"]\n".into(),
            4,
            17,
            "endpoint \"10.77.0.3:0\" of service \"db\" has port 0; expected a port from 1 to \
             65535",
        ),
        (
            with_db("    addresses:\n      - \"10.96.0.20:5432\"\n      - \"10.96.0.20:5432\"\n"),
            7,
            9,
            "virtual address 10.96.0.20:5432 of service \"db\" is listed twice",
        ),
        (
            with_db("    addresses: [\"10.96.0.20:443\"]\n"),
            5,
            17,
            "virtual address 10.96.0.20:443 of service \"db\" goes to no instance port: ports \
             does not map 443, and its instance ports are 5432",
        ),
        (
            with_db("    addresses: [\"10.77.0.3:5432\"]\n"),
            5,
            17,
            "virtual address 10.77.0.3:5432 of service \"db\" is also one of its instance \
             addresses (an endpoint IP with an instance port)",
        ),
        (
            two(
                "    endpoints: [\"10.0.0.1:80\"]\n",
                "    endpoints: [\"10.0.0.2:80\", \"10.0.0.1:80\"]\n",
            ),
            7,
            32,
            "address 10.0.0.1:80 is claimed by two services: \"a\" (an instance address) and \
             \"b\" (an instance address); an address may name one service only",
        ),
        (
            two(
                "    endpoints: [\"10.0.0.1:80\"]\n",
                "    endpoints: [\"10.0.0.1:81\"]\n    ports: [8443, 80]\n",
            ),
            8,
            19,
            "address 10.0.0.1:80 is claimed by two services: \"a\" (an instance address) and \
             \"b\" (an instance address); an address may name one service only",
        ),
        (
            two(
                "    endpoints: [\"10.0.0.1:80\"]\n",
                "    endpoints: [\"10.0.0.2:80\"]\n    addresses: [\"10.0.0.1:80\"]\n",
            ),
            8,
            17,
            "address 10.0.0.1:80 is claimed by two services: \"a\" (an instance address) and \
             \"b\" (a virtual address); an address may name one service only",
        ),
        (
            two(
                "    endpoints: [\"10.0.0.1:80\"]\n    addresses: [\"[fd00::20]:80\"]\n",
                "    endpoints: [\"10.0.0.2:80\"]\n    addresses: [\"[fd00::20]:80\"]\n",
            ),
            9,
            17,
            "address [fd00::20]:80 is claimed by two services: \"a\" (a virtual address) and \
             \"b\" (a virtual address); an address may name one service only",
        ),
    ];
    for (text, line, column, reason) in &cases {
        let err = parse_text(text).unwrap_err();
        assert_eq!(
            (err.line, err.column, err.reason.as_str()),
            (*line, *column, *reason),
            "{text}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/seam/mesh.yaml:{line}:{column}: ")),
            "{err}"
        );
    }
}
