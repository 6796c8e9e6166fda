//! HAProxy as a contender: two `haproxy` processes per path, one per hop, each with one
//! thread (`nbthread 1`, matched to the one worker a pinned Seam proxy runs). Hop 1 speaks
//! TLS 1.3 to hop 2 with its client certificate, verifying hop 2's certificate and name;
//! hop 2 requires a client certificate from the mesh CA. On the HTTP path (`mode http`)
//! hop 1 takes plain HTTP/1.1 or h2c (HAProxy detects the HTTP/2 preface), and
//! connections are kept alive and reused on both sides; the opaque TCP path (`mode tcp`)
//! carries each client connection on a TLS connection of its own to hop 2 and on to the
//! upstream, as the other contenders do.

use std::net::SocketAddr;
use std::path::Path;

use super::{
    PeerProcess, Pinning, Running, Stopper, TcpPath, Upstream, check_path, check_tcp_path,
    free_port, pinned_command, wait_path,
};
use crate::certs::{HOP2_DNS_NAME, LeafFiles};

/// HAProxy refuses more than the file-descriptor limit allows; this stays well under it.
const MAX_CONNECTIONS: u32 = 4000;

const GLOBAL: &str = "global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
";

const HTTP_DEFAULTS: &str = "defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
";

const TCP_DEFAULTS: &str = "defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
";

pub struct Certificates<'a> {
    pub ca: &'a Path,
    pub hop1: &'a LeafFiles,
    pub hop2: &'a LeafFiles,
}

/// What a path carries, which decides its `defaults` and the ALPN its hops agree on.
#[derive(Clone, Copy, Debug)]
enum Carrying {
    Http,
    Tcp,
}

impl Carrying {
    fn defaults(self) -> &'static str {
        match self {
            Self::Http => HTTP_DEFAULTS,
            Self::Tcp => TCP_DEFAULTS,
        }
    }

    /// HTTP/1.1 between the HTTP path's hops (HAProxy's hops do not speak h2 to each
    /// other); none on the TCP path, whose bytes are not HTTP.
    fn alpn(self) -> &'static str {
        match self {
            Self::Http => " alpn http/1.1",
            Self::Tcp => "",
        }
    }

    /// How the path's files and processes are named.
    fn name(self) -> &'static str {
        match self {
            Self::Http => "haproxy",
            Self::Tcp => "haproxy-tcp",
        }
    }
}

pub async fn start(
    dir: &Path,
    certs: &Certificates<'_>,
    upstream: Upstream,
    pinning: &Pinning,
) -> anyhow::Result<Running> {
    let (http1, mut processes) = start_path(dir, Carrying::Http, certs, upstream.http, pinning)?;
    wait_path(http1, check_path, || {
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
        tcp: TcpPath::outcome(start_tcp(dir, certs, upstream.tcp, pinning).await),
    })
}

async fn start_tcp(
    dir: &Path,
    certs: &Certificates<'_>,
    upstream: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<TcpPath> {
    let (addr, mut processes) = start_path(dir, Carrying::Tcp, certs, upstream, pinning)?;
    wait_path(addr, check_tcp_path, || {
        processes
            .iter_mut()
            .try_for_each(PeerProcess::check_running)
    })
    .await?;
    Ok(TcpPath {
        addr,
        hop_pids: processes.iter().filter_map(PeerProcess::pid).collect(),
        stopper: Stopper::Peers(processes),
    })
}

/// Starts the two hops of one path in front of `upstream`: hop 1's address and the hop
/// processes.
fn start_path(
    dir: &Path,
    carrying: Carrying,
    certs: &Certificates<'_>,
    upstream: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<(SocketAddr, Vec<PeerProcess>)> {
    let hop1_port = free_port()?;
    let hop2_port = free_port()?;
    let global = GLOBAL.replace("{maxconn}", &MAX_CONNECTIONS.to_string());
    let defaults = carrying.defaults();
    let alpn = carrying.alpn();
    let hop1 = format!(
        "{global}{defaults}frontend hop1
    bind 127.0.0.1:{hop1_port}
    default_backend hop2
backend hop2
    server hop2 127.0.0.1:{hop2_port} ssl crt {crt} ca-file {ca} verify required verifyhost {HOP2_DNS_NAME}{alpn}
",
        crt = certs.hop1.combined.display(),
        ca = certs.ca.display(),
    );
    let hop2 = format!(
        "{global}{defaults}frontend hop2
    bind 127.0.0.1:{hop2_port} ssl crt {crt} ca-file {ca} verify required{alpn}
    default_backend upstream
backend upstream
    server upstream {upstream}
",
        crt = certs.hop2.combined.display(),
        ca = certs.ca.display(),
    );
    let mut processes = Vec::new();
    for (hop, config) in [("hop2", hop2), ("hop1", hop1)] {
        let name = format!("{}-{hop}", carrying.name());
        let path = dir.join(format!("{name}.cfg"));
        std::fs::write(&path, config)?;
        let mut command = pinned_command("haproxy", pinning.hops.as_deref());
        command.arg("-db").arg("-f").arg(&path);
        processes.push(PeerProcess::spawn(&name, command, dir)?);
    }
    Ok((SocketAddr::from(([127, 0, 0, 1], hop1_port)), processes))
}
