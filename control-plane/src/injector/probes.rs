//! The app's probe paths, for the proxy's `SEAM_PROBE_PATHS`. Once `seam-init` has run,
//! the kubelet's probes on the app's ports reach the proxy's inbound listener in
//! plaintext, and a service that accepts only mTLS would refuse them: the pod would never
//! become ready. So the injector lists, as `PORT:PATH`, every HTTP and gRPC probe
//! (liveness, readiness, startup) of the app's containers (and of the pod's own native
//! sidecars, whose probes are redirected the same way), and the proxy lets exactly
//! those through to the app.
//!
//! What needs nothing: `tcpSocket` probes (the proxy accepts every redirected
//! connection, and the kubelet only needs the connection to open) and `exec` probes (run
//! inside the container). What is left alone: probes with `host:` set (they go elsewhere
//! than the pod) and `scheme: HTTPS` probes (the kubelet's TLS is not the mesh's mTLS,
//! and the proxy cannot let it through; exclude their port with
//! `seam.io/skip-inbound-ports`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The path of the gRPC health check, which `grpc` probes call.
const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// `SEAM_PROBE_PATHS` for the pod: comma-separated `PORT:PATH`, sorted, each once;
/// `None` when no probe needs the proxy to let it through.
pub fn probe_paths(spec: &PodSpec) -> Option<String> {
    let native_sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|container| container.restart_policy.as_deref() == Some("Always"));
    let paths: BTreeSet<(u16, String)> = spec
        .containers
        .iter()
        .chain(native_sidecars)
        .flat_map(|container| {
            [
                &container.liveness_probe,
                &container.readiness_probe,
                &container.startup_probe,
            ]
            .into_iter()
            .flatten()
            .filter_map(move |probe| probe_path(container, probe))
        })
        .collect();
    if paths.is_empty() {
        return None;
    }
    let entries: Vec<String> = paths
        .iter()
        .map(|(port, path)| format!("{port}:{path}"))
        .collect();
    Some(entries.join(","))
}

/// The port and path one probe of `container` reaches, if the proxy must let it in.
fn probe_path(container: &Container, probe: &Probe) -> Option<(u16, String)> {
    if let Some(grpc) = &probe.grpc {
        return Some((u16::try_from(grpc.port).ok()?, GRPC_HEALTH_PATH.to_owned()));
    }
    let http = probe.http_get.as_ref()?;
    let plain_http = http
        .scheme
        .as_deref()
        .is_none_or(|scheme| scheme.eq_ignore_ascii_case("HTTP"));
    if http.host.is_some() || !plain_http {
        return None;
    }
    let port = resolve_port(container, &http.port)?;
    // The kubelet sends `/` when no path is given, and a leading `/` when it is missing;
    // the proxy ignores a request's query, so it is not listed. A comma would split the
    // list: such a path cannot be listed.
    let path = http.path.as_deref().unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    if path.contains(',') {
        return None;
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Some((port, path))
}

/// A probe's port as the kubelet resolves it: a number, or the name of one of the
/// container's ports (else a number written as a string).
fn resolve_port(container: &Container, port: &IntOrString) -> Option<u16> {
    let number = match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name.as_str()))
            .map(|port| port.container_port)
            .or_else(|| name.parse().ok())?,
    };
    u16::try_from(number).ok().filter(|port| *port != 0)
}

#[cfg(test)]
mod tests;
