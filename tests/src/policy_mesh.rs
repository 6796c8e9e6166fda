//! Mesh files with request-handling keys (timeouts, retries, circuit breaker, routes)
//! for the resilience tests: each service is written with its endpoints and a block of
//! extra YAML, and the helpers wait until the control plane, and then a proxy, have
//! applied the new version.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::mesh::{self, RELOAD_TIMEOUT, TestMesh};
use crate::proxy::TestProxy;
use crate::wait;

/// One service of a policy mesh file.
pub struct PolicyService<'a> {
    pub name: &'a str,
    pub endpoints: Vec<SocketAddr>,
    /// YAML under the service's key, each line indented by four spaces.
    pub extra: &'a str,
}

/// Renders a mesh file listing `services` (join tokens as the test mesh gives them).
pub fn render(services: &[PolicyService<'_>]) -> String {
    let listed = services
        .iter()
        .map(|service| {
            let listed = mesh::MeshService {
                join_token: mesh::join_token(service.name),
                endpoints: service.endpoints.clone(),
            };
            (service.name.to_owned(), listed)
        })
        .collect();
    // `render_mesh_file_with` indents the extra lines itself.
    let extra = services
        .iter()
        .map(|service| {
            let lines = service
                .extra
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(|line| line.strip_prefix("    ").unwrap_or(line).to_owned())
                .collect();
            (service.name.to_owned(), lines)
        })
        .collect();
    mesh::render_mesh_file_with(&listed, &extra)
}

/// Writes the file and waits until `/mesh` shows a new version; returns that version.
pub async fn apply(mesh: &TestMesh, services: &[PolicyService<'_>]) -> anyhow::Result<u64> {
    let before = mesh.mesh_state().await?["version"].clone();
    mesh.write_raw_mesh_file(&render(services))?;
    let state = mesh.wait_version_change(&before, RELOAD_TIMEOUT).await?;
    if let Some(error) = state["last_error"].as_str()
        && !error.is_empty()
    {
        bail!("the control plane refused the mesh file: {error}");
    }
    state["version"]
        .as_u64()
        .with_context(|| format!("/mesh has no version: {state}"))
}

/// Waits until `proxy` holds `authority` at `version` or later (it must have used it).
pub async fn wait_applied(
    proxy: &TestProxy,
    authority: &str,
    version: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait::until(
        &format!(
            "{} applies version {version} of {authority}",
            proxy.service()
        ),
        timeout,
        || async {
            let config = proxy.config().await?;
            let held = config["subscriptions"][authority]["version"].as_u64();
            if held.is_some_and(|held| held >= version) {
                Ok(())
            } else {
                bail!("/config: {config}")
            }
        },
    )
    .await
}

/// The endpoints `proxy`'s `/config` lists as ejected.
pub async fn ejected(proxy: &TestProxy) -> anyhow::Result<Vec<String>> {
    let config = proxy.config().await?;
    Ok(config["ejected_endpoints"]
        .as_array()
        .map(|ejected| {
            ejected
                .iter()
                .filter_map(|endpoint| endpoint["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
