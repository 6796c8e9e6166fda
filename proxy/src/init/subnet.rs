//! One entry of `--skip-subnets`: an IPv4 or IPv6 network in CIDR notation (a bare address
//! is a network of one), kept in the canonical form `iptables-save` prints it in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::rules::Family;

/// A network: its address with the host bits cleared, and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix_len: u8,
}

impl Subnet {
    pub fn family(self) -> Family {
        match self.network {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// `10.0.0.0/8`, `fd00::/8`: what `-d` takes and what `iptables-save` prints back.
impl fmt::Display for Subnet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Subnet {
    type Err = String;

    /// Reads `10.0.0.0/8`, `fd00::/8` or a bare address. Host bits are cleared, as iptables
    /// itself does, so `10.1.2.3/8` is `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix_len) = match text.split_once('/') {
            Some((address, prefix_len)) => (address, Some(prefix_len)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 or IPv6 address"))?;
        let max_len: u8 = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            None => max_len,
            Some(len) => match len.parse::<u8>() {
                Ok(len) if len <= max_len => len,
                _ => return Err(format!("the prefix length is a number from 0 to {max_len}")),
            },
        };
        Ok(Self {
            network: network_address(address, prefix_len),
            prefix_len,
        })
    }
}

/// `address` with every bit past the first `prefix_len` cleared.
fn network_address(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(address) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(address) & mask))
        }
        IpAddr::V6(address) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(address) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_networks_in_their_canonical_form() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8", Family::Ipv4),
            ("10.1.2.3/8", "10.0.0.0/8", Family::Ipv4),
            ("192.168.1.7", "192.168.1.7/32", Family::Ipv4),
            ("0.0.0.0/0", "0.0.0.0/0", Family::Ipv4),
            ("fd00::/8", "fd00::/8", Family::Ipv6),
            ("FD77:0:0::1/64", "fd77::/64", Family::Ipv6),
            ("2001:db8::1", "2001:db8::1/128", Family::Ipv6),
            ("::/0", "::/0", Family::Ipv6),
        ];
        for (text, canonical, family) in cases {
            let subnet: Subnet = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(subnet.to_string(), canonical, "{text}");
            assert_eq!(subnet.family(), family, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_network() {
        let cases = [
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("not-a-cidr", "not an IPv4 or IPv6 address"),
            ("", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/-1", "0 to 32"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<Subnet>().expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
