//! What injection adds to a pod spec: the `seam-init` init container (iptables, via
//! `seam-proxy init`), the `seam-proxy` sidecar (native: an init container with
//! `restartPolicy: Always`; classic: `containers[0]`, holding the app's start with a
//! `postStart` hook until the proxy is ready), and the two volumes the proxy reads: its
//! projected ServiceAccount token and the mesh's trust bundle.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Settings;

pub const INIT_CONTAINER: &str = "seam-init";
pub const PROXY_CONTAINER: &str = "seam-proxy";
pub const TOKEN_VOLUME: &str = "seam-token";
pub const TRUST_VOLUME: &str = "seam-trust-bundle";
/// A writable `/run` for `seam-init`, whose root filesystem is read-only: legacy iptables
/// takes its lock at `/run/xtables.lock`.
pub const XTABLES_VOLUME: &str = "seam-xtables-lock";
/// The ConfigMap the control plane writes into every namespace, and its key.
pub const TRUST_CONFIG_MAP: &str = "seam-trust-bundle";
const TRUST_KEY: &str = "ca.pem";
const TOKEN_DIR: &str = "/var/run/secrets/seam/token";
const TRUST_DIR: &str = "/var/run/seam/trust";
/// The audience the control plane's TokenReview asks for.
pub const TOKEN_AUDIENCE: &str = "seam";
/// The token's lifetime; the kubelet refreshes it at 80% and the proxy re-reads the file.
const TOKEN_SECONDS: i64 = 3600;
/// The proxy's user id: `seam-proxy init` never redirects this user's own connections.
pub const PROXY_UID: i64 = 2102;
/// The proxy's admin port: `/ready`, `/live`, `/shutdown`; never redirected.
pub const ADMIN_PORT: i32 = 4191;
const INBOUND_PORT: &str = "4143";
const OUTBOUND_PORT: &str = "4140";
/// How long the proxy gets to become ready (`/ready`: first certificate and config).
const STARTUP_SECONDS: i32 = 120;

/// Defaults of the proxy's resources, when no annotation says otherwise.
pub const DEFAULT_CPU_REQUEST: &str = "10m";
pub const DEFAULT_MEMORY_REQUEST: &str = "32Mi";
pub const DEFAULT_CPU_LIMIT: &str = "1";
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

/// The proxy's resources.
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

/// `seam-init`: installs the pod's iptables rules, then exits. iptables needs root and
/// NET_ADMIN/NET_RAW in the pod's network namespace; nothing else is granted.
pub fn init_container(
    settings: &Settings,
    skip_inbound: Option<&str>,
    skip_outbound: Option<&str>,
) -> Container {
    let mut args: Vec<String> = [
        "init",
        "--inbound-port",
        INBOUND_PORT,
        "--outbound-port",
        OUTBOUND_PORT,
        "--admin-port",
        &ADMIN_PORT.to_string(),
        "--proxy-uid",
        &PROXY_UID.to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    if let Some(ports) = skip_inbound {
        args.extend(["--skip-inbound-ports".to_owned(), ports.to_owned()]);
    }
    if let Some(ports) = skip_outbound {
        args.extend(["--skip-outbound-ports".to_owned(), ports.to_owned()]);
    }
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["seam-proxy".to_owned()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..SecurityContext::default()
        }),
        resources: Some(requirements("10m", "16Mi", "100m", "64Mi")),
        volume_mounts: Some(vec![VolumeMount {
            name: XTABLES_VOLUME.to_owned(),
            mount_path: "/run".to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// `seam-proxy`: the sidecar. `native` makes it an init container that keeps running
/// (`restartPolicy: Always`): the kubelet starts the app only once its startup probe
/// passes, and a Job's pod completes when its main containers exit. `probe_paths`: the
/// app's probes the proxy lets through in plaintext (`SEAM_PROBE_PATHS`, see `probes`).
pub fn proxy_container(
    settings: &Settings,
    service: &str,
    resources: &Resources,
    native: bool,
    probe_paths: Option<&str>,
) -> Container {
    let probe = |path: &str, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(if failures > 3 { 1 } else { 10 }),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    let from_field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(field(path)),
        ..EnvVar::default()
    };
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    // Order matters: `$(SEAM_...)` expands only variables defined earlier in the list.
    let mut env = vec![
        from_field("SEAM_NAMESPACE", "metadata.namespace"),
        from_field("SEAM_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        from_field("SEAM_POD_IP", "status.podIP"),
        value("SEAM_SERVICE", &format!("{service}.$(SEAM_NAMESPACE)")),
        value("SEAM_INBOUND_POLICY", "$(SEAM_POD_IP)"),
        value(
            "SEAM_SERVICE_ACCOUNT_TOKEN_FILE",
            &format!("{TOKEN_DIR}/token"),
        ),
        value("SEAM_TRUST_ANCHORS", &format!("{TRUST_DIR}/{TRUST_KEY}")),
        value("SEAM_CONTROL_PLANE", &settings.control_plane),
        // On all addresses so that the kubelet's probes reach /ready and /live.
        value("SEAM_ADMIN", &format!("0.0.0.0:{ADMIN_PORT}")),
    ];
    if let Some(paths) = probe_paths {
        env.push(value("SEAM_PROBE_PATHS", paths));
    }
    let (restart_policy, lifecycle) = if native {
        (Some("Always".to_owned()), None)
    } else {
        // A classic sidecar: the kubelet runs postStart before it starts the next
        // container, so the app waits for the proxy's /ready.
        let wait = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(
                    [
                        "seamctl",
                        "ready",
                        "--wait",
                        "--timeout",
                        &format!("{STARTUP_SECONDS}s"),
                        &format!("127.0.0.1:{ADMIN_PORT}"),
                    ]
                    .iter()
                    .map(|arg| (*arg).to_owned())
                    .collect(),
                ),
            }),
            ..LifecycleHandler::default()
        };
        (
            None,
            Some(Lifecycle {
                post_start: Some(wait),
                ..Lifecycle::default()
            }),
        )
    };
    Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["seam-proxy".to_owned()]),
        // Named, so that scrapers and `kubectl port-forward` find them.
        ports: Some(vec![
            ContainerPort {
                name: Some("seam-inbound".to_owned()),
                container_port: INBOUND_PORT.parse().expect("a port number"),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("seam-admin".to_owned()),
                container_port: ADMIN_PORT,
                ..ContainerPort::default()
            },
        ]),
        env: Some(env),
        restart_policy,
        lifecycle,
        startup_probe: native.then(|| probe("/ready", STARTUP_SECONDS)),
        readiness_probe: Some(probe("/ready", 3)),
        liveness_probe: Some(probe("/live", 3)),
        resources: Some(requirements(
            &resources.cpu_request,
            &resources.memory_request,
            &resources.cpu_limit,
            &resources.memory_limit,
        )),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TRUST_VOLUME.to_owned(),
                mount_path: TRUST_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The volumes: the proxy's ServiceAccount token for audience `seam` (the proof it sends
/// to Certify) and the trust bundle ConfigMap; `seam-init`'s scratch `/run`.
pub fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "token".to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TRUST_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: TRUST_CONFIG_MAP.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: XTABLES_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]
}

fn requirements(
    cpu: &str,
    memory: &str,
    cpu_limit: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    let pair = |cpu: &str, memory: &str| {
        [
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ]
        .into_iter()
        .collect()
    };
    ResourceRequirements {
        requests: Some(pair(cpu, memory)),
        limits: Some(pair(cpu_limit, memory_limit)),
        ..ResourceRequirements::default()
    }
}
