//! The services `seamctl inject` writes: the control plane, and for each meshed service
//! `<app>` its sidecar `<app>-seam`, which owns the network namespace the app joins. Both
//! carry the label [`ROLE_LABEL`], which is how a second run knows them for its own.

use super::Profile;
use super::yaml::{Mapping, Yaml};

/// The label on every service inject writes: `sidecar` or `control-plane`.
pub const ROLE_LABEL: &str = "seam.inject.role";
pub const CONTROL_PLANE: &str = "seam-control-plane";
const IMAGE: &str = "${SEAM_IMAGE:-seam:dev}";
const STATE_DIR: &str = "${SEAM_STATE_DIR:-./seam-state}";
/// The directory of the mesh file (`mesh.yaml`), relative to the compose file inject writes.
const SEAM_DIR: &str = "./seam";
/// Where the join tokens are, relative to the compose file inject writes.
pub const SECRETS_DIR: &str = "./seam/secrets";
/// The proxy's listeners in a sidecar (its admin answers the health check).
const INBOUND: &str = "0.0.0.0:4143";
const OUTBOUND: &str = "127.0.0.1:4140";
const PROXY_ADMIN: &str = "0.0.0.0:4191";
/// Who may open `/tap` on a sidecar's admin listener: anyone who reaches it, which is the
/// project's networks and the Docker host (inject never publishes 4191), so that the host's
/// `seamctl tap` and the control plane's dashboard can.
const TAP_ALLOW: &str = "0.0.0.0/0";
/// The port endpoints name: the proxy's inbound listener.
pub const INBOUND_PORT: u16 = 4143;

/// Keys that belong to a network namespace: docker refuses them on a container that joins
/// another's, so they move from the app to its sidecar as written.
pub const NAMESPACE_KEYS: [&str; 11] = [
    "ports",
    "expose",
    "networks",
    "hostname",
    "domainname",
    "dns",
    "dns_opt",
    "dns_search",
    "extra_hosts",
    "mac_address",
    "links",
];

/// The sidecar's service name.
pub fn name_of(app: &str) -> String {
    format!("{app}-seam")
}

/// The compose secret holding `app`'s join token.
pub fn secret_of(app: &str) -> String {
    format!("seam-token-{app}")
}

/// The role label of a service, if inject wrote it.
pub fn role(service: &Mapping) -> Option<&str> {
    service.get("labels")?.as_map()?.get(ROLE_LABEL)?.as_str()
}

/// What a sidecar is made from.
pub struct SidecarSpec<'a> {
    pub app: &'a str,
    /// The app's namespace keys ([`NAMESPACE_KEYS`]), as written.
    pub namespace: Mapping,
    /// The port `--app` names: where requests addressed to the proxy go.
    pub app_port: Option<u16>,
    pub profile: Profile,
    /// The app's compose `profiles`, which its sidecar shares: they start together.
    pub compose_profiles: Option<Yaml>,
}

/// The sidecar service of `spec.app`.
pub fn sidecar(spec: SidecarSpec<'_>) -> Mapping {
    let SidecarSpec {
        app,
        mut namespace,
        app_port,
        profile,
        compose_profiles,
    } = spec;
    let mut service = Mapping::new();
    service.insert("image", Yaml::str(IMAGE));
    service.insert("command", Yaml::Seq(pod_command(app, app_port, profile)));
    if profile == Profile::Transparent {
        service.insert("cap_add", Yaml::strs(["NET_ADMIN"]));
    }
    add_alias(&mut namespace, app);
    for key in NAMESPACE_KEYS {
        if let Some(value) = namespace.remove(key) {
            service.insert(key, value);
        }
    }
    if let Some(compose_profiles) = compose_profiles {
        service.insert("profiles", compose_profiles);
    }
    service.insert("secrets", Yaml::strs([secret_of(app).as_str()]));
    service.insert(
        "volumes",
        // The trust bundle only: the state directory also holds the CA's key.
        Yaml::strs([format!("{STATE_DIR}/trust:/var/lib/seam-trust:ro").as_str()]),
    );
    service.insert("depends_on", depends_on_control_plane());
    service.insert("healthcheck", health_check("127.0.0.1:4191"));
    service.insert("restart", Yaml::str("unless-stopped"));
    service.insert("labels", role_labels("sidecar"));
    service
}

/// `seamctl pod`: init first in the transparent profile, then the proxy, restarted in place.
fn pod_command(app: &str, app_port: Option<u16>, profile: Profile) -> Vec<Yaml> {
    let mut command = vec!["seamctl".to_owned(), "pod".to_owned()];
    if profile == Profile::Transparent {
        command.push("--transparent".to_owned());
    }
    let secret = secret_of(app);
    command.extend(
        [
            "--trust-anchors",
            "/var/lib/seam-trust/ca.pem",
            "--join-token-file",
            &format!("/run/secrets/{secret}"),
            "--",
            "--service",
            app,
            "--control-plane",
            &format!("{CONTROL_PLANE}:8443"),
            "--inbound",
            INBOUND,
            "--outbound",
            OUTBOUND,
            "--admin",
            PROXY_ADMIN,
            "--tap-allow",
            TAP_ALLOW,
        ]
        .map(str::to_owned),
    );
    if let Some(port) = app_port {
        command.extend(["--app".to_owned(), format!("127.0.0.1:{port}")]);
    }
    command.into_iter().map(Yaml::Str).collect()
}

/// Puts `app` among the aliases of every network the sidecar joins (the default network
/// when it names none), so other services reach `app` by name at the sidecar.
fn add_alias(namespace: &mut Mapping, app: &str) {
    let networks = match namespace.remove("networks") {
        Some(Yaml::Seq(names)) => {
            let mut networks = Mapping::new();
            for name in names.iter().filter_map(Yaml::as_str) {
                networks.insert(name, Yaml::Null);
            }
            networks
        }
        Some(Yaml::Map(networks)) => networks,
        _ => {
            let mut networks = Mapping::new();
            networks.insert("default", Yaml::Null);
            networks
        }
    };
    let mut aliased = Mapping::new();
    for (name, settings) in networks.entries() {
        let mut settings = settings.as_map().cloned().unwrap_or_default();
        let aliases = match settings.remove("aliases") {
            Some(Yaml::Seq(aliases)) => aliases,
            _ => Vec::new(),
        };
        let mut aliases = aliases;
        if !aliases.iter().any(|alias| alias.as_str() == Some(app)) {
            aliases.push(Yaml::str(app));
        }
        settings.insert("aliases", Yaml::Seq(aliases));
        aliased.insert(name, Yaml::Map(settings));
    }
    namespace.insert("networks", Yaml::Map(aliased));
}

/// The networks a sidecar joins, by name.
pub fn networks_of(sidecar: &Mapping) -> Vec<String> {
    sidecar
        .get("networks")
        .and_then(Yaml::as_map)
        .map(|networks| networks.keys().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The control plane service, on `networks` (every network a sidecar is on, so that
/// every proxy reaches it and it resolves every sidecar's name).
pub fn control_plane(networks: &[String]) -> Mapping {
    let mut service = Mapping::new();
    service.insert("image", Yaml::str(IMAGE));
    service.insert(
        "command",
        Yaml::strs([
            "seam-control-plane",
            "--mesh-file",
            "/etc/seam/mesh.yaml",
            "--listen",
            "0.0.0.0:8443",
            "--admin",
            "0.0.0.0:9990",
            "--state-dir",
            "/var/lib/seam",
            "--publish-trust-bundle",
            "/var/lib/seam/trust/ca.pem",
        ]),
    );
    // The directory, not the file: a file mounted alone is the inode it was when the
    // container started, so the control plane would never see a later run's mesh file
    // (written aside and renamed over), nor be told of any change.
    service.insert(
        "volumes",
        Yaml::strs([
            format!("{SEAM_DIR}:/etc/seam:ro").as_str(),
            format!("{STATE_DIR}:/var/lib/seam").as_str(),
        ]),
    );
    service.insert(
        "ports",
        Yaml::strs(["127.0.0.1:${SEAM_ADMIN_PORT:-9990}:9990"]),
    );
    if networks.iter().any(|name| name != "default") {
        service.insert("networks", Yaml::strs(networks.iter().map(String::as_str)));
    }
    service.insert("healthcheck", health_check("127.0.0.1:9990"));
    service.insert("restart", Yaml::str("unless-stopped"));
    service.insert("labels", role_labels("control-plane"));
    service
}

/// The image has no shell: `seamctl ready` asks an admin listener's `/ready`.
fn health_check(admin: &str) -> Yaml {
    let mut check = Mapping::new();
    check.insert("test", Yaml::strs(["CMD", "seamctl", "ready", admin]));
    check.insert("interval", Yaml::str("2s"));
    check.insert("timeout", Yaml::str("5s"));
    check.insert("retries", Yaml::Int(30));
    Yaml::Map(check)
}

fn depends_on_control_plane() -> Yaml {
    let mut depends_on = Mapping::new();
    depends_on.insert(CONTROL_PLANE, healthy());
    Yaml::Map(depends_on)
}

/// `{ condition: service_healthy }`.
pub fn healthy() -> Yaml {
    let mut condition = Mapping::new();
    condition.insert("condition", Yaml::str("service_healthy"));
    Yaml::Map(condition)
}

fn role_labels(role: &str) -> Yaml {
    let mut labels = Mapping::new();
    labels.insert(ROLE_LABEL, Yaml::str(role));
    Yaml::Map(labels)
}
