//! The mesh file inject writes: one service per meshed compose service, reached at its
//! sidecar's inbound listener by DNS name (`dns:<app>-seam:4143`, the sidecar's own
//! service name, which compose always resolves and no other container may take), serving
//! the ports its compose service declares.

use std::fmt::Write as _;

use seam_proto::defaults;

use super::plan::MeshedService;
use super::sidecar::{INBOUND_PORT, name_of};

/// Well-known ports of protocols that are not HTTP, beyond the default `opaque_ports`:
/// declaring them spares each connection the wait for its first bytes.
const NOT_HTTP_PORTS: [u16; 9] = [
    2181,  // ZooKeeper
    4222,  // NATS
    5432,  // PostgreSQL
    5672,  // AMQP
    6379,  // Redis
    9042,  // Cassandra
    9092,  // Kafka
    11211, // memcached
    27017, // MongoDB
];

/// The mesh file for `services`, whose join tokens are `tokens` (in the same order).
pub fn render(services: &[MeshedService], tokens: &[String]) -> String {
    let mut text = String::from(
        "# Written by `seamctl inject`; a second run writes it again, keeping the join\n\
         # tokens (seam/secrets/).\nservices:\n",
    );
    for (service, token) in services.iter().zip(tokens) {
        let _ = writeln!(text, "  {}:", service.name);
        let _ = writeln!(text, "    join_token: \"{token}\"");
        let _ = writeln!(
            text,
            "    endpoints: [\"dns:{}:{INBOUND_PORT}\"]",
            name_of(&service.name)
        );
        if !service.ports.is_empty() {
            let _ = writeln!(text, "    ports: [{}]", list(&service.ports));
        }
        let opaque: Vec<u16> = service
            .ports
            .iter()
            .copied()
            .filter(|port| defaults::OPAQUE_PORTS.contains(port) || NOT_HTTP_PORTS.contains(port))
            .collect();
        if opaque.iter().any(|port| NOT_HTTP_PORTS.contains(port)) {
            let _ = writeln!(text, "    opaque_ports: [{}]", list(&opaque));
        }
        if service.published {
            let _ = writeln!(
                text,
                "    allow_plaintext: true  # it publishes ports: their clients are outside the mesh"
            );
        }
    }
    text
}

fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mesh_file;

    fn service(name: &str, ports: &[u16], published: bool) -> MeshedService {
        MeshedService {
            name: name.to_owned(),
            ports: ports.to_vec(),
            published,
        }
    }

    #[test]
    fn one_entry_per_service_that_the_control_plane_accepts() {
        let services = [
            service("web", &[80], true),
            service("worker", &[], false),
            service("db", &[6379, 22], false),
        ];
        let tokens = ["t-web", "t-worker", "t-db"].map(String::from);
        let text = render(&services, &tokens);
        assert!(text.contains(
            "  web:\n    join_token: \"t-web\"\n    endpoints: [\"dns:web-seam:4143\"]\n    \
             ports: [80]\n    allow_plaintext: true"
        ));
        assert!(text.contains(
            "  worker:\n    join_token: \"t-worker\"\n    endpoints: [\"dns:worker-seam:4143\"]\n  db:"
        ));
        assert!(text.contains("    ports: [6379, 22]\n    opaque_ports: [6379, 22]\n"));
        mesh_file::parse(Path::new("mesh.yaml"), &text, "seam.local")
            .expect("the control plane accepts the mesh file");
    }

    #[test]
    fn default_opaque_ports_need_no_list() {
        let text = render(&[service("mysql", &[3306], false)], &["t".to_owned()]);
        assert!(!text.contains("opaque_ports"), "{text}");
    }
}
