//! One service's policy block on its own: the value of a Kubernetes Service's
//! `seam.io/policy` annotation, which is the YAML a service has in the mesh file minus
//! what the cluster itself says (endpoints, ports, addresses and routes, which come from
//! the Service, its EndpointSlices and HTTPRoutes) and the join token (pods prove their
//! ServiceAccount instead). Read by the mesh file's own code, so both say the same things
//! the same way; names in it are Kubernetes names (see [`parse_policy_block`]).

use std::collections::HashSet;
use std::path::PathBuf;

use seam_proto::{SpiffeId, defaults};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::{MeshFileError, policy, rate_limit, traffic, wording};
use crate::model::Policy;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBlockSpec {
    opaque_ports: Option<Vec<Spanned<u16>>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<policy::RetriesSpec>>,
    circuit_breaker: Option<Spanned<policy::BreakerSpec>>,
    max_concurrent_requests: Option<Spanned<u32>>,
    load_balancer: Option<Spanned<String>>,
    fault: Option<Spanned<traffic::FaultSpec>>,
    mirror: Option<Spanned<traffic::MirrorSpec>>,
    allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    allow_plaintext: bool,
    rate_limit: Option<Spanned<rate_limit::RateLimitSpec>>,
    request_id: Option<bool>,
    // Keys of the mesh file that have another home in a cluster: refused by name.
    join_token: Option<Spanned<IgnoredAny>>,
    endpoints: Option<Spanned<IgnoredAny>>,
    ports: Option<Spanned<IgnoredAny>>,
    addresses: Option<Spanned<IgnoredAny>>,
    routes: Option<Spanned<IgnoredAny>>,
}

/// A service's policy as its block says, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBlock {
    pub policy: Policy,
    pub opaque_ports: Vec<u16>,
    pub allow: Option<Vec<SpiffeId>>,
    pub allow_plaintext: bool,
    pub request_id_off: bool,
}

impl Default for PolicyBlock {
    /// The policy of a Service without the annotation.
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            opaque_ports: defaults::OPAQUE_PORTS.to_vec(),
            allow: None,
            allow_plaintext: false,
            request_id_off: false,
        }
    }
}

/// Whose block is read, and the names it may use.
pub struct BlockScope<'a> {
    /// Where the block is, for errors (`Service shop/web, annotation seam.io/policy`).
    pub origin: &'a str,
    /// The Service's name and namespace.
    pub name: &'a str,
    pub namespace: &'a str,
    /// Every Service of the mesh, as `NAME.NAMESPACE`.
    pub services: &'a HashSet<String>,
    pub trust_domain: &'a str,
}

/// Reads a policy block. A `mirror` names a Service as `name` (same namespace) or
/// `name.namespace`, and comes out as `NAME.NAMESPACE`. `allow` names ServiceAccounts:
/// `sa` (same namespace), `namespace/sa`, or a `spiffe://` id of the trust domain; a
/// rate limit's override names its callers by `spiffe://` id. A refusal gives the line
/// and column within the block.
pub fn parse_policy_block(
    text: &str,
    scope: &BlockScope<'_>,
) -> Result<PolicyBlock, MeshFileError> {
    let at = |line: u64, column: u64, reason: String| MeshFileError {
        path: PathBuf::from(scope.origin),
        line,
        column,
        reason,
    };
    let refused =
        |(location, reason): policy::Refusal| at(location.line(), location.column(), reason);
    if text.trim().is_empty() {
        return Ok(PolicyBlock::default());
    }
    let mut key_path = String::new();
    let spec: PolicyBlockSpec = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            key_path = err.path().to_string();
            err.into_inner()
        })
    })
    .map_err(|err| {
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        at(line, column, wording::describe(&err, &key_path, text))
    })?;
    let elsewhere = [
        (
            &spec.join_token,
            "join_token",
            "pods prove their ServiceAccount with a projected token instead",
        ),
        (
            &spec.endpoints,
            "endpoints",
            "they come from the Service's EndpointSlices",
        ),
        (&spec.ports, "ports", "they come from the Service's ports"),
        (
            &spec.addresses,
            "addresses",
            "they are the Service's ClusterIPs",
        ),
        (
            &spec.routes,
            "routes",
            "routes come from HTTPRoutes whose parentRefs name the Service",
        ),
    ];
    for (value, key, why) in elsewhere {
        if let Some(value) = value {
            let location = value.referenced;
            return Err(at(
                location.line(),
                location.column(),
                format!("{key} has no place in seam.io/policy: {why}"),
            ));
        }
    }

    let key = format!("{}.{}", scope.name, scope.namespace);
    // A mirror may name a Service of the same namespace by its bare name.
    let mut names: HashSet<String> = scope.services.clone();
    for service in scope.services {
        if let Some(bare) = service.strip_suffix(&format!(".{}", scope.namespace)) {
            names.insert(bare.to_owned());
        }
    }
    let mut policy = policy::apply(
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
            service: scope.name,
            services: &names,
        },
    )
    .map_err(refused)?;
    if let Some(mirror) = &mut policy.mirror {
        if !mirror.service.contains('.') {
            mirror.service = format!("{}.{}", mirror.service, scope.namespace);
        }
        if mirror.service == key {
            return Err(at(
                0,
                0,
                format!("{key:?} mirrors to itself; a mirror must be another service"),
            ));
        }
    }
    if let Some(limit) = spec.rate_limit {
        policy.rate_limit = Some(
            rate_limit::read(&key, limit, &HashSet::new(), scope.trust_domain).map_err(refused)?,
        );
    }
    let opaque_ports = match spec.opaque_ports {
        Some(listed) => {
            let mut ports = std::collections::BTreeSet::new();
            for port in listed {
                if port.value == 0 {
                    return Err(refused((
                        port.referenced,
                        "opaque_ports has 0; expected a port from 1 to 65535".to_owned(),
                    )));
                }
                ports.insert(port.value);
            }
            ports.into_iter().collect()
        }
        None => defaults::OPAQUE_PORTS.to_vec(),
    };
    let allow = spec
        .allow
        .map(|entries| service_accounts(&entries, scope))
        .transpose()?;
    Ok(PolicyBlock {
        policy,
        opaque_ports,
        allow,
        allow_plaintext: spec.allow_plaintext,
        request_id_off: spec.request_id == Some(false),
    })
}

/// The `allow` entries as SPIFFE ids, in the order written and without repeats.
fn service_accounts(
    entries: &[Spanned<String>],
    scope: &BlockScope<'_>,
) -> Result<Vec<SpiffeId>, MeshFileError> {
    let mut allowed: Vec<SpiffeId> = Vec::with_capacity(entries.len());
    for entry in entries {
        let refuse = |reason: String| MeshFileError {
            path: PathBuf::from(scope.origin),
            line: entry.referenced.line(),
            column: entry.referenced.column(),
            reason,
        };
        let text = entry.value.trim();
        let id = if text.starts_with("spiffe://") {
            let id: SpiffeId = text
                .parse()
                .map_err(|err: seam_proto::SpiffeIdError| refuse(format!("allow: {err}")))?;
            if id.trust_domain() != scope.trust_domain {
                return Err(refuse(format!(
                    "allow names {id}, outside trust domain {:?}: no caller could ever prove it",
                    scope.trust_domain
                )));
            }
            id
        } else {
            let (namespace, account) = text.split_once('/').unwrap_or((scope.namespace, text));
            if !is_object_name(namespace) || !is_object_name(account) {
                return Err(refuse(format!(
                    "allow has {text:?}; expected a ServiceAccount as NAME (this namespace), \
                     NAMESPACE/NAME, or a spiffe:// id"
                )));
            }
            SpiffeId::workload(scope.trust_domain, namespace, account)
                .map_err(|err| refuse(format!("allow: {err}")))?
        };
        if !allowed.contains(&id) {
            allowed.push(id);
        }
    }
    Ok(allowed)
}

/// A Kubernetes object name (a DNS-1123 subdomain: lowercase letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, at most 253 characters).
fn is_object_name(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
}
