//! Planning a meshed compose file from a compose file: which services are meshed, what
//! each one's sidecar is, what moves from the app to its sidecar, and what refuses
//! meshing (replicas, a network namespace the service does not own, a name clash). Pure:
//! a document in, a document and the mesh's services out, so it is tested on small YAML.
//!
//! A second run must change nothing, so a meshed file is read as what it came from: a
//! service whose sidecar inject wrote gets the namespace keys back from that sidecar,
//! and the services inject wrote are written anew.

use std::collections::HashMap;

use super::Profile;
use super::ports;
use super::sidecar::{self, CONTROL_PLANE, NAMESPACE_KEYS, SECRETS_DIR, SidecarSpec};
use super::yaml::{Mapping, Yaml};
use crate::mesh_file::check_service_name;

/// Environment of an app in the explicit profile: its HTTP goes to the proxy's outbound.
const PROXY_ENVIRONMENT: [(&str, &str); 4] = [
    ("HTTP_PROXY", "http://127.0.0.1:4140"),
    ("http_proxy", "http://127.0.0.1:4140"),
    ("NO_PROXY", "localhost,127.0.0.1"),
    ("no_proxy", "localhost,127.0.0.1"),
];

/// What the user asked for.
pub struct Options<'a> {
    /// Services left out of the mesh, copied as they are.
    pub skip: &'a [String],
    pub profile: Profile,
}

/// The meshed compose document and the services of the mesh.
#[derive(Debug)]
pub struct Plan {
    pub compose: Mapping,
    pub meshed: Vec<MeshedService>,
}

/// One meshed service, as the mesh file needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct MeshedService {
    pub name: String,
    /// The TCP ports its app serves.
    pub ports: Vec<u16>,
    /// It publishes ports on the host, whose clients are outside the mesh.
    pub published: bool,
}

/// Why the file cannot be meshed as asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("service {service:?}: {reason}")]
    Service { service: String, reason: String },
    #[error("{0}")]
    File(String),
}

fn refuse(service: &str, reason: impl Into<String>) -> Refusal {
    Refusal::Service {
        service: service.to_owned(),
        reason: reason.into(),
    }
}

/// Plans the meshed form of `document` (a compose file with a `services` map).
pub fn plan(document: &Mapping, options: &Options<'_>) -> Result<Plan, Refusal> {
    let services = document
        .get("services")
        .and_then(Yaml::as_map)
        .ok_or_else(|| Refusal::File("there is no `services` map".to_owned()))?;
    let service = |name: &str| services.get(name).and_then(Yaml::as_map);

    let mut previous_sidecars = HashMap::new();
    for (name, definition) in services.entries() {
        if let Some(definition) = definition.as_map()
            && sidecar::role(definition) == Some("sidecar")
            && let Some(app) = name.strip_suffix("-seam")
        {
            previous_sidecars.insert(app.to_owned(), definition);
        }
    }
    let written_by_inject = |name: &str| service(name).and_then(sidecar::role).is_some();

    for skipped in options.skip {
        if service(skipped).is_none() {
            return Err(Refusal::File(format!(
                "--skip {skipped}: there is no service {skipped:?} in this file"
            )));
        }
        if written_by_inject(skipped) {
            return Err(Refusal::File(format!(
                "--skip {skipped}: {skipped:?} was written by seamctl inject; skip the service it belongs to"
            )));
        }
        if previous_sidecars.contains_key(skipped) {
            return Err(refuse(
                skipped,
                format!(
                    "is meshed already in this file (its sidecar is {:?}); to leave it out, \
                     run inject on the original file with --skip {skipped}",
                    sidecar::name_of(skipped)
                ),
            ));
        }
    }
    let is_meshed =
        |name: &str| !written_by_inject(name) && !options.skip.iter().any(|skip| skip == name);
    if !services.keys().any(is_meshed) {
        return Err(Refusal::File(
            "every service is skipped: there is nothing to mesh".to_owned(),
        ));
    }
    if service(CONTROL_PLANE).is_some() && !written_by_inject(CONTROL_PLANE) {
        return Err(refuse(
            CONTROL_PLANE,
            "has the name of the control plane service inject adds; rename it",
        ));
    }

    let mut out = Mapping::new();
    let mut meshed = Vec::new();
    let mut networks: Vec<String> = Vec::new();
    let mut secrets = Vec::new();
    for (name, definition) in services.entries() {
        if written_by_inject(name) {
            continue;
        }
        if !is_meshed(name) {
            out.insert(name, definition.clone());
            continue;
        }
        let app = definition
            .as_map()
            .expect("compose::parse checks that every service is a map");
        let sidecar_name = sidecar::name_of(name);
        if service(&sidecar_name).is_some() && !written_by_inject(&sidecar_name) {
            return Err(refuse(
                name,
                format!(
                    "its sidecar would be called {sidecar_name:?}, the name of another service \
                     in this file; rename that service, or leave {name} out with --skip {name}"
                ),
            ));
        }
        check(name, app, previous_sidecars.contains_key(name))?;

        let mut app = app.clone();
        let mut namespace = Mapping::new();
        let holder = previous_sidecars.get(name).copied().unwrap_or(&app);
        for key in NAMESPACE_KEYS {
            if let Some(value) = holder.get(key) {
                namespace.insert(key, value.clone());
            }
        }
        for key in NAMESPACE_KEYS {
            app.remove(key);
        }
        let served = ports::served(&namespace).map_err(|reason| refuse(name, reason))?;
        app.insert("network_mode", Yaml::Str(format!("service:{sidecar_name}")));
        depend_on_healthy(&mut app, &sidecar_name);
        if options.profile == Profile::Explicit {
            use_proxy(&mut app);
        }
        let sidecar = sidecar::sidecar(SidecarSpec {
            app: name,
            namespace,
            app_port: served.tcp.first().copied(),
            profile: options.profile,
            compose_profiles: app.get("profiles").cloned(),
        });
        for network in sidecar::networks_of(&sidecar) {
            if !networks.contains(&network) {
                networks.push(network);
            }
        }
        out.insert(name, Yaml::Map(app));
        out.insert(&sidecar_name, Yaml::Map(sidecar));
        secrets.push(sidecar::secret_of(name));
        meshed.push(MeshedService {
            name: name.to_owned(),
            ports: served.tcp,
            published: served.published,
        });
    }
    out.insert(CONTROL_PLANE, Yaml::Map(sidecar::control_plane(&networks)));

    let mut compose = document.clone();
    // Compose files of format 2 and 3 know neither `secrets` from files nor dependency
    // conditions together; without `version` docker-compose reads the Compose
    // Specification, which has both.
    compose.remove("version");
    compose.insert("services", Yaml::Map(out));
    let declared = compose.entry_map("secrets");
    for secret in secrets {
        let mut file = Mapping::new();
        file.insert("file", Yaml::Str(format!("{SECRETS_DIR}/{secret}")));
        declared.insert(&secret, Yaml::Map(file));
    }
    Ok(Plan { compose, meshed })
}

/// Refuses a service that cannot be meshed; `meshed_already` when its sidecar is in the
/// file, whose namespace it may then share.
fn check(name: &str, service: &Mapping, meshed_already: bool) -> Result<(), Refusal> {
    let skip_hint = format!("leave it out of the mesh with --skip {name}");
    if let Err(why) = check_service_name(name) {
        return Err(refuse(
            name,
            format!(
                "its name is the service's name in the mesh, which {why}; rename it, or {skip_hint}"
            ),
        ));
    }
    let replicas = [
        (
            "deploy.replicas",
            service
                .get("deploy")
                .and_then(Yaml::as_map)
                .and_then(|deploy| deploy.get("replicas")),
        ),
        ("scale", service.get("scale")),
    ];
    for (key, value) in replicas {
        let count = value.and_then(Yaml::scalar_text);
        if let Some(count) = count
            && count.parse::<u64>().map_or(true, |count| count > 1)
        {
            return Err(refuse(
                name,
                format!(
                    "{key} is {count}: compose cannot pair a sidecar with each replica, so a \
                     meshed service runs one container; set it to 1, or {skip_hint}"
                ),
            ));
        }
    }
    let own = format!("service:{}", sidecar::name_of(name));
    match service.get("network_mode").map(|mode| mode.scalar_text()) {
        None => Ok(()),
        Some(Some(mode)) if meshed_already && mode == own => Ok(()),
        Some(Some(mode)) if mode == "host" => Err(refuse(
            name,
            format!(
                "network_mode is host: it uses the host's network, which no sidecar can own; {skip_hint}"
            ),
        )),
        Some(Some(mode)) if mode.starts_with("service:") || mode.starts_with("container:") => {
            Err(refuse(
                name,
                format!(
                    "network_mode is {mode}: it shares another's network namespace, and a meshed \
                     service's namespace belongs to its sidecar; {skip_hint}"
                ),
            ))
        }
        Some(mode) => Err(refuse(
            name,
            format!(
                "network_mode is {}: a meshed service's namespace belongs to its sidecar; {skip_hint}",
                mode.unwrap_or_else(|| "not a string".to_owned())
            ),
        )),
    }
}

/// Makes `app` start once `sidecar` is healthy. `depends_on` as a list becomes the map
/// form (each entry `service_started`, as the list meant), which conditions need.
fn depend_on_healthy(app: &mut Mapping, sidecar: &str) {
    let mut depends_on = match app.get("depends_on") {
        Some(Yaml::Map(map)) => map.clone(),
        Some(Yaml::Seq(names)) => {
            let mut map = Mapping::new();
            for name in names.iter().filter_map(Yaml::as_str) {
                let mut condition = Mapping::new();
                condition.insert("condition", Yaml::str("service_started"));
                map.insert(name, Yaml::Map(condition));
            }
            map
        }
        _ => Mapping::new(),
    };
    depends_on.insert(sidecar, sidecar::healthy());
    app.insert("depends_on", Yaml::Map(depends_on));
}

/// Points the app's HTTP clients at the proxy, keeping any value the file already sets.
fn use_proxy(app: &mut Mapping) {
    match app.get_mut("environment") {
        Some(Yaml::Seq(entries)) => {
            for (key, value) in PROXY_ENVIRONMENT {
                let set = entries.iter().filter_map(Yaml::as_str).any(|entry| {
                    entry == key
                        || entry
                            .strip_prefix(key)
                            .is_some_and(|rest| rest.starts_with('='))
                });
                if !set {
                    entries.push(Yaml::Str(format!("{key}={value}")));
                }
            }
        }
        _ => {
            let environment = app.entry_map("environment");
            for (key, value) in PROXY_ENVIRONMENT {
                if !environment.contains_key(key) {
                    environment.insert(key, Yaml::str(value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
