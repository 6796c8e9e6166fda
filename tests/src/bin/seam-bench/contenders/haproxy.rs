//! HAProxy as a contender: two `haproxy` processes, one per hop, each with one thread
//! (`nbthread 1`, matched to the one worker a pinned Seam proxy runs). Hop 1 takes plain
//! HTTP/1.1 or h2c (HAProxy detects the HTTP/2 preface) and speaks TLS 1.3 to hop 2 with
//! its client certificate, verifying hop 2's certificate and name; hop 2 requires a client
//! certificate from the mesh CA. Connections are kept alive and reused on both sides.

use std::net::SocketAddr;
use std::path::Path;

use super::{PeerProcess, Pinning, Running, Stopper, free_port, pinned_command, wait_path};
use crate::certs::{HOP2_DNS_NAME, LeafFiles};

/// HAProxy refuses more than the file-descriptor limit allows; this stays well under it.
const MAX_CONNECTIONS: u32 = 4000;

const GLOBAL: &str = "global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
";

pub struct Certificates<'a> {
    pub ca: &'a Path,
    pub hop1: &'a LeafFiles,
    pub hop2: &'a LeafFiles,
}

pub async fn start(
    dir: &Path,
    certs: &Certificates<'_>,
    upstream: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<Running> {
    let hop1_port = free_port()?;
    let hop2_port = free_port()?;
    let global = GLOBAL.replace("{maxconn}", &MAX_CONNECTIONS.to_string());
    let hop1 = format!(
        "{global}frontend hop1
    bind 127.0.0.1:{hop1_port}
    default_backend hop2
backend hop2
    server hop2 127.0.0.1:{hop2_port} ssl crt {crt} ca-file {ca} verify required verifyhost {HOP2_DNS_NAME} alpn http/1.1
",
        crt = certs.hop1.combined.display(),
        ca = certs.ca.display(),
    );
    let hop2 = format!(
        "{global}frontend hop2
    bind 127.0.0.1:{hop2_port} ssl crt {crt} ca-file {ca} verify required alpn http/1.1
    default_backend upstream
backend upstream
    server upstream {upstream}
",
        crt = certs.hop2.combined.display(),
        ca = certs.ca.display(),
    );
    let mut processes = Vec::new();
    for (name, config) in [("haproxy-hop2", hop2), ("haproxy-hop1", hop1)] {
        let path = dir.join(format!("{name}.cfg"));
        std::fs::write(&path, config)?;
        let mut command = pinned_command("haproxy", pinning.hops.as_deref());
        command.arg("-db").arg("-f").arg(&path);
        processes.push(PeerProcess::spawn(name, command, dir)?);
    }
    let http1 = SocketAddr::from(([127, 0, 0, 1], hop1_port));
    wait_path(http1, || {
        processes
            .iter_mut()
            .try_for_each(PeerProcess::check_running)
    })
    .await?;
    Ok(Running {
        http1,
        http2: http1,
        hop_pids: processes.iter().filter_map(PeerProcess::pid).collect(),
        stopper: Stopper::Peers(processes),
    })
}
