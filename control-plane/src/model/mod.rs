//! The mesh model: the validated, indexed set of services the control plane serves, and
//! how an authority a proxy subscribes to resolves against it (`resolve`). Pure data, no
//! I/O. A model is built whole by [`MeshModel::new`], which indexes every address it
//! holds (`addresses`), so no model exists whose index disagrees with its services.

mod addresses;
mod named;
mod policy;
mod resolve;
mod traffic;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use seam_proto::SpiffeId;
use subtle::ConstantTimeEq;

use addresses::{AddressIndex, Named};

pub use addresses::{AddressError, AddressKind, Claim, MAX_ADDRESSES, PortMapping};
pub use named::{DnsName, NamedEndpoint, Resolutions};
pub use policy::{
    BackendRef, CircuitBreaker, LoadBalancer, MilliRate, PathMatch, Policy, RateLimit,
    RateOverride, RetryOn, RetryPolicy, RouteMatch, RouteModel,
};
pub use resolve::strip_port;
pub use traffic::{AbortAnswer, Fault, FaultAbort, FaultDelay, MirrorRef, Percent};

/// The namespace every service lives in when the mesh file is the source.
pub const FILE_NAMESPACE: &str = "default";

/// One accepted version of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshModel {
    /// Increases by one with every accepted change; never reused while the process lives.
    pub version: u64,
    pub trust_domain: String,
    services: BTreeMap<String, ServiceModel>,
    /// Built from `services` once, by [`MeshModel::new`].
    addresses: AddressIndex,
    /// Kubernetes mode only: how names resolve relative to the caller's namespace.
    /// `None`: names are the mesh file's, resolved as written.
    cluster: Option<Arc<ClusterNaming>>,
}

/// What resolving Kubernetes names needs beyond the services (see `resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterNaming {
    /// The cluster's DNS domain (`cluster.local`), as in `web.shop.svc.cluster.local`.
    pub cluster_domain: String,
    /// Each pod IP a Service's EndpointSlices list (ready or not) and the first such
    /// Service by `NAME.NAMESPACE`: a bare pod IP resolves to it (the inbound policy of
    /// that pod's proxy).
    pub pod_ips: BTreeMap<IpAddr, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceModel {
    pub name: String,
    pub join_token: JoinToken,
    /// The instances: those listed as IP:port, then those the `dns:` entries resolve to
    /// now; each endpoint IP also serves every other instance port.
    pub endpoints: Vec<Endpoint>,
    /// The `dns:NAME:PORT` entries as written; their addresses are in `endpoints`.
    pub named_endpoints: Vec<NamedEndpoint>,
    /// How a virtual address's ports map to instance ports; each target is an instance
    /// port.
    pub ports: Vec<PortMapping>,
    /// Virtual addresses, whose connections go to any instance.
    pub addresses: Vec<SocketAddr>,
    /// Instance ports whose connections carry opaque TCP (no protocol detection): the
    /// effective list, the default filled in, ascending and each once.
    pub opaque_ports: Vec<u16>,
    pub policy: Policy,
    /// Checked in order; the first match decides.
    pub routes: Vec<RouteModel>,
    pub authorization: Authorization,
    /// `request_id: false` in the mesh file: no `x-request-id` added or checked on calls
    /// to this service.
    pub request_id_off: bool,
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
    /// `None`: the instance has no Seam proxy (a Kubernetes pod without a sidecar), so
    /// callers reach it in plaintext.
    pub identity: Option<SpiffeId>,
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
    /// The policy's mirror with its service's endpoints.
    pub mirror: Option<ResolvedMirror>,
    pub routes: Vec<ResolvedRoute>,
    pub authorization: Authorization,
    pub opaque_ports: Vec<u16>,
    /// How many instances the service has (all of them, whatever the reach), which
    /// share its rate limits.
    pub instances: usize,
    pub request_id_off: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    pub route_match: RouteMatch,
    pub policy: Policy,
    pub backends: Vec<ResolvedBackend>,
    pub allow: Option<Vec<SpiffeId>>,
    /// The route policy's mirror with its service's endpoints.
    pub mirror: Option<ResolvedMirror>,
    pub own_rate_limit: bool,
}

/// A mirror with the endpoints of the service that gets the copies (re-sent whenever
/// they change, as a weighted backend's are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMirror {
    pub service: String,
    pub percent: Percent,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBackend {
    pub service: String,
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
}

/// A service's join token. Never printed; compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(Option<String>);

impl JoinToken {
    pub fn new(token: String) -> Self {
        Self(Some(token))
    }

    /// No join token: a Kubernetes Service, whose pods prove their ServiceAccount instead.
    /// Matches nothing.
    pub fn none() -> Self {
        Self(None)
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|token| token.as_bytes().ct_eq(presented.as_bytes()).into())
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
            addresses: AddressIndex::default(),
            cluster: None,
        }
    }

    /// A mesh of `services`, with its addresses indexed; refused when an address would
    /// name two things or a virtual address goes nowhere. `version` is left at 0 for the
    /// caller to set.
    pub fn new(
        trust_domain: &str,
        services: BTreeMap<String, ServiceModel>,
    ) -> Result<Self, AddressError> {
        let addresses = AddressIndex::build(&services)?;
        Ok(Self {
            version: 0,
            trust_domain: trust_domain.to_owned(),
            services,
            addresses,
            cluster: None,
        })
    }

    /// A Kubernetes mesh of `services`: as [`new`](Self::new), except that an instance
    /// address two services claim (Services selecting the same pods) names the first by
    /// name, the other claims returned; names resolve as `cluster` says.
    pub fn for_cluster(
        trust_domain: &str,
        services: BTreeMap<String, ServiceModel>,
        cluster: ClusterNaming,
    ) -> Result<(Self, Vec<AddressError>), AddressError> {
        let (addresses, shared) = AddressIndex::build_sharing(&services, true)?;
        let model = Self {
            version: 0,
            trust_domain: trust_domain.to_owned(),
            services,
            addresses,
            cluster: Some(Arc::new(cluster)),
        };
        Ok((model, shared))
    }

    /// The Kubernetes naming, when the mesh comes from a cluster.
    pub fn cluster(&self) -> Option<&ClusterNaming> {
        self.cluster.as_deref()
    }

    /// Whether `other` serves what this model does (all but the version).
    pub fn serves_as(&self, other: &Self) -> bool {
        self.services == other.services && self.cluster == other.cluster
    }

    /// Every service, by name.
    pub fn services(&self) -> &BTreeMap<String, ServiceModel> {
        &self.services
    }
}

#[cfg(test)]
mod tests;
