//! The control plane's addresses as `--control-plane` gives them (`HOST:PORT`, one per
//! replica, or a DNS name standing for several), their resolution at each connection
//! attempt, and the order in which an attempt tries what they resolve to: each proxy
//! starts at its own place in the list (so proxies spread over the replicas), and the
//! address that failed last is tried last.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One `--control-plane` entry: a host (name or IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneAddress {
    host: String,
    port: u16,
}

impl FromStr for ControlPlaneAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let entry = text.trim();
        if entry.is_empty() {
            return Err("an empty address (give HOST:PORT, several separated by commas)".into());
        }
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{port:?} in {entry:?} is not a port (1-65535)"))?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(ipv6) => ipv6,
            None if host.contains(':') => {
                return Err(format!(
                    "{entry:?}: write an IPv6 address in brackets, such as [::1]:{port}"
                ));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!("{entry:?} names no host before the port"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ControlPlaneAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What every entry resolves to now, in the order given (a name's addresses in the
/// resolver's order), and why the entries that resolve to nothing failed.
pub async fn resolve(addresses: &[ControlPlaneAddress]) -> (Vec<SocketAddr>, Vec<String>) {
    let mut resolved = Vec::new();
    let mut failures = Vec::new();
    for address in addresses {
        match tokio::net::lookup_host((address.host.as_str(), address.port)).await {
            Ok(found) => resolved.extend(found),
            Err(err) => failures.push(format!("{address}: {err}")),
        }
    }
    (resolved, failures)
}

/// The order a connection attempt tries `resolved` in: duplicates dropped, rotated to
/// start at `start` (modulo the length), and `failed_last` moved to the end.
pub fn attempt_order(
    resolved: &[SocketAddr],
    start: usize,
    failed_last: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    let mut order: Vec<SocketAddr> = Vec::with_capacity(resolved.len());
    for address in resolved {
        if !order.contains(address) {
            order.push(*address);
        }
    }
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left(start % len);
    }
    if let Some(failed) = failed_last
        && let Some(index) = order.iter().position(|address| *address == failed)
    {
        let failed = order.remove(index);
        order.push(failed);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ControlPlaneAddress, String> {
        text.parse()
    }

    #[test]
    fn parses_names_ipv4_and_bracketed_ipv6() {
        for (text, host, port, shown) in [
            ("cp-0:8443", "cp-0", 8443, "cp-0:8443"),
            (" 10.0.0.1:1 ", "10.0.0.1", 1, "10.0.0.1:1"),
            ("[::1]:8443", "::1", 8443, "[::1]:8443"),
            (
                "seam-control-plane.seam-system.svc:8443",
                "seam-control-plane.seam-system.svc",
                8443,
                "seam-control-plane.seam-system.svc:8443",
            ),
        ] {
            let address = parse(text).unwrap();
            assert_eq!(
                (address.host.as_str(), address.port),
                (host, port),
                "{text}"
            );
            assert_eq!(address.to_string(), shown);
        }
    }

    #[test]
    fn a_bad_entry_is_named_with_the_reason() {
        for (text, reason) in [
            ("", "empty address"),
            ("cp-0", "is not HOST:PORT"),
            ("cp-0:http", "is not a port"),
            ("cp-0:0", "is not a port"),
            ("cp-0:70000", "is not a port"),
            (":8443", "names no host"),
            ("::1:8443", "in brackets"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect()
    }

    #[test]
    fn each_proxy_starts_at_its_own_place_and_tries_every_address_once() {
        let resolved = addrs(&[1, 2, 3, 2]);
        assert_eq!(attempt_order(&resolved, 0, None), addrs(&[1, 2, 3]));
        assert_eq!(attempt_order(&resolved, 1, None), addrs(&[2, 3, 1]));
        assert_eq!(attempt_order(&resolved, 5, None), addrs(&[3, 1, 2]));
        assert!(attempt_order(&[], 7, None).is_empty());
    }

    #[test]
    fn the_address_that_failed_last_is_tried_last() {
        let resolved = addrs(&[1, 2, 3]);
        let failed = Some(addrs(&[1])[0]);
        assert_eq!(attempt_order(&resolved, 0, failed), addrs(&[2, 3, 1]));
        assert_eq!(attempt_order(&resolved, 2, failed), addrs(&[3, 2, 1]));
        // One that no longer resolves changes nothing.
        let gone = Some(addrs(&[9])[0]);
        assert_eq!(attempt_order(&resolved, 0, gone), addrs(&[1, 2, 3]));
        // A single replica is still tried, even when it just failed.
        assert_eq!(attempt_order(&addrs(&[1]), 0, failed), addrs(&[1]));
    }

    #[tokio::test]
    async fn resolves_every_entry_and_names_those_that_fail() {
        let addresses = [
            parse("127.0.0.1:7001").unwrap(),
            parse("localhost:7002").unwrap(),
            parse("no-such-host.invalid:7003").unwrap(),
        ];
        let (resolved, failures) = resolve(&addresses).await;
        assert_eq!(resolved[0], SocketAddr::from(([127, 0, 0, 1], 7001)));
        assert!(
            resolved[1..]
                .iter()
                .all(|a| a.port() == 7002 && a.ip().is_loopback())
                && resolved.len() >= 2,
            "{resolved:?}"
        );
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("no-such-host.invalid:7003"),
            "{failures:?}"
        );
    }
}
