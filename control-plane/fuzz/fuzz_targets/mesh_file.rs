//! The mesh file parser on arbitrary text: it must refuse or accept, never panic, and
//! every refusal must name a position inside the text (or 0 for the file as a whole).
//! What it accepts must resolve: every endpoint to its own service pinned to that
//! endpoint, every virtual address to its own service. The same holds once its `dns:`
//! names resolve (here each to one IPv4 and one IPv6 address), when they make a model.

#![no_main]

use std::net::IpAddr;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use seam_control_plane::mesh_file;
use seam_control_plane::model::{MeshModel, Resolution, Resolutions};

fuzz_target!(|text: &str| {
    match mesh_file::parse_spec(Path::new("fuzz.yaml"), text, "seam.local") {
        Ok(spec) => {
            check_resolves(
                &spec
                    .model(&Resolutions::new())
                    .expect("the spec was checked"),
            );
            let addresses: Vec<IpAddr> =
                vec!["10.255.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
            let resolutions: Resolutions = spec
                .names()
                .into_iter()
                .map(|name| (name, addresses.clone()))
                .collect();
            if let Ok(model) = spec.model(&resolutions) {
                check_resolves(&model);
            }
        }
        Err(err) => {
            // YAML breaks lines at \n, \r\n and a lone \r; counting \r\n twice is an
            // upper bound, which is all this needs.
            let lines = text.split(['\n', '\r']).count() as u64 + 1;
            assert!(
                err.line <= lines,
                "line {} of a {lines}-line text: {err}",
                err.line
            );
            assert!(!err.reason.is_empty());
        }
    }
});

fn check_resolves(model: &MeshModel) {
    for service in model.services().values() {
        assert!(!service.name.is_empty());
        for endpoint in &service.endpoints {
            match model.resolve(&endpoint.address.to_string()) {
                Resolution::Service(found) => {
                    assert_eq!(found.name, service.name);
                    assert_eq!(found.endpoints, [endpoint.clone()]);
                }
                Resolution::NotFound => panic!("endpoint {} is lost", endpoint.address),
            }
        }
        for address in &service.addresses {
            match model.resolve(&address.to_string()) {
                Resolution::Service(found) => assert_eq!(found.name, service.name),
                Resolution::NotFound => panic!("virtual address {address} is lost"),
            }
        }
    }
}
