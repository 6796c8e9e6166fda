//! Seam as a contender: two real `seam-proxy` processes under the real control plane.
//! Hop 1 is service `client`'s proxy (the load enters its outbound listener naming
//! `server`); hop 2 is service `server`'s proxy, listed in the mesh file with its inbound
//! address, in front of the upstream. Each proxy runs pinned like the peers, so its tokio
//! runtime has one worker per CPU it may use.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use seam_control_plane::launch::SeamProcess;
use seam_tests::TestMesh;
use seam_tests::mesh::join_token;

use super::{Pinning, Running, SERVICE_HOST, Stopper, pinned_command, wait_path};

/// Hop 1's service.
pub const CLIENT_SERVICE: &str = "client";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The two proxies (the control plane belongs to the mesh, which outlives them).
pub struct SeamHops {
    hops: Vec<SeamProcess>,
}

impl SeamHops {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for hop in &mut self.hops {
            hop.terminate()?;
            tokio::time::timeout(STOP_TIMEOUT, hop.wait())
                .await
                .with_context(|| format!("{} did not exit after SIGTERM", hop.name()))??;
        }
        Ok(())
    }
}

/// Starts both proxies, lists hop 2 in the mesh, and waits until a request goes through.
pub async fn start(
    mesh: &TestMesh,
    upstream: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<Running> {
    let mut hop2 = spawn_proxy(mesh, SERVICE_HOST, upstream, pinning).await?;
    let mut hop1 = spawn_proxy(mesh, CLIENT_SERVICE, upstream, pinning).await?;
    hop2.wait_ready(READY_TIMEOUT).await?;
    hop1.wait_ready(READY_TIMEOUT).await?;
    mesh.set_endpoints(&[(SERVICE_HOST, &[hop2.addr("inbound")])])
        .await?;
    let http1 = hop1.addr("outbound");
    wait_path(http1, || Ok(())).await?;
    let hop_pids = [&hop1, &hop2].iter().filter_map(|hop| hop.pid()).collect();
    Ok(Running {
        http1,
        http2: http1,
        hop_pids,
        stopper: Stopper::Seam(SeamHops {
            hops: vec![hop1, hop2],
        }),
    })
}

async fn spawn_proxy(
    mesh: &TestMesh,
    service: &str,
    app: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<SeamProcess> {
    let log = mesh.dir().join(format!("bench-{service}.log"));
    let stderr = std::fs::File::create(&log)?;
    let mut command = pinned_command(
        seam_tests::mesh::seam_binary("seam-proxy")?,
        pinning.hops.as_deref(),
    );
    command
        .env("SEAM_JOIN_TOKEN", join_token(service))
        // Like the peers, which log nothing per request.
        .env("RUST_LOG", "warn")
        .args(["--service", service])
        .args(["--inbound", "127.0.0.1:0"])
        .args(["--outbound", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .arg("--app")
        .arg(app.to_string())
        .arg("--trust-anchors")
        .arg(mesh.ca_path())
        .arg("--control-plane")
        .arg(mesh.grpc_addr().to_string());
    SeamProcess::spawn(format!("seam-proxy {service}"), command, stderr.into())
        .await
        .with_context(|| format!("starting the {service} proxy (log: {})", log.display()))
}
