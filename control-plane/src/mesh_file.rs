//! Reading mesh file v1 (YAML) into a [`MeshModel`]. Every refusal, of syntax or of
//! meaning, names the file, the line and the reason, in Seam's words ([`wording`] turns
//! the YAML library's errors into them). The request-handling keys of services and
//! routes are read in [`policy`] (`fault` and `mirror` in [`traffic`]), the addressing
//! keys (endpoints, ports, virtual addresses, opaque ports) in [`addressing`]. A file is read into a [`MeshSpec`]; the
//! model is the spec with the current addresses of its `dns:` endpoints filled in
//! ([`MeshSpec::model`], a pure function), so a file is checked once and its model
//! rebuilt whenever a name's addresses change.

mod addressing;
mod block;
mod policy;
mod rate_limit;
mod traffic;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use seam_proto::SpiffeId;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use block::{BlockScope, PolicyBlock, parse_policy_block};

use crate::model::{
    Authorization, DnsName, Endpoint, FILE_NAMESPACE, JoinToken, MeshModel, Policy, Resolutions,
    ServiceModel,
};

/// Why a mesh file was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshFileError {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    pub column: u64,
    pub reason: String,
}

impl fmt::Display for MeshFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.line {
            0 => write!(f, "{path}: {}", self.reason),
            line => write!(f, "{path}:{line}:{}: {}", self.column, self.reason),
        }
    }
}

impl std::error::Error for MeshFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFileV1 {
    trust_domain: Option<Spanned<String>>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<ServiceSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    join_token: Spanned<String>,
    #[serde(default)]
    endpoints: Vec<Spanned<String>>,
    /// Ports every instance serves, and how a virtual address's ports map to them.
    #[serde(default)]
    ports: Vec<Spanned<addressing::PortSpec>>,
    /// Virtual addresses (IP:port), whose connections go to any instance.
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    /// Instance ports carrying opaque TCP; absent means the default list.
    opaque_ports: Option<Vec<Spanned<u16>>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<policy::RetriesSpec>>,
    circuit_breaker: Option<Spanned<policy::BreakerSpec>>,
    max_concurrent_requests: Option<Spanned<u32>>,
    load_balancer: Option<Spanned<String>>,
    fault: Option<Spanned<traffic::FaultSpec>>,
    mirror: Option<Spanned<traffic::MirrorSpec>>,
    #[serde(default)]
    routes: Vec<Spanned<policy::RouteSpec>>,
    /// Who may call: service names or SPIFFE ids; absent means any mesh identity.
    allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    allow_plaintext: bool,
    /// Requests per second for the whole service, shared among its instances.
    rate_limit: Option<Spanned<rate_limit::RateLimitSpec>>,
    /// `false`: no `x-request-id` added or checked on calls to this service.
    request_id: Option<bool>,
}

/// An accepted mesh file: its services with the endpoints listed as IP:port, their
/// `dns:` entries still names, and where each entry is written.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    path: PathBuf,
    trust_domain: String,
    services: BTreeMap<String, ServiceModel>,
    written: BTreeMap<String, addressing::Written>,
}

impl MeshSpec {
    /// Every DNS name the file's `dns:` endpoints use.
    pub fn names(&self) -> BTreeSet<DnsName> {
        self.services
            .values()
            .flat_map(|service| &service.named_endpoints)
            .map(|named| named.name.clone())
            .collect()
    }

    /// The model of this file when its names resolve as `resolutions` says: each address
    /// of a `dns:` entry's name becomes an endpoint at the entry's port, after the
    /// endpoints listed as IP:port, skipping addresses the service already has. Refused
    /// (at the entry) when a resolved address is another service's. `version` is left at
    /// 0 for the caller to set.
    pub fn model(&self, resolutions: &Resolutions) -> Result<MeshModel, MeshFileError> {
        let mut services = self.services.clone();
        let mut written = self.written.clone();
        for service in services.values_mut() {
            let Some(at) = written.get_mut(&service.name) else {
                continue;
            };
            let identity = SpiffeId::workload(&self.trust_domain, FILE_NAMESPACE, &service.name)
                .expect("the file's service names were checked");
            for (index, named) in service.named_endpoints.iter().enumerate() {
                for &ip in resolutions.get(&named.name).into_iter().flatten() {
                    let address = std::net::SocketAddr::new(ip, named.port);
                    if service.endpoints.iter().any(|seen| seen.address == address) {
                        continue;
                    }
                    at.resolved(index, address);
                    service.endpoints.push(Endpoint {
                        address,
                        identity: Some(identity.clone()),
                    });
                }
            }
        }
        MeshModel::new(&self.trust_domain, services).map_err(|err| {
            let (line, column) = addressing::locate(&err, &written)
                .map_or((0, 0), |location| (location.line(), location.column()));
            MeshFileError {
                path: self.path.clone(),
                line,
                column,
                reason: err.to_string(),
            }
        })
    }
}

/// Reads and parses the mesh file at `path`.
pub fn load(path: &Path, trust_domain: &str) -> Result<MeshSpec, MeshFileError> {
    let text = std::fs::read_to_string(path).map_err(|err| MeshFileError {
        path: path.to_owned(),
        line: 0,
        column: 0,
        reason: format!("cannot read the mesh file: {err}"),
    })?;
    parse_spec(path, &text, trust_domain)
}

/// Parses mesh file text into its model with no `dns:` name resolved yet.
pub fn parse(path: &Path, text: &str, trust_domain: &str) -> Result<MeshModel, MeshFileError> {
    parse_spec(path, text, trust_domain)?.model(&Resolutions::new())
}

/// Parses mesh file text. `trust_domain` is the control plane's own (its CA's): a file may
/// repeat it but not change it. The file's own addresses are checked here (its model with
/// no name resolved must be valid).
pub fn parse_spec(path: &Path, text: &str, trust_domain: &str) -> Result<MeshSpec, MeshFileError> {
    let at = |line: u64, column: u64, reason: String| MeshFileError {
        path: path.to_owned(),
        line,
        column,
        reason,
    };
    let spanned_error = |location: serde_saphyr::Location, reason: String| {
        at(location.line(), location.column(), reason)
    };
    let file: MeshFileV1 = if text.trim().is_empty() {
        return Err(at(0, 0, "the mesh file is empty".into()));
    } else {
        let mut key_path = String::new();
        serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize(de).map_err(|err| {
                key_path = err.path().to_string();
                err.into_inner()
            })
        })
        .map_err(|err| {
            let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
            at(line, column, wording::describe(&err, &key_path, text))
        })?
    };

    if let Some(declared) = &file.trust_domain
        && declared.value != trust_domain
    {
        return Err(spanned_error(
            declared.referenced,
            format!(
                "trust_domain {:?} differs from the control plane's trust domain {trust_domain:?} \
                 (changing it needs a new CA: use --trust-domain and a new --state-dir)",
                declared.value
            ),
        ));
    }

    let mut services = BTreeMap::new();
    let mut written = BTreeMap::new();
    let names: HashSet<String> = file.services.keys().cloned().collect();
    for (name, spec) in file.services {
        let location = spec.referenced;
        let spec = spec.value;
        if let Err(why) = check_service_name(&name) {
            return Err(spanned_error(
                location,
                format!("service name {name:?} {why}"),
            ));
        }
        if spec.join_token.value.trim().is_empty() {
            return Err(spanned_error(
                spec.join_token.referenced,
                format!("service {name:?} has an empty join_token"),
            ));
        }
        let identity = SpiffeId::workload(trust_domain, FILE_NAMESPACE, &name)
            .map_err(|err| spanned_error(location, err.to_string()))?;
        let refused = |(location, reason): policy::Refusal| spanned_error(location, reason);
        let addressing = addressing::read(
            &name,
            location,
            &identity,
            addressing::AddressingSpec {
                endpoints: spec.endpoints,
                ports: spec.ports,
                addresses: spec.addresses,
                opaque_ports: spec.opaque_ports,
            },
        )
        .map_err(refused)?;
        written.insert(name.clone(), addressing.written);
        let mut service_policy = policy::apply(
            &Policy::default(),
            policy::PolicyFields {
                timeout: spec.timeout,
                retries: spec.retries,
                circuit_breaker: spec.circuit_breaker,
                max_concurrent_requests: spec.max_concurrent_requests,
                load_balancer: spec.load_balancer,
                fault: spec.fault,
                mirror: spec.mirror,
            },
            &policy::Scope {
                service: &name,
                services: &names,
            },
        )
        .map_err(refused)?;
        if let Some(limit) = spec.rate_limit {
            service_policy.rate_limit =
                Some(rate_limit::read(&name, limit, &names, trust_domain).map_err(refused)?);
        }
        let routes = spec
            .routes
            .into_iter()
            .map(|route| policy::route(&name, &service_policy, route, &names, trust_domain))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        let allow = match &spec.allow {
            Some(entries) => Some(
                allow::resolve(&name, entries, &names, trust_domain)
                    .map_err(|err| spanned_error(err.location, err.reason))?,
            ),
            None => None,
        };
        services.insert(
            name.clone(),
            ServiceModel {
                name,
                join_token: JoinToken::new(spec.join_token.value),
                endpoints: addressing.endpoints,
                named_endpoints: addressing.named_endpoints,
                ports: addressing.ports,
                addresses: addressing.addresses,
                opaque_ports: addressing.opaque_ports,
                policy: service_policy,
                routes,
                authorization: Authorization {
                    allow,
                    allow_plaintext: spec.allow_plaintext,
                },
                request_id_off: spec.request_id == Some(false),
            },
        );
    }
    let spec = MeshSpec {
        path: path.to_owned(),
        trust_domain: trust_domain.to_owned(),
        services,
        written,
    };
    spec.model(&Resolutions::new())?;
    Ok(spec)
}

/// Service names are DNS labels, so they work as hostnames and SPIFFE path segments.
pub(crate) fn check_service_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only lowercase letters, digits and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return Err("must start with a letter and not end with '-'");
    }
    Ok(())
}

mod allow;
pub(crate) mod wording;

#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
