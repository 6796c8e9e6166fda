//! The mesh model: the validated, indexed set of services the control plane serves, and
//! how an authority a proxy subscribes to resolves against it. Pure data, no I/O.

mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use seam_proto::SpiffeId;
use subtle::ConstantTimeEq;

pub use policy::{
    BackendRef, CircuitBreaker, LoadBalancer, PathMatch, Policy, RetryOn, RetryPolicy, RouteMatch,
    RouteModel,
};

/// The namespace every service lives in when the mesh file is the source.
pub const FILE_NAMESPACE: &str = "default";

/// One accepted version of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshModel {
    /// Increases by one with every accepted change; never reused while the process lives.
    pub version: u64,
    pub trust_domain: String,
    pub services: BTreeMap<String, ServiceModel>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceModel {
    pub name: String,
    pub join_token: JoinToken,
    pub endpoints: Vec<Endpoint>,
    pub policy: Policy,
    /// Checked in order; the first match decides.
    pub routes: Vec<RouteModel>,
    pub authorization: Authorization,
}

/// Who may call a service; the service's own proxies enforce it on inbound requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// `None`: any identity of the mesh. `Some`: only these (service names already
    /// turned into their SPIFFE ids).
    pub allow: Option<Vec<SpiffeId>>,
    /// Whether callers without mTLS are let in (`false` unless the mesh file says so).
    pub allow_plaintext: bool,
}

/// Where an instance is reached, and who it must prove to be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub identity: SpiffeId,
}

/// What an authority currently names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Service(Box<ResolvedService>),
    NotFound,
}

/// A service with its routes' backends resolved to their endpoints, so a proxy needs
/// one subscription per service it calls, splits included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedService {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub policy: Policy,
    pub routes: Vec<ResolvedRoute>,
    pub authorization: Authorization,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    pub route_match: RouteMatch,
    pub policy: Policy,
    pub backends: Vec<ResolvedBackend>,
    pub allow: Option<Vec<SpiffeId>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBackend {
    pub service: String,
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
}

/// A service's join token. Never printed; compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

impl MeshModel {
    /// The empty mesh, before any source has been read.
    pub fn empty(trust_domain: &str) -> Self {
        Self {
            version: 0,
            trust_domain: trust_domain.to_owned(),
            services: BTreeMap::new(),
        }
    }

    /// Resolves an authority: a service name (with or without a port), or the IP:port of
    /// one of a service's endpoints.
    pub fn resolve(&self, authority: &str) -> Resolution {
        let service = match authority.parse::<SocketAddr>() {
            Ok(address) => self
                .services
                .values()
                .find(|service| service.endpoints.iter().any(|e| e.address == address)),
            Err(_) => self.services.get(strip_port(authority)),
        };
        match service {
            Some(service) => Resolution::Service(Box::new(self.resolve_service(service))),
            None => Resolution::NotFound,
        }
    }

    fn resolve_service(&self, service: &ServiceModel) -> ResolvedService {
        let routes = service
            .routes
            .iter()
            .map(|route| ResolvedRoute {
                route_match: route.route_match.clone(),
                policy: route.policy.clone(),
                backends: route
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
                allow: route.allow.clone(),
            })
            .collect();
        ResolvedService {
            name: service.name.clone(),
            endpoints: service.endpoints.clone(),
            policy: service.policy.clone(),
            routes,
            authorization: service.authorization.clone(),
        }
    }
}

/// `api:80` → `api`; `api` → `api`.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MeshModel {
        let endpoint = |address: &str, service: &str| Endpoint {
            address: address.parse().unwrap(),
            identity: SpiffeId::workload("seam.local", FILE_NAMESPACE, service).unwrap(),
        };
        let mut services = BTreeMap::new();
        services.insert(
            "api".to_owned(),
            ServiceModel {
                name: "api".into(),
                join_token: JoinToken::new("t".into()),
                endpoints: vec![endpoint("127.0.0.1:1001", "api")],
                policy: Policy::default(),
                authorization: Authorization::default(),
                routes: vec![RouteModel {
                    route_match: RouteMatch::default(),
                    policy: Policy::default(),
                    backends: vec![BackendRef {
                        service: "v2".into(),
                        weight: 1,
                    }],
                    allow: None,
                }],
            },
        );
        services.insert(
            "v2".to_owned(),
            ServiceModel {
                name: "v2".into(),
                join_token: JoinToken::new("t".into()),
                endpoints: vec![endpoint("127.0.0.1:1002", "v2")],
                policy: Policy::default(),
                routes: Vec::new(),
                authorization: Authorization::default(),
            },
        );
        MeshModel {
            version: 1,
            trust_domain: "seam.local".into(),
            services,
        }
    }

    #[test]
    fn resolves_names_names_with_ports_and_endpoint_addresses() {
        let model = model();
        for authority in ["api", "api:80", "127.0.0.1:1001"] {
            match model.resolve(authority) {
                Resolution::Service(service) => {
                    assert_eq!(service.name, "api", "{authority}");
                    assert_eq!(service.endpoints.len(), 1);
                    let backend = &service.routes[0].backends[0];
                    assert_eq!(backend.service, "v2");
                    assert_eq!(
                        backend.endpoints[0].address,
                        "127.0.0.1:1002".parse().unwrap(),
                        "route backends carry their endpoints"
                    );
                }
                Resolution::NotFound => panic!("{authority} did not resolve"),
            }
        }
        for authority in ["web", "127.0.0.1:9", "api:http"] {
            assert_eq!(
                model.resolve(authority),
                Resolution::NotFound,
                "{authority}"
            );
        }
    }

    #[test]
    fn join_tokens_match_exactly_and_never_print() {
        let token = JoinToken::new("s3cret".into());
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret!"));
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
