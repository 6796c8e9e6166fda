//! How an authority a proxy subscribes to resolves against the model. A service name
//! (`api`, `api:80`) names the whole service. An IP:port is looked up in the address
//! index: a virtual address names the service with its endpoints moved to the instance
//! port the address maps to; an instance address names the service *pinned* to that one
//! instance, because an app that dialed one instance (a StatefulSet pod, a Kafka broker)
//! must reach that instance, not whichever the balancer picks.

use std::net::{IpAddr, SocketAddr};

use crate::kubernetes::naming;

use super::{
    Endpoint, MeshModel, MirrorRef, Named, Resolution, ResolvedBackend, ResolvedMirror,
    ResolvedRoute, ResolvedService, ServiceModel,
};

/// Which instances of a service a resolution reaches.
#[derive(Clone, Copy)]
enum Reach {
    /// Every instance at its listed endpoint (a name), routes splitting as they say.
    Endpoints,
    /// Every instance IP at one instance port (a virtual address), routes splitting as
    /// they say.
    AtPort(u16),
    /// This one instance address only, every request included: routes keep their match
    /// and policy but lose their splits.
    Pinned(SocketAddr),
}

impl MeshModel {
    /// Resolves an authority: a service name (with or without a port), or an IP:port
    /// that is one of a service's virtual or instance addresses.
    pub fn resolve(&self, authority: &str) -> Resolution {
        let found = match authority.parse::<SocketAddr>() {
            Ok(address) => self.addresses.get(&address).and_then(|named| {
                let reach = match named {
                    Named::Virtual { target_port, .. } => Reach::AtPort(*target_port),
                    Named::Instance { .. } => Reach::Pinned(address),
                };
                Some((self.services.get(named.service())?, reach))
            }),
            Err(_) => self
                .services
                .get(strip_port(authority))
                .map(|service| (service, Reach::Endpoints)),
        };
        match found {
            Some((service, reach)) => {
                Resolution::Service(Box::new(self.resolve_service(service, reach)))
            }
            None => Resolution::NotFound,
        }
    }

    /// Resolves an authority for a proxy whose workload identity is in
    /// `caller_namespace`. A mesh file's model resolves exactly as [`resolve`](Self::resolve);
    /// a cluster's also resolves Kubernetes names relative to that namespace (see
    /// `kubernetes::naming`: a Service port in the name goes to the instance port it maps
    /// to) and a bare pod IP to the first Service by name listing it.
    pub fn resolve_for(&self, authority: &str, caller_namespace: Option<&str>) -> Resolution {
        let Some(cluster) = &self.cluster else {
            return self.resolve(authority);
        };
        if authority.parse::<SocketAddr>().is_ok() {
            return self.resolve(authority);
        }
        let bare_ip = authority
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(authority);
        let found = match bare_ip.parse::<IpAddr>() {
            Ok(ip) => cluster
                .pod_ips
                .get(&ip)
                .and_then(|name| self.services.get(name))
                .map(|service| (service, Reach::Endpoints)),
            Err(_) => naming::service_name(authority, caller_namespace, &cluster.cluster_domain)
                .and_then(|named| {
                    let service = self.services.get(&named.key)?;
                    let reach = match named.port {
                        Some(port) if service.ports.iter().any(|mapping| mapping.port == port) => {
                            Reach::AtPort(service.mapped_port(port))
                        }
                        _ => Reach::Endpoints,
                    };
                    Some((service, reach))
                }),
        };
        match found {
            Some((service, reach)) => {
                Resolution::Service(Box::new(self.resolve_service(service, reach)))
            }
            None => Resolution::NotFound,
        }
    }

    fn resolve_service(&self, service: &ServiceModel, reach: Reach) -> ResolvedService {
        let endpoints = match reach {
            Reach::Endpoints => service.endpoints.clone(),
            Reach::AtPort(port) => at_port(&service.endpoints, port),
            Reach::Pinned(address) => pinned(&service.endpoints, address),
        };
        let routes = service
            .routes
            .iter()
            .map(|route| ResolvedRoute {
                route_match: route.route_match.clone(),
                policy: route.policy.clone(),
                backends: match reach {
                    Reach::Pinned(_) => Vec::new(),
                    Reach::Endpoints | Reach::AtPort(_) => route
                        .backends
                        .iter()
                        .map(|backend| ResolvedBackend {
                            service: backend.service.clone(),
                            weight: backend.weight,
                            // The mesh file checks that backends name known services.
                            endpoints: self
                                .services
                                .get(&backend.service)
                                .map(|target| target.endpoints.clone())
                                .unwrap_or_default(),
                        })
                        .collect(),
                },
                allow: route.allow.clone(),
                mirror: self.resolve_mirror(route.policy.mirror.as_ref()),
                own_rate_limit: route.own_rate_limit,
            })
            .collect();
        ResolvedService {
            name: service.name.clone(),
            endpoints,
            policy: service.policy.clone(),
            mirror: self.resolve_mirror(service.policy.mirror.as_ref()),
            routes,
            authorization: service.authorization.clone(),
            opaque_ports: service.opaque_ports.clone(),
            instances: service.endpoints.len(),
            request_id_off: service.request_id_off,
        }
    }

    /// A mirror with its service's endpoints. A pinned resolution keeps its mirrors: the
    /// copy is not the request the app pinned to one instance.
    fn resolve_mirror(&self, mirror: Option<&MirrorRef>) -> Option<ResolvedMirror> {
        let mirror = mirror?;
        Some(ResolvedMirror {
            service: mirror.service.clone(),
            percent: mirror.percent,
            // The mesh file checks that a mirror names a known service.
            endpoints: self
                .services
                .get(&mirror.service)
                .map(|target| target.endpoints.clone())
                .unwrap_or_default(),
        })
    }
}

/// One endpoint per instance IP, in the order listed, at `port`.
fn at_port(endpoints: &[Endpoint], port: u16) -> Vec<Endpoint> {
    let mut moved: Vec<Endpoint> = Vec::new();
    for endpoint in endpoints {
        let ip = endpoint.address.ip();
        if !moved.iter().any(|seen| seen.address.ip() == ip) {
            moved.push(Endpoint {
                address: SocketAddr::new(ip, port),
                identity: endpoint.identity.clone(),
            });
        }
    }
    moved
}

/// `address` alone, with the identity its IP's instance proves.
fn pinned(endpoints: &[Endpoint], address: SocketAddr) -> Vec<Endpoint> {
    let ip: IpAddr = address.ip();
    endpoints
        .iter()
        .find(|endpoint| endpoint.address.ip() == ip)
        .map(|endpoint| Endpoint {
            address,
            identity: endpoint.identity.clone(),
        })
        .into_iter()
        .collect()
}

/// `api:80` → `api`; `api` → `api`.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}
