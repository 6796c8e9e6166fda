//! A Service's instances from its EndpointSlices and their pods: the endpoints (ready,
//! else serving-and-terminating), each with its pod's identity or none, and how the
//! Service's TCP ports map to the pods' ports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use seam_proto::SpiffeId;

use crate::kubernetes::objects::{self, Snapshot};
use crate::model::{Endpoint, PortMapping};

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The container (or init container: a native sidecar) that marks a meshed pod.
pub const SIDECAR_NAME: &str = "seam-proxy";

/// The slices by Service and the pods by name, of one snapshot.
pub struct Index<'a> {
    slices: BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    pods: HashMap<(&'a str, &'a str), &'a Pod>,
    trust_domain: &'a str,
}

/// One Service's instances.
#[derive(Debug, Default)]
pub struct Instances {
    /// At the pods' port for the Service's first TCP port, in address order.
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortMapping>,
    /// Every pod IP its slices list, ready or not.
    pub listed_ips: Vec<IpAddr>,
    /// The ports its pods' `seam.io/opaque-ports` annotations name, and why any
    /// annotation was refused.
    pub opaque_ports: BTreeSet<u16>,
    pub refused_opaque_ports: Vec<String>,
}

impl<'a> Index<'a> {
    pub fn new(snapshot: &'a Snapshot, trust_domain: &'a str) -> Self {
        let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in &snapshot.slices {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let namespace = objects::namespace(&slice.metadata);
            slices
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
        for listed in slices.values_mut() {
            listed.sort_by_key(|slice| objects::name(&slice.metadata));
        }
        let pods = snapshot
            .pods
            .iter()
            .map(|pod| {
                let metadata = &pod.metadata;
                (
                    (objects::namespace(metadata), objects::name(metadata)),
                    &**pod,
                )
            })
            .collect();
        Self {
            slices,
            pods,
            trust_domain,
        }
    }

    pub fn instances(&self, service: &Service) -> Instances {
        let namespace = objects::namespace(&service.metadata);
        let name = objects::name(&service.metadata);
        let slices: &[&EndpointSlice] = self
            .slices
            .get(&(namespace, name))
            .map_or(&[], Vec::as_slice);
        let tcp_ports: Vec<&ServicePort> = service
            .spec
            .iter()
            .flat_map(|spec| spec.ports.iter().flatten())
            .filter(|port| is_tcp(port.protocol.as_deref()))
            .collect();
        let ports: Vec<PortMapping> = tcp_ports
            .iter()
            .filter_map(|port| mapping(port, slices))
            .collect();
        let mut instances = Instances {
            ports,
            ..Instances::default()
        };
        let Some(first) = tcp_ports.first() else {
            return instances;
        };
        let (mut ready, mut draining) = (Vec::new(), Vec::new());
        for slice in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let port = slice_port(slice, first.name.as_deref())
                .or_else(|| instances.ports.first().map(|mapping| mapping.target_port));
            for endpoint in &slice.endpoints {
                let ips: Vec<IpAddr> = endpoint
                    .addresses
                    .iter()
                    .filter_map(|address| address.parse().ok())
                    .collect();
                instances.listed_ips.extend(&ips);
                let Some(port) = port else { continue };
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                let target = if conditions.ready != Some(false) {
                    &mut ready
                } else if conditions.serving != Some(false) && conditions.terminating == Some(true)
                {
                    &mut draining
                } else {
                    continue;
                };
                let identity = endpoint.target_ref.as_ref().and_then(|target_ref| {
                    if target_ref.kind.as_deref() != Some("Pod") {
                        return None;
                    }
                    let pod_namespace = target_ref.namespace.as_deref().unwrap_or(namespace);
                    let pod = self
                        .pods
                        .get(&(pod_namespace, target_ref.name.as_deref()?))?;
                    match opaque_ports_of(pod) {
                        Ok(ports) => instances.opaque_ports.extend(ports),
                        Err(refusal) => instances.refused_opaque_ports.push(refusal),
                    }
                    self.identity(pod)
                });
                for ip in ips {
                    target.push(Endpoint {
                        address: SocketAddr::new(ip, port),
                        identity: identity.clone(),
                    });
                }
            }
        }
        let mut endpoints = if ready.is_empty() { draining } else { ready };
        endpoints.sort_by_key(|endpoint| endpoint.address);
        endpoints.dedup_by_key(|endpoint| endpoint.address);
        instances.endpoints = endpoints;
        instances.listed_ips.sort();
        instances.listed_ips.dedup();
        instances.refused_opaque_ports.sort();
        instances.refused_opaque_ports.dedup();
        instances
    }

    /// The pod's workload identity, if it has a Seam sidecar.
    fn identity(&self, pod: &Pod) -> Option<SpiffeId> {
        let spec = pod.spec.as_ref()?;
        let meshed = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|container| container.name == SIDECAR_NAME);
        if !meshed {
            return None;
        }
        let account = spec
            .service_account_name
            .as_deref()
            .filter(|account| !account.is_empty())
            .unwrap_or("default");
        SpiffeId::workload(
            self.trust_domain,
            objects::namespace(&pod.metadata),
            account,
        )
        .ok()
    }
}

/// TCP is the default protocol of a port.
fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|protocol| protocol == "TCP")
}

/// Where a Service port goes: the port its EndpointSlices give it (by the Service port's
/// name, which is how a named `targetPort` resolves per pod), else its numeric
/// `targetPort`, else the port itself; none for a named `targetPort` no slice resolves.
fn mapping(port: &ServicePort, slices: &[&EndpointSlice]) -> Option<PortMapping> {
    let target = slices
        .iter()
        .find_map(|slice| slice_port(slice, port.name.as_deref()))
        .map(i32::from)
        .or(match &port.target_port {
            Some(IntOrString::Int(number)) => Some(*number),
            Some(IntOrString::String(_)) => None,
            None => Some(port.port),
        })?;
    Some(PortMapping {
        port: u16::try_from(port.port).ok().filter(|port| *port != 0)?,
        target_port: u16::try_from(target).ok().filter(|port| *port != 0)?,
    })
}

/// The slice's TCP port named as the Service port `name` (unnamed: `""` or absent).
fn slice_port(slice: &EndpointSlice, name: Option<&str>) -> Option<u16> {
    let name = name.unwrap_or_default();
    slice
        .ports
        .iter()
        .flatten()
        .find(|port: &&EndpointPort| {
            port.name.as_deref().unwrap_or_default() == name && is_tcp(port.protocol.as_deref())
        })
        .and_then(|port| port.port)
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
}

/// The pod's `seam.io/opaque-ports` (comma-separated ports whose connections carry opaque
/// TCP, as the Service annotation's `opaque_ports`), or why the value is refused.
fn opaque_ports_of(pod: &Pod) -> Result<Vec<u16>, String> {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(OPAQUE_PORTS_ANNOTATION))
    else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(format!(
                "pod {}/{}: annotation {OPAQUE_PORTS_ANNOTATION}: {value:?} is not a comma-separated list of ports ({entry:?})",
                objects::namespace(&pod.metadata),
                objects::name(&pod.metadata),
            )),
        })
        .collect()
}

/// The pod annotation naming ports whose connections carry opaque TCP.
pub const OPAQUE_PORTS_ANNOTATION: &str = "seam.io/opaque-ports";
