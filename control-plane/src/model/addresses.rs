//! Which service an IP:port names. A service's *instance ports* are its endpoints' own
//! ports plus the target of every `ports` mapping, and every endpoint IP serves every
//! instance port: each such IP:port is an *instance address* of the service. Its
//! *virtual addresses* (a Kubernetes ClusterIP's equivalent) go to any instance, at the
//! instance port their port maps to. [`AddressIndex`] holds every address of a mesh,
//! built once per accepted model so that resolving an IP:port is one map lookup; building
//! it refuses services that would make one address name two things.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::ServiceModel;

/// The most addresses (instance and virtual) one mesh may have. Every endpoint IP serves
/// every instance port, so a file listing many endpoints that differ in both IP and port
/// multiplies them; this bounds the index such a file can make the control plane build,
/// instead of letting a mistake exhaust its memory.
pub const MAX_ADDRESSES: usize = 1 << 20;

/// One entry of a service's `ports`: a virtual address's `port` goes to the instances'
/// `target_port` (the same number when the file gives only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub port: u16,
    pub target_port: u16,
}

impl ServiceModel {
    /// The ports every instance serves: the endpoints' own (a `dns:` entry's port too,
    /// resolved or not) and every mapping's target.
    pub fn instance_ports(&self) -> BTreeSet<u16> {
        let listed = self
            .endpoints
            .iter()
            .map(|endpoint| endpoint.address.port());
        let named = self.named_endpoints.iter().map(|named| named.port);
        let mapped = self.ports.iter().map(|mapping| mapping.target_port);
        listed.chain(named).chain(mapped).collect()
    }

    /// The instance port a virtual address's `port` goes to: its mapping's target, else
    /// the port itself (which is then only usable if it is an instance port).
    pub fn mapped_port(&self, port: u16) -> u16 {
        self.ports
            .iter()
            .find(|mapping| mapping.port == port)
            .map_or(port, |mapping| mapping.target_port)
    }

    /// The instances' IPs, each once, in the order the endpoints list them.
    pub fn instance_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for endpoint in &self.endpoints {
            if !ips.contains(&endpoint.address.ip()) {
                ips.push(endpoint.address.ip());
            }
        }
        ips
    }
}

/// What one address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// An instance of `service`: one of its endpoint IPs with one of its instance ports.
    Instance { service: Arc<str> },
    /// A virtual address of `service`, whose connections go to any instance at
    /// `target_port`.
    Virtual { service: Arc<str>, target_port: u16 },
}

impl Named {
    pub fn service(&self) -> &str {
        match self {
            Self::Instance { service } | Self::Virtual { service, .. } => service,
        }
    }

    fn kind(&self) -> AddressKind {
        match self {
            Self::Instance { .. } => AddressKind::Instance,
            Self::Virtual { .. } => AddressKind::Virtual,
        }
    }
}

/// Every instance and virtual address of a mesh, and what it names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AddressIndex(HashMap<SocketAddr, Named>);

impl fmt::Debug for AddressIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressIndex({} addresses)", self.0.len())
    }
}

/// Whether an address is an instance's or a virtual one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    Instance,
    Virtual,
}

/// One service's claim on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub service: String,
    pub kind: AddressKind,
}

/// Why a set of services cannot be indexed, in Seam's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `address` would name two things; `first` was met before `second` (services in
    /// name order; a service's instance addresses before its virtual ones, which keep
    /// their listed order).
    #[error("{}", claimed_twice(address, first, second))]
    Claimed {
        address: SocketAddr,
        first: Claim,
        second: Claim,
    },
    /// A virtual address whose port goes to no instance port.
    #[error(
        "virtual address {address} of service {service:?} goes to no instance port: ports \
         does not map {port}, and {}",
        served(instance_ports)
    )]
    Unmapped {
        service: String,
        address: SocketAddr,
        port: u16,
        instance_ports: Vec<u16>,
    },
    /// The mesh would have more than [`MAX_ADDRESSES`] addresses once `service` is counted.
    #[error(
        "service {service:?} brings the mesh to {count} addresses, more than the \
         {MAX_ADDRESSES} it may have: each of its {ips} endpoint IPs serves each of its {ports} \
         instance ports (list the ports instances share in ports, not a different port per \
         endpoint)"
    )]
    TooMany {
        service: String,
        count: usize,
        ips: usize,
        ports: usize,
    },
}

fn claimed_twice(address: &SocketAddr, first: &Claim, second: &Claim) -> String {
    let kind = |claim: &Claim| match claim.kind {
        AddressKind::Instance => "an instance address",
        AddressKind::Virtual => "a virtual address",
    };
    if first.service != second.service {
        return format!(
            "address {address} is claimed by two services: {:?} ({}) and {:?} ({}); an \
             address may name one service only",
            first.service,
            kind(first),
            second.service,
            kind(second)
        );
    }
    let service = &first.service;
    match (first.kind, second.kind) {
        (AddressKind::Virtual, AddressKind::Virtual) => {
            format!("virtual address {address} of service {service:?} is listed twice")
        }
        _ => format!(
            "virtual address {address} of service {service:?} is also one of its instance \
             addresses (an endpoint IP with an instance port)"
        ),
    }
}

fn served(instance_ports: &[u16]) -> String {
    if instance_ports.is_empty() {
        return "the service has no instance ports (no endpoints, no ports)".to_owned();
    }
    let ports: Vec<String> = instance_ports.iter().map(u16::to_string).collect();
    format!("its instance ports are {}", ports.join(", "))
}

impl AddressIndex {
    /// Indexes the addresses of `services`, refusing any that would name two things, a
    /// virtual address that goes nowhere, and more than [`MAX_ADDRESSES`] in all.
    pub fn build(services: &BTreeMap<String, ServiceModel>) -> Result<Self, AddressError> {
        let (index, shared) = Self::build_sharing(services, false)?;
        debug_assert!(shared.is_empty());
        Ok(index)
    }

    /// [`build`](Self::build), except that when `share_instances` is set an instance
    /// address two services claim (two Kubernetes Services selecting the same pods) stays
    /// the first's (services in name order) and the second claim is returned instead of
    /// refusing the mesh; every other refusal stands.
    pub fn build_sharing(
        services: &BTreeMap<String, ServiceModel>,
        share_instances: bool,
    ) -> Result<(Self, Vec<AddressError>), AddressError> {
        let mut count = 0_usize;
        for service in services.values() {
            let ips = service.instance_ips().len();
            let ports = service.instance_ports().len();
            count = count
                .saturating_add(ips.saturating_mul(ports))
                .saturating_add(service.addresses.len());
            if count > MAX_ADDRESSES {
                return Err(AddressError::TooMany {
                    service: service.name.clone(),
                    count,
                    ips,
                    ports,
                });
            }
        }
        let mut index = HashMap::with_capacity(count);
        let mut shared = Vec::new();
        for service in services.values() {
            let name: Arc<str> = Arc::from(service.name.as_str());
            let instance_ports = service.instance_ports();
            for ip in service.instance_ips() {
                for &port in &instance_ports {
                    let named = Named::Instance {
                        service: name.clone(),
                    };
                    match claim(&mut index, SocketAddr::new(ip, port), named) {
                        Err(AddressError::Claimed {
                            address,
                            first,
                            second,
                        }) if share_instances
                            && first.kind == AddressKind::Instance
                            && first.service != second.service =>
                        {
                            shared.push(AddressError::Claimed {
                                address,
                                first,
                                second,
                            });
                        }
                        other => other?,
                    }
                }
            }
            for &address in &service.addresses {
                let target_port = service.mapped_port(address.port());
                if !instance_ports.contains(&target_port) {
                    return Err(AddressError::Unmapped {
                        service: service.name.clone(),
                        address,
                        port: address.port(),
                        instance_ports: instance_ports.iter().copied().collect(),
                    });
                }
                let named = Named::Virtual {
                    service: name.clone(),
                    target_port,
                };
                claim(&mut index, address, named)?;
            }
        }
        Ok((Self(index), shared))
    }

    /// What `address` names, if anything.
    pub fn get(&self, address: &SocketAddr) -> Option<&Named> {
        self.0.get(address)
    }
}

fn claim(
    index: &mut HashMap<SocketAddr, Named>,
    address: SocketAddr,
    named: Named,
) -> Result<(), AddressError> {
    use std::collections::hash_map::Entry;
    match index.entry(address) {
        Entry::Vacant(vacant) => {
            vacant.insert(named);
            Ok(())
        }
        Entry::Occupied(occupied) => {
            let claim_of = |named: &Named| Claim {
                service: named.service().to_owned(),
                kind: named.kind(),
            };
            Err(AddressError::Claimed {
                address,
                first: claim_of(occupied.get()),
                second: claim_of(&named),
            })
        }
    }
}

#[cfg(test)]
mod tests;
