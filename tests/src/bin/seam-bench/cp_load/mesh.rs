//! The generated mesh: `services` services sharing `endpoints` endpoints evenly, each
//! endpoint on its own loopback-free private IP. A change is told apart by its
//! *generation*, carried in every endpoint's port of the changed services, so a proxy
//! can tell from an update alone which change it reflects.

use std::fmt::Write;

/// The port of generation 0; generation `g` is at `BASE_PORT + g`.
const BASE_PORT: u32 = 20_000;
/// The highest generation a port can carry.
pub const MAX_GENERATION: u32 = 65_535 - BASE_PORT;

/// The service names, their endpoints per service, and each service's generation now.
pub struct GeneratedMesh {
    pub generations: Vec<u32>,
    endpoints_per_service: Vec<usize>,
}

impl GeneratedMesh {
    pub fn new(services: usize, endpoints: usize) -> Self {
        let endpoints_per_service = (0..services)
            .map(|index| endpoints / services + usize::from(index < endpoints % services))
            .collect();
        Self {
            generations: vec![0; services],
            endpoints_per_service,
        }
    }

    pub fn services(&self) -> usize {
        self.generations.len()
    }

    /// The mesh file as it stands.
    pub fn render(&self) -> String {
        let mut yaml = String::from("# written by seam-bench control-plane\nservices:\n");
        let mut next_ip = 0u32;
        for (index, count) in self.endpoints_per_service.iter().enumerate() {
            let port = BASE_PORT + self.generations[index];
            let _ = write!(
                yaml,
                "  {}:\n    join_token: {}\n    endpoints: [",
                service_name(index),
                join_token(index)
            );
            for n in 0..*count {
                // 10.0.0.1 onwards: unique per endpoint, the same at every generation.
                let ip = (10 << 24) + 1 + next_ip;
                next_ip += 1;
                let separator = if n == 0 { "" } else { ", " };
                let _ = write!(
                    yaml,
                    "{separator}\"{}.{}.{}.{}:{port}\"",
                    ip >> 24,
                    (ip >> 16) & 255,
                    (ip >> 8) & 255,
                    ip & 255
                );
            }
            yaml.push_str("]\n");
        }
        yaml
    }
}

pub fn service_name(index: usize) -> String {
    format!("svc-{index:05}")
}

pub fn join_token(index: usize) -> String {
    format!("bench-token-{index}")
}

/// The generation an endpoint address (`IP:PORT`) carries.
pub fn generation_of(address: &str) -> Option<u32> {
    let port: u32 = address.rsplit_once(':')?.1.parse().ok()?;
    port.checked_sub(BASE_PORT)
}

/// The service index a name from [`service_name`] stands for.
pub fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix("svc-")?.parse().ok()
}
