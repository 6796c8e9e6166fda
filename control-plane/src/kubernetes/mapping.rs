//! The mapping from a snapshot of Kubernetes objects to the mesh model: a pure function
//! ([`map`]) of the Services, EndpointSlices, Pods and HTTPRoutes, the trust and cluster
//! domains, and each Service's last good `seam.io/policy`. Bad input never refuses the
//! whole model: it becomes a [`Problem`] naming the object, and the rest is served.
//!
//! - A Service `web` in `shop` is the service `web.shop`; ExternalName Services and
//!   ports other than TCP are not part of the mesh.
//! - Its endpoints are the addresses of the EndpointSlices labelled
//!   `kubernetes.io/service-name: web`: the ready ones (`conditions.ready` true or
//!   absent); when none is ready, the serving ones that are terminating (as kube-proxy
//!   does, so connections drain instead of failing while a rollout ends).
//! - An endpoint's identity is its pod's ServiceAccount (`default` when unset); a pod
//!   without a `seam-proxy` container (or unknown) has none: it is reached in plaintext.
//! - Each Service port maps to the target port its EndpointSlices give (a named
//!   `targetPort` resolves there), else to the numeric `targetPort`, else to itself; the
//!   ClusterIPs are virtual addresses; headless Services have none.
//! - Routes come from HTTPRoutes (`routes`); the rest of the policy from the annotation
//!   `seam.io/policy` (the mesh file's YAML block, read by `mesh_file::parse_policy_block`).

mod endpoints;
mod routes;

pub use endpoints::OPAQUE_PORTS_ANNOTATION;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;

use super::objects::{self, Snapshot};
use crate::mesh_file::{BlockScope, PolicyBlock, parse_policy_block};
use crate::model::{
    AddressError, Authorization, ClusterNaming, JoinToken, MeshModel, ServiceModel,
};

/// The annotation holding a Service's policy block.
pub const POLICY_ANNOTATION: &str = "seam.io/policy";

/// What the mapping reads besides the objects.
pub struct Settings<'a> {
    pub trust_domain: &'a str,
    pub cluster_domain: &'a str,
}

/// Something wrong with one object, which the rest of the model is served without.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `Service` or `HTTPRoute`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// Whether it is the Service's `seam.io/policy` that is bad (reported as an Event).
    pub bad_policy: bool,
    pub message: String,
}

/// The model, the problems met building it, and each Service's last good policy (to hand
/// back in next time).
#[derive(Debug, Clone)]
pub struct Mapped {
    pub model: MeshModel,
    pub problems: Vec<Problem>,
    pub last_good: BTreeMap<String, PolicyBlock>,
}

/// Maps `snapshot` to the mesh model. `last_good` holds each Service's last accepted
/// policy, by `NAME.NAMESPACE`: a Service whose annotation is bad keeps it (the default
/// policy when none was ever good).
pub fn map(
    snapshot: &Snapshot,
    settings: &Settings<'_>,
    last_good: &BTreeMap<String, PolicyBlock>,
) -> Mapped {
    let mut problems = Vec::new();
    let mut services: BTreeMap<String, &Service> = BTreeMap::new();
    for service in &snapshot.services {
        let spec = service.spec.as_ref();
        if spec.and_then(|spec| spec.type_.as_deref()) == Some("ExternalName") {
            continue;
        }
        services.insert(objects::key(&service.metadata), service);
    }
    let names: HashSet<String> = services.keys().cloned().collect();
    let index = endpoints::Index::new(snapshot, settings.trust_domain);

    let mut models = BTreeMap::new();
    let mut policies = BTreeMap::new();
    let mut pod_ips: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (key, service) in &services {
        let (name, namespace) = (
            objects::name(&service.metadata),
            objects::namespace(&service.metadata),
        );
        let problem = |bad_policy: bool, message: String| Problem {
            kind: "Service",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            bad_policy,
            message,
        };
        let block = match policy_of(service, &names, settings.trust_domain) {
            Ok(block) => block,
            Err(message) => {
                problems.push(problem(true, message));
                last_good.get(key).cloned().unwrap_or_default()
            }
        };
        policies.insert(key.clone(), block.clone());
        let instances = index.instances(service);
        for refusal in &instances.refused_opaque_ports {
            problems.push(problem(false, refusal.clone()));
        }
        let mut opaque_ports = block.opaque_ports.clone();
        opaque_ports.extend(&instances.opaque_ports);
        opaque_ports.sort_unstable();
        opaque_ports.dedup();
        for ip in &instances.listed_ips {
            pod_ips.entry(*ip).or_insert_with(|| key.clone());
        }
        if instances.ports.is_empty() {
            if !instances.endpoints.is_empty() || !cluster_ips(service).is_empty() {
                problems.push(problem(
                    false,
                    "the Service has no TCP port, so it is not part of the mesh".to_owned(),
                ));
            }
            continue;
        }
        let addresses = cluster_ips(service)
            .into_iter()
            .flat_map(|ip| {
                instances
                    .ports
                    .iter()
                    .map(move |mapping| SocketAddr::new(ip, mapping.port))
            })
            .collect();
        models.insert(
            key.clone(),
            ServiceModel {
                name: key.clone(),
                join_token: JoinToken::none(),
                endpoints: instances.endpoints,
                named_endpoints: Vec::new(),
                ports: instances.ports,
                addresses,
                opaque_ports,
                policy: block.policy,
                routes: Vec::new(),
                authorization: Authorization {
                    allow: block.allow,
                    allow_plaintext: block.allow_plaintext,
                },
                request_id_off: block.request_id_off,
            },
        );
    }
    routes::attach(&snapshot.routes, &mut models, &mut problems);

    let cluster = ClusterNaming {
        cluster_domain: settings.cluster_domain.to_owned(),
        pod_ips,
    };
    let model = index_model(settings.trust_domain, models, &cluster, &mut problems);
    problems.sort();
    problems.dedup();
    Mapped {
        model,
        problems,
        last_good: policies,
    }
}

/// The Service's policy block, or why its annotation is refused.
fn policy_of(
    service: &Service,
    names: &HashSet<String>,
    trust_domain: &str,
) -> Result<PolicyBlock, String> {
    let Some(text) = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(POLICY_ANNOTATION))
    else {
        return Ok(PolicyBlock::default());
    };
    parse_policy_block(
        text,
        &BlockScope {
            origin: POLICY_ANNOTATION,
            name: objects::name(&service.metadata),
            namespace: objects::namespace(&service.metadata),
            services: names,
            trust_domain,
        },
    )
    .map_err(|err| {
        let at = match err.line {
            0 => String::new(),
            line => format!(" at line {line}, column {}", err.column),
        };
        format!(
            "{POLICY_ANNOTATION} is refused{at}: {}; the last good policy stays in force",
            err.reason
        )
    })
}

/// The Service's ClusterIPs (none for a headless Service).
fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let listed = spec.cluster_ips.clone().unwrap_or_default();
    let listed = if listed.is_empty() {
        spec.cluster_ip.clone().into_iter().collect()
    } else {
        listed
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in listed.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// The model of `services`. An instance address two Services claim stays the first's
/// (a problem on the other); a Service that cannot be indexed at all is left out.
fn index_model(
    trust_domain: &str,
    mut services: BTreeMap<String, ServiceModel>,
    cluster: &ClusterNaming,
    problems: &mut Vec<Problem>,
) -> MeshModel {
    loop {
        match MeshModel::for_cluster(trust_domain, services.clone(), cluster.clone()) {
            Ok((model, shared)) => {
                for claim in shared {
                    if let AddressError::Claimed {
                        address,
                        first,
                        second,
                        ..
                    } = &claim
                    {
                        problems.push(service_problem(
                            &second.service,
                            format!(
                                "pod address {address} is also an instance of {} (first by \
                                 name): a connection to it resolves there",
                                first.service
                            ),
                        ));
                    }
                }
                return model;
            }
            Err(err) => {
                let culprit = match &err {
                    AddressError::Claimed { second, .. } => second.service.clone(),
                    AddressError::Unmapped { service, .. }
                    | AddressError::TooMany { service, .. } => service.clone(),
                };
                problems.push(service_problem(
                    &culprit,
                    format!("left out of the mesh: {err}"),
                ));
                if services.remove(&culprit).is_none() {
                    return MeshModel::empty(trust_domain);
                }
            }
        }
    }
}

/// A problem on the Service `key` (`NAME.NAMESPACE`).
fn service_problem(key: &str, message: String) -> Problem {
    let (name, namespace) = key.split_once('.').unwrap_or((key, ""));
    Problem {
        kind: "Service",
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        bad_policy: false,
        message,
    }
}

#[cfg(test)]
mod tests;
