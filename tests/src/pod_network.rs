//! A small private network of pods for system tests: one "switch" namespace holding a
//! Linux bridge, and each pod a namespace joined to it by a veth pair whose pod side is
//! `eth0`, with an IPv4 address in 10.77.0.0/24 and an IPv6 address in fd77::/64, `lo` up,
//! and default routes out of `eth0`, so pods reach each other as in a cluster. Each test
//! makes its own network, so tests running side by side never share one.
//!
//! Nothing waits on timers: the IPv6 addresses skip duplicate address detection
//! (`nodad`), so they are usable (bindable, reachable) at once, and the bridge floods
//! multicast instead of snooping it, so neighbour discovery works before any listener
//! report. Dropping a pod deletes its namespace, which also deletes its veth pair.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netns::NetNs;

/// The pods' IPv4 network.
pub const IPV4_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
/// The pods' IPv6 network.
pub const IPV6_NETWORK: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0);

/// The bridge inside the switch namespace.
const BRIDGE: &str = "br0";

/// The switch every pod is plugged into. Pods may outlive it, but lose their link.
#[derive(Debug)]
pub struct PodNetwork {
    switch: NetNs,
    pods_added: u8,
}

impl PodNetwork {
    /// Makes the switch namespace and its bridge.
    pub fn create() -> anyhow::Result<Self> {
        let switch = NetNs::create("switch")?;
        switch.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        switch.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(Self {
            switch,
            pods_added: 0,
        })
    }

    /// Makes a pod namespace plugged into the switch. The n-th pod gets 10.77.0.(n+1) and
    /// fd77::(n+1), so the first pod is 10.77.0.2.
    pub fn add_pod(&mut self, label: &str) -> anyhow::Result<Pod> {
        self.pods_added = self
            .pods_added
            .checked_add(1)
            .filter(|count| *count < 254)
            .ok_or_else(|| anyhow::anyhow!("a test network holds at most 253 pods"))?;
        let host = self.pods_added + 1;
        let ipv4 = Ipv4Addr::from(u32::from(IPV4_NETWORK) | u32::from(host));
        let ipv6 = Ipv6Addr::from(u128::from(IPV6_NETWORK) | u128::from(host));
        let namespace = NetNs::create(label)?;
        let port = format!("port{host}");
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace.name(),
        ])?;
        self.switch
            .ip(&["link", "set", &port, "master", BRIDGE, "up"])?;
        namespace.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", "eth0"])?;
        namespace.ip(&["addr", "add", &format!("{ipv6}/64"), "dev", "eth0", "nodad"])?;
        namespace.ip(&["link", "set", "eth0", "up"])?;
        namespace.ip(&["route", "add", "default", "dev", "eth0"])?;
        namespace.ip(&["-6", "route", "add", "default", "dev", "eth0"])?;
        Ok(Pod {
            namespace,
            ipv4,
            ipv6,
        })
    }
}

/// One pod: its namespace and its addresses on the pod network.
#[derive(Debug)]
pub struct Pod {
    namespace: NetNs,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl Pod {
    pub fn netns(&self) -> &NetNs {
        &self.namespace
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// The pod's IPv4 address with `port`.
    pub fn v4(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ipv4, port))
    }

    /// The pod's IPv6 address with `port`.
    pub fn v6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ipv6, port))
    }

    /// Both of the pod's addresses with `port`, IPv4 first.
    pub fn both_families(&self, port: u16) -> [SocketAddr; 2] {
        [self.v4(port), self.v6(port)]
    }
}
