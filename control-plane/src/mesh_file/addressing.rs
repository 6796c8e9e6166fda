//! A service's addressing keys in the mesh file (`endpoints`, `ports`, `addresses`,
//! `opaque_ports`): their YAML shape (an endpoint is an IP:port or `dns:NAME:PORT`; a
//! `ports` entry is a number or a `{ port, target_port }` map), their reading into the
//! model, and where in the file an
//! address the model refuses was written. Which addresses may coexist across services is
//! the model's rule ([`MeshModel::new`](crate::model::MeshModel::new)); this module points
//! at the line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use seam_proto::{SpiffeId, defaults};
use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use serde_saphyr::{Location, Spanned};

use super::policy::Refusal;
use crate::model::{AddressError, AddressKind, DnsName, Endpoint, NamedEndpoint, PortMapping};

/// What every port must be.
const PORT_RANGE: &str = "a port from 1 to 65535";

/// How an endpoint by DNS name starts.
const DNS_PREFIX: &str = "dns:";

/// One entry of `ports`: `5432` or `{ port: 80, target_port: 8080 }`.
pub enum PortSpec {
    Same(u16),
    Mapped(MappedPortSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedPortSpec {
    port: Spanned<u16>,
    target_port: Option<Spanned<u16>>,
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortSpecVisitor)
    }
}

struct PortSpecVisitor;

impl<'de> Visitor<'de> for PortSpecVisitor {
    type Value = PortSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port, or a map of port and target_port")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<PortSpec, E> {
        u16::try_from(value)
            .map(PortSpec::Same)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<PortSpec, E> {
        u16::try_from(value)
            .map(PortSpec::Same)
            .map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PortSpec, A::Error> {
        MappedPortSpec::deserialize(MapAccessDeserializer::new(map)).map(PortSpec::Mapped)
    }
}

/// A service's addressing keys as written.
pub struct AddressingSpec {
    pub endpoints: Vec<Spanned<String>>,
    pub ports: Vec<Spanned<PortSpec>>,
    pub addresses: Vec<Spanned<String>>,
    pub opaque_ports: Option<Vec<Spanned<u16>>>,
}

/// A service's addressing keys, read, and where each address-bearing entry is written.
pub struct Addressing {
    /// The endpoints listed as IP:port.
    pub endpoints: Vec<Endpoint>,
    /// The `dns:NAME:PORT` entries.
    pub named_endpoints: Vec<NamedEndpoint>,
    pub ports: Vec<PortMapping>,
    pub addresses: Vec<SocketAddr>,
    pub opaque_ports: Vec<u16>,
    pub written: Written,
}

/// Where one service's address-bearing entries are in the file.
#[derive(Debug, Clone)]
pub struct Written {
    service: Location,
    /// Each instance address listed, or resolved from a `dns:` entry (at that entry).
    endpoints: Vec<(SocketAddr, Location)>,
    /// Each `dns:` entry, in the order of the service's `named_endpoints`.
    named: Vec<Location>,
    /// Each `ports` entry's target port.
    targets: Vec<(u16, Location)>,
    addresses: Vec<(SocketAddr, Location)>,
}

/// Reads the addressing keys of service `name` (at `location`), whose instances prove
/// `identity`.
pub fn read(
    name: &str,
    location: Location,
    identity: &SpiffeId,
    spec: AddressingSpec,
) -> Result<Addressing, Refusal> {
    let mut written = Written {
        service: location,
        endpoints: Vec::with_capacity(spec.endpoints.len()),
        named: Vec::new(),
        targets: Vec::with_capacity(spec.ports.len()),
        addresses: Vec::with_capacity(spec.addresses.len()),
    };
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    let mut named_endpoints: Vec<NamedEndpoint> = Vec::new();
    for endpoint in spec.endpoints {
        if let Some(named) = endpoint.value.strip_prefix(DNS_PREFIX) {
            let named = named_endpoint(named, &endpoint, name)?;
            if named_endpoints.contains(&named) {
                return Err((
                    endpoint.referenced,
                    format!("endpoint {named} is listed twice"),
                ));
            }
            written.named.push(endpoint.referenced);
            named_endpoints.push(named);
            continue;
        }
        let address = socket_address(&endpoint, "endpoint", name)?;
        if written.endpoints.iter().any(|(seen, _)| *seen == address) {
            return Err((
                endpoint.referenced,
                format!("endpoint {address} is listed twice"),
            ));
        }
        written.endpoints.push((address, endpoint.referenced));
        endpoints.push(Endpoint {
            address,
            identity: Some(identity.clone()),
        });
    }

    let mut ports = Vec::with_capacity(spec.ports.len());
    for (index, entry) in spec.ports.into_iter().enumerate() {
        let key = format!("services.{name}.ports[{index}]");
        let (port, port_at, target_port) = match entry.value {
            PortSpec::Same(port) => {
                let port = nonzero(port, entry.referenced, &key)?;
                (port, entry.referenced, port)
            }
            PortSpec::Mapped(mapped) => {
                let at = mapped.port.referenced;
                let port = nonzero(mapped.port.value, at, &format!("{key}.port"))?;
                let target_port = match &mapped.target_port {
                    Some(target) => nonzero(
                        target.value,
                        target.referenced,
                        &format!("{key}.target_port"),
                    )?,
                    None => port,
                };
                (port, at, target_port)
            }
        };
        if ports.iter().any(|seen: &PortMapping| seen.port == port) {
            return Err((
                port_at,
                format!(
                    "port {port} of service {name:?} is listed twice in ports (the second time \
                     here)"
                ),
            ));
        }
        written.targets.push((target_port, entry.referenced));
        ports.push(PortMapping { port, target_port });
    }

    let mut addresses = Vec::with_capacity(spec.addresses.len());
    for entry in spec.addresses {
        let address = socket_address(&entry, "address", name)?;
        written.addresses.push((address, entry.referenced));
        addresses.push(address);
    }

    let opaque_ports = match spec.opaque_ports {
        Some(listed) => {
            let mut opaque = BTreeSet::new();
            for (index, port) in listed.iter().enumerate() {
                let key = format!("services.{name}.opaque_ports[{index}]");
                opaque.insert(nonzero(port.value, port.referenced, &key)?);
            }
            opaque.into_iter().collect()
        }
        None => defaults::OPAQUE_PORTS.to_vec(),
    };

    Ok(Addressing {
        endpoints,
        named_endpoints,
        ports,
        addresses,
        opaque_ports,
        written,
    })
}

/// `port`, unless it is 0; `key` is its path in the file.
fn nonzero(port: u16, location: Location, key: &str) -> Result<u16, Refusal> {
    if port == 0 {
        Err((location, format!("{key} is 0; expected {PORT_RANGE}")))
    } else {
        Ok(port)
    }
}

/// The `NAME:PORT` after `dns:` in `entry`, an endpoint of service `service`.
fn named_endpoint(
    name_and_port: &str,
    entry: &Spanned<String>,
    service: &str,
) -> Result<NamedEndpoint, Refusal> {
    let refuse = |why: String| {
        (
            entry.referenced,
            format!("endpoint {:?} of service {service:?} {why}", entry.value),
        )
    };
    let Some((name, port)) = name_and_port.rsplit_once(':') else {
        return Err(refuse(
            "has no port; expected dns:NAME:PORT, like dns:api:4143".to_owned(),
        ));
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        let literal = SocketAddr::new(ip, port.parse().unwrap_or(0));
        return Err(refuse(format!(
            "names an IP address; list it without dns:, like \"{literal}\""
        )));
    }
    let name = DnsName::parse(name)
        .map_err(|why| refuse(format!("has a bad DNS name {name:?}: {why}")))?;
    let port = match port.parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => {
            return Err(refuse(format!("has port {port:?}; expected {PORT_RANGE}")));
        }
    };
    Ok(NamedEndpoint { name, port })
}

/// An `endpoint` or `address` entry of service `service`, as an IP:port whose port is
/// not 0.
fn socket_address(
    entry: &Spanned<String>,
    what: &str,
    service: &str,
) -> Result<SocketAddr, Refusal> {
    let address: SocketAddr = entry.value.parse().map_err(|_| {
        (
            entry.referenced,
            format!(
                "{what} {:?} of service {service:?} is not an IP:port (like 10.0.0.7:80 or \
                 [fd00::7]:80){}",
                entry.value,
                if what == "endpoint" {
                    ", nor dns:NAME:PORT (like dns:api:4143)"
                } else {
                    ""
                }
            ),
        )
    })?;
    if address.port() == 0 {
        return Err((
            entry.referenced,
            format!(
                "{what} {:?} of service {service:?} has port 0; expected {PORT_RANGE}",
                entry.value
            ),
        ));
    }
    Ok(address)
}

/// Where the entry that made the model refuse with `error` is written, given where
/// each service's entries are (`written` by service name).
pub fn locate(error: &AddressError, written: &BTreeMap<String, Written>) -> Option<Location> {
    match error {
        AddressError::Claimed {
            address,
            first,
            second,
        } => {
            let at = written.get(&second.service)?;
            match second.kind {
                AddressKind::Virtual => {
                    let repeated =
                        first.service == second.service && first.kind == AddressKind::Virtual;
                    at.addresses
                        .iter()
                        .filter(|(listed, _)| listed == address)
                        .nth(usize::from(repeated))
                        .map(|(_, location)| *location)
                }
                AddressKind::Instance => at.instance_entry(*address),
            }
        }
        AddressError::Unmapped {
            service, address, ..
        } => written
            .get(service)?
            .addresses
            .iter()
            .find(|(listed, _)| listed == address)
            .map(|(_, location)| *location),
        AddressError::TooMany { service, .. } => written.get(service).map(|at| at.service),
    }
}

impl Written {
    /// Notes that `address` is an instance address because the service's `index`th
    /// `dns:` entry resolved to it.
    pub fn resolved(&mut self, index: usize, address: SocketAddr) {
        let location = self.named.get(index).copied().unwrap_or(self.service);
        self.endpoints.push((address, location));
    }

    /// The entry that makes `address` an instance address: the endpoint itself, else
    /// the `ports` entry giving its port, else an endpoint with its IP.
    fn instance_entry(&self, address: SocketAddr) -> Option<Location> {
        let endpoint = self.endpoints.iter().find(|(listed, _)| *listed == address);
        let target = || {
            self.targets
                .iter()
                .find(|(port, _)| *port == address.port())
        };
        let same_ip = || {
            self.endpoints
                .iter()
                .find(|(listed, _)| listed.ip() == address.ip())
        };
        endpoint
            .map(|(_, location)| *location)
            .or_else(|| target().map(|(_, location)| *location))
            .or_else(|| same_ip().map(|(_, location)| *location))
            .or(Some(self.service))
    }
}

#[cfg(test)]
mod named_tests;
#[cfg(test)]
mod tests;
