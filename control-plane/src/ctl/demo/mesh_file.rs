//! The demo's mesh file (v1): written by the demo, read back through the control plane's
//! `/mesh` to know when a change has been loaded.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The mesh file (v1) for the demo's services.
pub fn render(services: &[&str], tokens: &[String], endpoints: &[SocketAddr]) -> String {
    let mut text = String::from("# Written by `seamctl demo`.\nservices:\n");
    for (index, (service, token)) in services.iter().zip(tokens).enumerate() {
        let endpoint = endpoints
            .get(index)
            .map_or_else(String::new, |addr| format!("\"{addr}\""));
        let _ = write!(
            text,
            "  {service}:\n    join_token: \"{token}\"\n    endpoints: [{endpoint}]\n"
        );
    }
    text
}

/// Whether the control plane's `/mesh` answer lists each service's endpoint.
pub fn lists_endpoints(body: &str, services: &[&str], endpoints: &[SocketAddr]) -> bool {
    let Ok(mesh) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    services.iter().zip(endpoints).all(|(service, endpoint)| {
        let endpoint = endpoint.to_string();
        mesh["services"][service]["endpoints"]
            .as_array()
            .is_some_and(|listed| listed.iter().any(|e| e.as_str() == Some(&endpoint)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: [&str; 4] = ["loadgen", "front", "middle", "back"];

    fn loopback(ports: std::ops::RangeInclusive<u16>) -> Vec<SocketAddr> {
        ports
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect()
    }

    #[test]
    fn mesh_file_lists_every_service_with_its_token() {
        let tokens: Vec<String> = ["t1", "t2", "t3", "t4"].map(String::from).to_vec();
        assert_eq!(
            render(&SERVICES, &tokens, &[]),
            "# Written by `seamctl demo`.\nservices:\n\
             \x20 loadgen:\n    join_token: \"t1\"\n    endpoints: []\n\
             \x20 front:\n    join_token: \"t2\"\n    endpoints: []\n\
             \x20 middle:\n    join_token: \"t3\"\n    endpoints: []\n\
             \x20 back:\n    join_token: \"t4\"\n    endpoints: []\n"
        );
        assert!(
            render(&SERVICES, &tokens, &loopback(1..=4))
                .ends_with("  back:\n    join_token: \"t4\"\n    endpoints: [\"127.0.0.1:4\"]\n")
        );
    }

    #[test]
    fn mesh_answer_must_list_every_endpoint() {
        let endpoints = loopback(1..=4);
        let full = r#"{"version":2,"services":{"loadgen":{"endpoints":["127.0.0.1:1"]},
            "front":{"endpoints":["127.0.0.1:2"]},"middle":{"endpoints":["127.0.0.1:3"]},
            "back":{"endpoints":["127.0.0.1:4"]}},"last_error":null}"#;
        assert!(lists_endpoints(full, &SERVICES, &endpoints));
        assert!(!lists_endpoints(
            &full.replace("127.0.0.1:4", ""),
            &SERVICES,
            &endpoints
        ));
        assert!(!lists_endpoints("not json", &SERVICES, &endpoints));
    }
}
