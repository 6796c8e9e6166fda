//! [`MeshSpec::model`]: a file's model given what its DNS names resolve to.

use std::net::IpAddr;
use std::path::Path;

use super::{MeshSpec, parse_spec};
use crate::model::{DnsName, MeshModel, Resolution, Resolutions};

/// `api` at `dns:api:4143` (with `ports` 80 → 4143 and a virtual address), beside `web`
/// listed literally, and `db` by name at 5432 with an IP:port of its own.
const FILE: &str = r#"services:
  api:
    join_token: t
    endpoints: ["dns:api:4143"]
    ports: [{ port: 80, target_port: 4143 }]
    addresses: ["10.96.0.1:80"]
  web:
    join_token: w
    endpoints: ["10.0.0.9:4143"]
  db:
    join_token: d
    endpoints: ["10.0.1.1:5432", "dns:db:5432"]
"#;

fn spec() -> MeshSpec {
    parse_spec(Path::new("mesh.yaml"), FILE, "seam.local").unwrap()
}

fn resolutions(names: &[(&str, &[&str])]) -> Resolutions {
    names
        .iter()
        .map(|(name, ips)| {
            let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
            (DnsName::parse(name).unwrap(), ips)
        })
        .collect()
}

fn endpoints(model: &MeshModel, service: &str) -> Vec<String> {
    model.services()[service]
        .endpoints
        .iter()
        .map(|endpoint| endpoint.address.to_string())
        .collect()
}

/// The endpoints an authority resolves to, with the identity each must prove.
fn resolved(model: &MeshModel, authority: &str) -> Vec<(String, String)> {
    match model.resolve(authority) {
        Resolution::Service(service) => service
            .endpoints
            .iter()
            .map(|endpoint| {
                (
                    endpoint.address.to_string(),
                    endpoint
                        .identity
                        .as_ref()
                        .map_or("plaintext", |id| id.as_str())
                        .to_owned(),
                )
            })
            .collect(),
        Resolution::NotFound => Vec::new(),
    }
}

#[test]
fn the_spec_lists_the_names_it_uses() {
    let names: Vec<String> = spec().names().iter().map(ToString::to_string).collect();
    assert_eq!(names, ["api", "db"]);
}

#[test]
fn every_address_of_a_name_is_an_endpoint_as_if_listed() {
    let model = spec()
        .model(&resolutions(&[
            ("api", &["10.0.0.2", "10.0.0.1", "fd00::1"]),
            ("db", &["10.0.1.1", "10.0.1.2"]),
        ]))
        .unwrap();
    assert_eq!(
        endpoints(&model, "api"),
        ["10.0.0.2:4143", "10.0.0.1:4143", "[fd00::1]:4143"]
    );
    // Literal endpoints first; an address the service already lists is not repeated.
    assert_eq!(endpoints(&model, "db"), ["10.0.1.1:5432", "10.0.1.2:5432"]);

    let api_id = "spiffe://seam.local/ns/default/sa/api";
    // By name: every instance.
    assert_eq!(resolved(&model, "api:80").len(), 3);
    // A resolved address is an instance address: pinned to that instance alone, on any
    // instance port, with the service's identity.
    assert_eq!(
        resolved(&model, "10.0.0.1:4143"),
        [("10.0.0.1:4143".to_owned(), api_id.to_owned())]
    );
    assert_eq!(
        resolved(&model, "[fd00::1]:4143"),
        [("[fd00::1]:4143".to_owned(), api_id.to_owned())]
    );
    // The virtual address maps to every resolved instance at the target port.
    let virtual_address: Vec<String> = resolved(&model, "10.96.0.1:80")
        .into_iter()
        .map(|(address, _)| address)
        .collect();
    assert_eq!(
        virtual_address,
        ["10.0.0.2:4143", "10.0.0.1:4143", "[fd00::1]:4143"]
    );
}

#[test]
fn a_name_not_resolved_yet_or_gone_brings_no_endpoints() {
    let spec = spec();
    let unresolved = spec.model(&Resolutions::new()).unwrap();
    assert!(endpoints(&unresolved, "api").is_empty());
    assert_eq!(endpoints(&unresolved, "db"), ["10.0.1.1:5432"]);
    assert!(resolved(&unresolved, "10.0.0.1:4143").is_empty());

    let before = spec
        .model(&resolutions(&[("api", &["10.0.0.1", "10.0.0.2"])]))
        .unwrap();
    assert_eq!(endpoints(&before, "api").len(), 2);
    // Scaled to 0: the name has no addresses any more.
    let gone = spec.model(&resolutions(&[("api", &[])])).unwrap();
    assert!(endpoints(&gone, "api").is_empty());
    assert!(resolved(&gone, "10.0.0.1:4143").is_empty());
    assert_eq!(gone.services(), unresolved.services());
}

/// A resolved address that another service lists makes no model (the source then keeps
/// the last good one); the error names both services and points at the later one's entry
/// (services in name order), as for two literal entries.
#[test]
fn an_address_another_service_has_is_refused_naming_both() {
    let err = spec()
        .model(&resolutions(&[("api", &["10.0.0.9"])]))
        .unwrap_err();
    assert_eq!((err.line, err.column), (9, 17), "{err}");
    assert_eq!(
        err.reason,
        "address 10.0.0.9:4143 is claimed by two services: \"api\" (an instance address) and \
         \"web\" (an instance address); an address may name one service only"
    );
}
