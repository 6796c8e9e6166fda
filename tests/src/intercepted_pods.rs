//! Three pods for transparent-mode system tests, the first as `seam-proxy init` leaves a
//! pod: `a` holds Seam's rules (with a skipped outbound port, skipped inbound ports, and
//! `c`'s addresses as skipped subnets) and plain listeners standing in for its proxy on
//! the outbound port (loopback) and the inbound port (its own addresses); `b` is where
//! tests put servers; `c` sits in the skipped subnets. A test binds the servers it needs,
//! connects, and asks [`first_arrival`] which listener took the connection.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;

use crate::interception::{Arrival, StandIn, first_arrival};
use crate::pod_network::{Pod, PodNetwork};
use crate::proxy_init;

/// `seam-proxy init`'s defaults, which pod `a` is set up with.
pub const INBOUND_PORT: u16 = 4143;
pub const OUTBOUND_PORT: u16 = 4140;
pub const ADMIN_PORT: u16 = 4191;
pub const PROXY_UID: u32 = 2102;

/// A port tests dial that no rule skips.
pub const APP_PORT: u16 = 9000;
/// The `--skip-outbound-ports` of pod `a`.
pub const SKIPPED_OUTBOUND_PORT: u16 = 9100;
/// The `--skip-inbound-ports` of pod `a`: a port and a range.
pub const SKIPPED_INBOUND_PORTS: &str = "22,8500-8600";

/// The three pods, with pod `a` intercepted.
pub struct InterceptedPods {
    outbound_v4: StandIn,
    outbound_v6: StandIn,
    inbound_v4: StandIn,
    inbound_v6: StandIn,
    pub a: Pod,
    pub b: Pod,
    pub c: Pod,
    // Last: the pods go before the switch that links them.
    _network: PodNetwork,
}

impl InterceptedPods {
    /// Makes the network and the pods, runs `seam-proxy init` in `a`, and binds the
    /// stand-ins for `a`'s proxy (named `outbound proxy` and `inbound proxy`).
    pub async fn start() -> anyhow::Result<Self> {
        let mut network = PodNetwork::create()?;
        let a = network.add_pod("a")?;
        let b = network.add_pod("b")?;
        let c = network.add_pod("c")?;
        let skipped_subnets = format!("{}/32,{}/128", c.ipv4(), c.ipv6());
        proxy_init::run_init(
            a.netns(),
            &[
                "--skip-outbound-ports",
                &SKIPPED_OUTBOUND_PORT.to_string(),
                "--skip-inbound-ports",
                SKIPPED_INBOUND_PORTS,
                "--skip-subnets",
                &skipped_subnets,
            ],
        )
        .await?
        .expect_success()?;
        let namespace = a.netns();
        let loopback_v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, OUTBOUND_PORT));
        let loopback_v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, OUTBOUND_PORT));
        Ok(Self {
            outbound_v4: StandIn::bind(namespace, "outbound proxy", loopback_v4).await?,
            outbound_v6: StandIn::bind(namespace, "outbound proxy", loopback_v6).await?,
            inbound_v4: StandIn::bind(namespace, "inbound proxy", a.v4(INBOUND_PORT)).await?,
            inbound_v6: StandIn::bind(namespace, "inbound proxy", a.v6(INBOUND_PORT)).await?,
            a,
            b,
            c,
            _network: network,
        })
    }

    /// Pod `a`'s outbound and inbound stand-ins of the family of `addr`.
    pub fn proxy_stand_ins(&self, addr: SocketAddr) -> [&StandIn; 2] {
        if addr.is_ipv4() {
            [&self.outbound_v4, &self.inbound_v4]
        } else {
            [&self.outbound_v6, &self.inbound_v6]
        }
    }

    /// Connects from `from` to `to`, and returns the connection as the first of the
    /// proxy's stand-ins or `server` to accept it saw it.
    pub async fn connect(
        &self,
        from: &Pod,
        to: SocketAddr,
        server: &StandIn,
    ) -> anyhow::Result<Arrival> {
        // The client end stays open until the arrival is seen, then may go.
        let _client = from.netns().connect_tcp(to).await?;
        let [outbound, inbound] = self.proxy_stand_ins(to);
        first_arrival(&[outbound, inbound, server])
            .await
            .with_context(|| format!("a connection from {} to {to}", from.netns().name()))
    }
}
