//! Seam as a contender: real `seam-proxy` processes under the real control plane. On the
//! HTTP path, hop 1 is service `client`'s proxy (the load enters its outbound listener
//! naming `server`); hop 2 is service `server`'s proxy, listed in the mesh file with its
//! inbound address, in front of the upstream. The opaque TCP path is a second pair: hop 1
//! another `client` proxy whose `--tcp-upstream` listener carries each connection as an
//! opaque stream over mTLS to service `server-tcp`, whose proxy (hop 2) copies it to the
//! upstream's TCP listener. It needs a service of its own because hop 2 copies an opaque
//! stream to its one `--app`, and `server`'s must stay the HTTP upstream. Each proxy runs
//! pinned like the peers, so its tokio runtime has one worker per CPU it may use.
//!
//! With `--endpoints N`, service `server` lists N endpoints, all of them hop 2: it
//! listens on one port on N loopback addresses (127.0.0.1, 127.0.0.2, ...; Linux routes
//! all of 127.0.0.0/8 to the loopback), so hop 1's balancer picks among N live
//! endpoints, each with its own connections, as it would among N instances.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Context;
use seam_control_plane::launch::SeamProcess;
use seam_tests::TestMesh;
use seam_tests::mesh::join_token;

use super::{
    Pinning, Running, SERVICE_HOST, Stopper, TcpPath, Upstream, check_path, check_tcp_path,
    pinned_command, wait_path,
};

/// Hop 1's service.
pub const CLIENT_SERVICE: &str = "client";
/// The service behind the opaque TCP path's hop 2.
pub const TCP_SERVICE: &str = "server-tcp";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The proxies of one path (the control plane belongs to the mesh, which outlives them).
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

/// Starts both paths' proxies, lists each hop 2 in the mesh, and waits until a request
/// goes through each path.
pub async fn start(
    mesh: &TestMesh,
    upstream: Upstream,
    pinning: &Pinning,
    endpoints: u16,
) -> anyhow::Result<Running> {
    let inbound = hop2_inbound(endpoints)?;
    let mut hop2 = spawn_proxy(
        mesh,
        "hop2",
        SERVICE_HOST,
        upstream.http,
        &["--inbound", &inbound],
        pinning,
    )
    .await?;
    let mut hop1 = spawn_proxy(mesh, "hop1", CLIENT_SERVICE, upstream.http, &[], pinning).await?;
    hop2.wait_ready(READY_TIMEOUT).await?;
    hop1.wait_ready(READY_TIMEOUT).await?;
    let port = hop2.addr("inbound").port();
    let listed: Vec<SocketAddr> = (0..endpoints)
        .map(|index| SocketAddr::V4(SocketAddrV4::new(loopback(index), port)))
        .collect();
    mesh.set_endpoints(&[(SERVICE_HOST, &listed)]).await?;
    let http1 = hop1.addr("outbound");
    wait_path(http1, check_path, || Ok(())).await?;
    let hop_pids = [&hop1, &hop2].iter().filter_map(|hop| hop.pid()).collect();
    Ok(Running {
        http1,
        http2: http1,
        hop_pids,
        stopper: Stopper::Seam(SeamHops {
            hops: vec![hop1, hop2],
        }),
        tcp: TcpPath::outcome(start_tcp(mesh, upstream.tcp, pinning).await),
    })
}

/// The `n`-th loopback address: 127.0.0.1, 127.0.0.2, ... 127.0.0.250, 127.0.1.1, ...
fn loopback(n: u16) -> Ipv4Addr {
    let [high, low] = (n / 250).to_be_bytes();
    Ipv4Addr::new(127, high, low, (n % 250) as u8 + 1)
}

/// Hop 2's `--inbound` for `endpoints` endpoints: one port on that many loopback
/// addresses. With several, the port is one found free on 127.0.0.1 just before (the
/// proxy reports only its first listener's port, so they must share one known in
/// advance).
fn hop2_inbound(endpoints: u16) -> anyhow::Result<String> {
    if endpoints == 1 {
        return Ok("127.0.0.1:0".to_owned());
    }
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let addresses: Vec<String> = (0..endpoints)
        .map(|index| SocketAddrV4::new(loopback(index), port).to_string())
        .collect();
    Ok(addresses.join(","))
}

async fn start_tcp(
    mesh: &TestMesh,
    upstream: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<TcpPath> {
    let mut hop2 = spawn_proxy(mesh, "tcp-hop2", TCP_SERVICE, upstream, &[], pinning).await?;
    // Hop 1's `--app` is never used: it only carries connections out.
    let tcp_upstream = format!("127.0.0.1:0={TCP_SERVICE}");
    let mut hop1 = spawn_proxy(
        mesh,
        "tcp-hop1",
        CLIENT_SERVICE,
        upstream,
        &["--tcp-upstream", &tcp_upstream],
        pinning,
    )
    .await?;
    hop2.wait_ready(READY_TIMEOUT).await?;
    hop1.wait_ready(READY_TIMEOUT).await?;
    mesh.set_endpoints(&[(TCP_SERVICE, &[hop2.addr("inbound")])])
        .await?;
    let addr = hop1.addr(&format!("tcp:{TCP_SERVICE}"));
    wait_path(addr, check_tcp_path, || Ok(())).await?;
    let hop_pids = [&hop1, &hop2].iter().filter_map(|hop| hop.pid()).collect();
    Ok(TcpPath {
        addr,
        hop_pids,
        stopper: Stopper::Seam(SeamHops {
            hops: vec![hop1, hop2],
        }),
    })
}

/// Starts `service`'s proxy in front of `app`; `hop` names its log and its process. Its
/// inbound listens on 127.0.0.1 on a free port unless `extra_args` has an `--inbound`.
async fn spawn_proxy(
    mesh: &TestMesh,
    hop: &str,
    service: &str,
    app: SocketAddr,
    extra_args: &[&str],
    pinning: &Pinning,
) -> anyhow::Result<SeamProcess> {
    let log = mesh.dir().join(format!("bench-seam-{hop}.log"));
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
        .args(["--outbound", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .arg("--app")
        .arg(app.to_string())
        .arg("--trust-anchors")
        .arg(mesh.ca_path())
        .arg("--control-plane")
        .arg(mesh.grpc_addr().to_string())
        .args(extra_args);
    if !extra_args.contains(&"--inbound") {
        command.args(["--inbound", "127.0.0.1:0"]);
    }
    SeamProcess::spawn(
        format!("seam-proxy {hop} ({service})"),
        command,
        stderr.into(),
    )
    .await
    .with_context(|| format!("starting Seam's {hop} (log: {})", log.display()))
}
