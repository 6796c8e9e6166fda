//! nginx as a contender: two `nginx` instances, one per hop, each with one worker process
//! (matched to the one worker a pinned Seam proxy runs). Hop 1 listens for HTTP/1.1 and,
//! on a second port, h2c (nginx cannot take both on one plain port); it proxies over
//! TLS 1.3 with its client certificate to hop 2, verifying hop 2's certificate and name,
//! with TLS sessions reused. nginx's proxy speaks only HTTP/1.1 to what it proxies to, so
//! the hops talk HTTP/1.1 whatever the client spoke. Keep-alive on every leg, with no cap
//! on requests per connection. The opaque TCP path is two more instances of the same
//! shape with the `stream` module (see `nginx_stream`) in place of `http`: each client
//! connection crosses on a TLS connection of its own, verified the same way both ways.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::haproxy::Certificates;
use super::{
    PeerProcess, Pinning, Running, Stopper, TcpPath, Upstream, check_path, check_tcp_path,
    free_port, nginx_stream, pinned_command, wait_path,
};
use crate::certs::HOP2_DNS_NAME;

const MAIN: &str = "{load}{user}worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
events { worker_connections 8192; }
";

const HTTP: &str = "http {
    access_log off;
    client_body_temp_path {dir}/{name}-body;
    proxy_temp_path {dir}/{name}-proxy;
    fastcgi_temp_path {dir}/{name}-fastcgi;
    uwsgi_temp_path {dir}/{name}-uwsgi;
    scgi_temp_path {dir}/{name}-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    proxy_buffering on;
";

/// The start of instance `name`'s configuration: the main context, loading `load` first,
/// then `opening` (the common part of the `http` block, or nothing).
fn head(dir: &Path, name: &str, load: &str, opening: &str) -> anyhow::Result<String> {
    // As root, nginx's worker would switch to `nobody`, who cannot read the keys here.
    let user = if std::fs::metadata("/proc/self")?.uid() == 0 {
        "user root;\n"
    } else {
        ""
    };
    Ok(format!("{MAIN}{opening}")
        .replace("{load}", load)
        .replace("{user}", user)
        .replace("{dir}", &dir.display().to_string())
        .replace("{name}", name))
}

pub async fn start(
    dir: &Path,
    certs: &Certificates<'_>,
    upstream: Upstream,
    pinning: &Pinning,
) -> anyhow::Result<Running> {
    let hop1_port = free_port()?;
    let hop1_h2_port = free_port()?;
    let hop2_port = free_port()?;
    let hop1 = format!(
        "{main}    upstream hop2 {{
        server 127.0.0.1:{hop2_port};
        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{hop1_port};
        listen 127.0.0.1:{hop1_h2_port} http2;
        location / {{
            proxy_pass https://hop2;
            proxy_ssl_certificate {crt};
            proxy_ssl_certificate_key {key};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name {HOP2_DNS_NAME};
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }}
    }}
}}
",
        main = head(dir, "nginx-hop1", "", HTTP)?,
        crt = certs.hop1.cert.display(),
        key = certs.hop1.key.display(),
        ca = certs.ca.display(),
    );
    let hop2 = format!(
        "{main}    upstream app {{
        server {upstream};
        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{hop2_port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.3;
        location / {{
            proxy_pass http://app;
        }}
    }}
}}
",
        main = head(dir, "nginx-hop2", "", HTTP)?,
        upstream = upstream.http,
        crt = certs.hop2.cert.display(),
        key = certs.hop2.key.display(),
        ca = certs.ca.display(),
    );
    let mut processes = spawn_hops(dir, [("nginx-hop2", hop2), ("nginx-hop1", hop1)], pinning)?;
    let http1 = SocketAddr::from(([127, 0, 0, 1], hop1_port));
    wait_path(http1, check_path, || {
        processes
            .iter_mut()
            .try_for_each(PeerProcess::check_running)
    })
    .await?;
    let tcp = match nginx_stream::load_directive().await {
        Ok(load) => TcpPath::outcome(start_tcp(dir, certs, &load, upstream.tcp, pinning).await),
        Err(missing) => Err(missing),
    };
    Ok(Running {
        http1,
        http2: SocketAddr::from(([127, 0, 0, 1], hop1_h2_port)),
        hop_pids: processes.iter().filter_map(PeerProcess::pid).collect(),
        stopper: Stopper::Peers(processes),
        tcp,
    })
}

/// The opaque TCP path: the `stream` module (loaded by `load`) in front of `upstream`.
async fn start_tcp(
    dir: &Path,
    certs: &Certificates<'_>,
    load: &str,
    upstream: SocketAddr,
    pinning: &Pinning,
) -> anyhow::Result<TcpPath> {
    let hop1_port = free_port()?;
    let hop2_port = free_port()?;
    let hop1 = format!(
        "{main}stream {{
    server {{
        listen 127.0.0.1:{hop1_port};
        proxy_pass 127.0.0.1:{hop2_port};
        proxy_ssl on;
        proxy_ssl_certificate {crt};
        proxy_ssl_certificate_key {key};
        proxy_ssl_trusted_certificate {ca};
        proxy_ssl_verify on;
        proxy_ssl_name {HOP2_DNS_NAME};
        proxy_ssl_protocols TLSv1.3;
        proxy_ssl_session_reuse on;
    }}
}}
",
        main = head(dir, "nginx-tcp-hop1", load, "")?,
        crt = certs.hop1.cert.display(),
        key = certs.hop1.key.display(),
        ca = certs.ca.display(),
    );
    let hop2 = format!(
        "{main}stream {{
    server {{
        listen 127.0.0.1:{hop2_port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.3;
        proxy_pass {upstream};
    }}
}}
",
        main = head(dir, "nginx-tcp-hop2", load, "")?,
        crt = certs.hop2.cert.display(),
        key = certs.hop2.key.display(),
        ca = certs.ca.display(),
    );
    let mut processes = spawn_hops(
        dir,
        [("nginx-tcp-hop2", hop2), ("nginx-tcp-hop1", hop1)],
        pinning,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], hop1_port));
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

/// Writes each named configuration to `NAME.conf` and starts an nginx on it, hop 2 first.
fn spawn_hops(
    dir: &Path,
    hops: [(&str, String); 2],
    pinning: &Pinning,
) -> anyhow::Result<Vec<PeerProcess>> {
    let mut processes = Vec::new();
    for (name, config) in hops {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, config)?;
        let mut command = pinned_command("nginx", pinning.hops.as_deref());
        command
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join(format!("{name}-error.log")))
            .arg("-c")
            .arg(&path);
        processes.push(PeerProcess::spawn(name, command, dir)?);
    }
    Ok(processes)
}
