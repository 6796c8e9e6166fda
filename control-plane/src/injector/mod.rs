//! Sidecar injection, shared by the admission webhook and `seamctl inject`: pure functions
//! that look at a pod (or a workload's pod template) and either leave it alone, with the
//! reason, or say what to add to it, as JSON-patch `add` operations relative to the pod.
//! [`annotations`] reads the `seam.io/*` annotations, [`pod`] builds the containers and
//! volumes, [`probes`] lists the app's probe paths the proxy must let through,
//! [`workloads`] finds the pod templates inside every workload kind.

pub mod annotations;
pub mod pod;
pub mod probes;
pub mod workloads;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use annotations::{Annotations, BadAnnotation, InjectChoice};

/// Sidecars of other meshes: a pod never gets two proxies.
const OTHER_MESH_SIDECARS: [&str; 2] = ["istio-proxy", "linkerd-proxy"];
/// The namespace label that enables injection for every pod in the namespace.
pub const NAMESPACE_LABEL: &str = "seam.io/inject";

/// How pods are injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image holding `seam-proxy` and `seamctl`.
    pub image: String,
    /// Where proxies reach the control plane's gRPC API.
    pub control_plane: String,
    /// Native sidecars (Kubernetes 1.29+) unless a pod's annotation says otherwise.
    pub native_sidecar: bool,
    /// Written in `seam.io/injected`.
    pub version: String,
}

pub const DEFAULT_IMAGE: &str = "seam:dev";
pub const DEFAULT_CONTROL_PLANE: &str = "seam-control-plane.seam-system.svc:8443";

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_owned(),
            control_plane: DEFAULT_CONTROL_PLANE.to_owned(),
            native_sidecar: true,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// A pod, or a workload's pod template, to decide about.
pub struct PodInput<'a> {
    pub meta: &'a ObjectMeta,
    pub spec: &'a PodSpec,
    /// The workload's name: the proxy's service name unless `seam.io/service` says otherwise.
    pub workload: &'a str,
    /// The namespace asks for injection (its label `seam.io/inject=enabled`).
    pub namespace_enabled: bool,
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// It already has a `seam-proxy` container: injecting again would change nothing.
    AlreadyInjected,
    /// `seam.io/inject: disabled`.
    OptedOut,
    /// Neither its namespace nor its own annotation asks for injection.
    NotEnabled,
    /// It shares the node's network namespace: iptables there would capture the node's traffic.
    HostNetwork,
    /// It carries another mesh's sidecar.
    OtherMesh(String),
}

impl SkipReason {
    /// Whether the user should be told (a warning and `seam.io/inject-skipped`): the pod
    /// asked for, or was expected to get, a sidecar it did not get.
    pub fn is_notable(&self) -> bool {
        matches!(
            self,
            Self::OptedOut | Self::HostNetwork | Self::OtherMesh(_)
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyInjected => f.write_str("already has a seam-proxy container"),
            Self::OptedOut => f.write_str("opted out with seam.io/inject: disabled"),
            Self::NotEnabled => f.write_str(
                "neither the namespace label seam.io/inject=enabled nor the pod annotation \
                 seam.io/inject: enabled asks for injection",
            ),
            Self::HostNetwork => f.write_str("hostNetwork pods share the node's network"),
            Self::OtherMesh(name) => write!(f, "already has another mesh's sidecar {name}"),
        }
    }
}

/// One JSON-patch `add`: `path` (tokens, unescaped) relative to the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Addition {
    pub path: Vec<String>,
    pub value: Value,
}

impl Addition {
    fn new(path: &[&str], value: Value) -> Self {
        Self {
            path: path.iter().map(|token| (*token).to_owned()).collect(),
            value,
        }
    }
}

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Inject(Vec<Addition>),
    Skip(SkipReason),
}

/// Decides about `pod`: leave it alone (and why), or what to add. A bad `seam.io/*`
/// annotation is an error: the pod asked for something that cannot be done.
pub fn decide(pod: &PodInput<'_>, settings: &Settings) -> Result<Decision, BadAnnotation> {
    let empty = BTreeMap::new();
    let annotations = Annotations(pod.meta.annotations.as_ref().unwrap_or(&empty));
    let spec = pod.spec;
    let names = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|container| container.name.as_str())
    };
    if names().any(|name| name == pod::PROXY_CONTAINER) {
        return Ok(Decision::Skip(SkipReason::AlreadyInjected));
    }
    match annotations.inject()? {
        InjectChoice::Disabled => return Ok(Decision::Skip(SkipReason::OptedOut)),
        InjectChoice::Unset if !pod.namespace_enabled => {
            return Ok(Decision::Skip(SkipReason::NotEnabled));
        }
        InjectChoice::Unset | InjectChoice::Enabled => {}
    }
    if spec.host_network == Some(true) {
        return Ok(Decision::Skip(SkipReason::HostNetwork));
    }
    if let Some(other) = names().find(|name| OTHER_MESH_SIDECARS.contains(name)) {
        return Ok(Decision::Skip(SkipReason::OtherMesh(other.to_owned())));
    }
    let native = annotations
        .native_sidecar()?
        .unwrap_or(settings.native_sidecar);
    let resources = pod::Resources {
        cpu_request: annotations
            .quantity(annotations::PROXY_CPU_REQUEST, pod::DEFAULT_CPU_REQUEST)?,
        memory_request: annotations.quantity(
            annotations::PROXY_MEMORY_REQUEST,
            pod::DEFAULT_MEMORY_REQUEST,
        )?,
        cpu_limit: annotations.quantity(annotations::PROXY_CPU_LIMIT, pod::DEFAULT_CPU_LIMIT)?,
        memory_limit: annotations
            .quantity(annotations::PROXY_MEMORY_LIMIT, pod::DEFAULT_MEMORY_LIMIT)?,
    };
    let init = pod::init_container(
        settings,
        annotations
            .ports(annotations::SKIP_INBOUND_PORTS)?
            .as_deref(),
        annotations
            .ports(annotations::SKIP_OUTBOUND_PORTS)?
            .as_deref(),
    );
    let service = annotations.service().unwrap_or(pod.workload);
    let probe_paths = probes::probe_paths(spec);
    let proxy = pod::proxy_container(
        settings,
        service,
        &resources,
        native,
        probe_paths.as_deref(),
    );

    let mut additions = Vec::new();
    let has_inits = spec.init_containers.is_some();
    if native {
        // seam-init and the proxy first, so that the pod's own init containers already
        // have the mesh (and the network) when they run.
        prepend(
            &mut additions,
            &["spec", "initContainers"],
            has_inits,
            vec![json(&init), json(&proxy)],
        );
    } else {
        // No proxy runs during a classic pod's init phase: seam-init goes last, so that
        // the pod's own init containers are not redirected to a proxy that is not there
        // yet. The proxy goes first among the containers: the kubelet starts them in order
        // and runs its postStart hook (wait for /ready) before the next.
        if has_inits {
            additions.push(Addition::new(&["spec", "initContainers", "-"], json(&init)));
        } else {
            prepend(
                &mut additions,
                &["spec", "initContainers"],
                false,
                vec![json(&init)],
            );
        }
        prepend(
            &mut additions,
            &["spec", "containers"],
            true,
            vec![json(&proxy)],
        );
    }
    let volumes: Vec<Value> = pod::volumes().iter().map(json).collect();
    if spec.volumes.is_some() {
        for volume in volumes {
            additions.push(Addition::new(&["spec", "volumes", "-"], volume));
        }
    } else {
        additions.push(Addition::new(&["spec", "volumes"], Value::Array(volumes)));
    }
    additions.push(annotation(
        pod.meta,
        annotations::INJECTED,
        &settings.version,
    ));
    Ok(Decision::Inject(additions))
}

fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("k8s-openapi types serialize to JSON")
}

/// Adds `items` at the front of the list at `path`, or makes the list.
fn prepend(additions: &mut Vec<Addition>, path: &[&str], exists: bool, items: Vec<Value>) {
    if !exists {
        additions.push(Addition::new(path, Value::Array(items)));
        return;
    }
    for (index, item) in items.into_iter().enumerate() {
        let index = index.to_string();
        let mut at = path.to_vec();
        at.push(&index);
        additions.push(Addition::new(&at, item));
    }
}

/// Sets annotation `name` on a pod with metadata `meta`.
pub fn annotation(meta: &ObjectMeta, name: &str, value: &str) -> Addition {
    if meta.annotations.is_some() {
        Addition::new(&["metadata", "annotations", name], Value::from(value))
    } else {
        Addition::new(
            &["metadata", "annotations"],
            serde_json::json!({ name: value }),
        )
    }
}

/// The additions as a JSON patch, each path under `prefix` (a workload's pod template).
pub fn to_patch(prefix: &[String], additions: &[Addition]) -> json_patch::Patch {
    json_patch::Patch(
        additions
            .iter()
            .map(|addition| {
                json_patch::PatchOperation::Add(json_patch::AddOperation {
                    path: json_patch::jsonptr::PointerBuf::from_tokens(
                        prefix.iter().chain(&addition.path).map(String::as_str),
                    ),
                    value: addition.value.clone(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod typed;
