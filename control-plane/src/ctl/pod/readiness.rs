//! When the pod's app may start: once its proxy is ready, so the app's first calls go
//! through a proxy that holds a certificate and the mesh's state (like a Kubernetes
//! native sidecar), instead of failing and, for many apps, crashing at start. The proxy's
//! stdout passes through the pod; its listening line says where its admin listener is,
//! and `/ready` on it says when. The wait is bounded: an app whose proxy cannot get ready
//! (no control plane yet) still starts, after a warning.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStdout;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::launch;

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Copies the proxy's stdout to the pod's, line by line, and publishes the admin address
/// its listening line names (on loopback if it listens on every address).
pub fn forward_stdout(stdout: ChildStdout, admin: watch::Sender<Option<SocketAddr>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
            if let Some(address) = launch::parse_listening_line(&line)
                .and_then(|listeners| listeners.get("admin").copied())
            {
                admin.send_replace(Some(reachable(address)));
            }
        }
    });
}

/// An admin address the pod can dial: the unspecified address becomes loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

/// Resolves once the proxy whose admin address `admin` follows answers 200 on `/ready`,
/// or at `deadline`; says which.
pub async fn proxy_ready(
    mut admin: watch::Receiver<Option<SocketAddr>>,
    deadline: Instant,
) -> bool {
    let ready = async {
        loop {
            let address = *admin.borrow_and_update();
            if let Some(address) = address
                && matches!(launch::http_get(address, "/ready").await, Ok((200, _)))
            {
                return;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    tokio::time::timeout_at(deadline, ready).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_listener_on_every_address_is_dialed_on_loopback() {
        let any: SocketAddr = "0.0.0.0:4191".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:4191".parse().unwrap());
        let any6: SocketAddr = "[::]:4191".parse().unwrap();
        assert_eq!(reachable(any6), "[::1]:4191".parse().unwrap());
        let given: SocketAddr = "10.0.0.3:4191".parse().unwrap();
        assert_eq!(reachable(given), given);
    }
}
