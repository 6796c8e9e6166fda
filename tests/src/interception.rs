//! Listeners that stand in for the transparent proxy (and for real servers) in
//! transparent-mode system tests, and what they tell about a connection: which of them
//! accepted it, and where it was headed before iptables redirected it (`SO_ORIGINAL_DST`,
//! read with nix's safe `getsockopt`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures_util::FutureExt;
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};

use crate::netns::NetNs;

/// How long a test waits for a connection to arrive somewhere.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A named listener inside a namespace: `outbound proxy`, `server in pod b`, ...
#[derive(Debug)]
pub struct StandIn {
    name: String,
    listener: TcpListener,
}

impl StandIn {
    pub async fn bind(namespace: &NetNs, name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            listener: namespace.bind_tcp(addr).await?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A connection as the listener that accepted it sees it.
#[derive(Debug)]
pub struct Arrival {
    /// The name of the listener that accepted it.
    pub listener: String,
    pub stream: TcpStream,
    pub peer: SocketAddr,
}

impl Arrival {
    /// The address the connection was accepted on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// Where the connection was headed before any NAT: the address the client dialled.
    pub fn original_destination(&self) -> anyhow::Result<SocketAddr> {
        original_destination(&self.stream)
    }
}

/// Waits until one of `listeners` accepts a connection (at most [`ARRIVAL_TIMEOUT`]).
/// The others keep whatever is queued for them: an accept not taken loses nothing.
pub async fn first_arrival(listeners: &[&StandIn]) -> anyhow::Result<Arrival> {
    let accepts = listeners.iter().map(|stand_in| {
        async move {
            let (stream, peer) = stand_in.listener.accept().await?;
            anyhow::Ok(Arrival {
                listener: stand_in.name.clone(),
                stream,
                peer,
            })
        }
        .boxed()
    });
    let names: Vec<&str> = listeners.iter().map(|stand_in| stand_in.name()).collect();
    let (arrival, _, _) =
        tokio::time::timeout(ARRIVAL_TIMEOUT, futures_util::future::select_all(accepts))
            .await
            .map_err(|_| {
                anyhow!("no connection reached any of {names:?} within {ARRIVAL_TIMEOUT:?}")
            })?;
    arrival
}

/// `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6) of an accepted connection.
pub fn original_destination(stream: &TcpStream) -> anyhow::Result<SocketAddr> {
    let context = "cannot read the original destination (is the connection tracked?)";
    if stream.local_addr()?.is_ipv4() {
        let raw = getsockopt(stream, sockopt::OriginalDst).context(context)?;
        // The kernel hands back a `sockaddr_in` in network byte order.
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
            u16::from_be(raw.sin_port),
        )))
    } else {
        let raw = getsockopt(stream, sockopt::Ip6tOriginalDst).context(context)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(raw.sin6_addr.s6_addr),
            u16::from_be(raw.sin6_port),
            0,
            0,
        )))
    }
}
