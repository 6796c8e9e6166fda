//! Where an accepted connection was going before iptables redirected it to a listener
//! (transparent mode, see `seam-proxy init`): the kernel keeps the original destination of
//! a NATed connection, and `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6) reads it,
//! through nix's safe socket-option API. A connection addressed to the listener itself
//! (explicit mode: the app was told to use the proxy) has its own local address as
//! original destination, or none at all where no NAT table is loaded.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// How a connection reached a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Addressed to the listener itself.
    Addressed,
    /// Redirected by iptables; it was going to this address.
    Redirected(SocketAddr),
}

/// How `tcp`, accepted on a listener, arrived there.
pub fn arrival(tcp: &TcpStream) -> Arrival {
    let Ok(local) = tcp.local_addr() else {
        return Arrival::Addressed;
    };
    let original = match local {
        SocketAddr::V4(_) => getsockopt(tcp, sockopt::OriginalDst)
            .ok()
            .map(|address| from_v4(&address)),
        SocketAddr::V6(_) => getsockopt(tcp, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|address| from_v6(&address)),
    };
    classify(local, original)
}

/// A connection whose original destination is the listener's own address was not
/// redirected. An IPv4 connection accepted on a dual-stack socket shows its local address
/// as an IPv4-mapped IPv6 address; it is compared as the IPv4 address it is.
fn classify(local: SocketAddr, original: Option<SocketAddr>) -> Arrival {
    let canonical = |address: SocketAddr| match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => address,
        },
        v4 => v4,
    };
    match original.map(canonical) {
        Some(original) if original != canonical(local) => Arrival::Redirected(original),
        _ => Arrival::Addressed,
    }
}

fn from_v4(address: &nix::libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)),
        u16::from_be(address.sin_port),
    ))
}

fn from_v6(address: &nix::libc::sockaddr_in6) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(address.sin6_addr.s6_addr),
        u16::from_be(address.sin6_port),
        u32::from_be(address.sin6_flowinfo),
        address.sin6_scope_id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_connection_is_redirected_only_if_it_was_going_elsewhere() {
        let cases = [
            ("127.0.0.1:4140", None, Arrival::Addressed),
            ("127.0.0.1:4140", Some("127.0.0.1:4140"), Arrival::Addressed),
            (
                "127.0.0.1:4140",
                Some("10.0.0.7:8080"),
                Arrival::Redirected(addr("10.0.0.7:8080")),
            ),
            (
                "[::ffff:10.0.0.5]:4143",
                Some("10.0.0.5:4143"),
                Arrival::Addressed,
            ),
            (
                "[::ffff:10.0.0.5]:4143",
                Some("10.0.0.5:8080"),
                Arrival::Redirected(addr("10.0.0.5:8080")),
            ),
            (
                "[fd77::5]:4143",
                Some("[fd77::5]:8080"),
                Arrival::Redirected(addr("[fd77::5]:8080")),
            ),
        ];
        for (local, original, want) in cases {
            assert_eq!(
                classify(addr(local), original.map(addr)),
                want,
                "{local} {original:?}"
            );
        }
    }

    #[test]
    fn reads_addresses_in_network_byte_order() {
        let v4 = nix::libc::sockaddr_in {
            sin_family: nix::libc::AF_INET as nix::libc::sa_family_t,
            sin_port: 8080u16.to_be(),
            sin_addr: nix::libc::in_addr {
                s_addr: u32::from(Ipv4Addr::new(10, 0, 0, 7)).to_be(),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(from_v4(&v4), addr("10.0.0.7:8080"));
    }

    #[tokio::test]
    async fn a_connection_on_loopback_without_nat_is_addressed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let ((accepted, _), _client) = tokio::try_join!(listener.accept(), client).unwrap();
        assert_eq!(arrival(&accepted), Arrival::Addressed);
    }
}
