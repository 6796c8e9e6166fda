//! Binding a listener flag's addresses. `--inbound` and `--outbound` take a list, so one
//! proxy serves IPv4 and IPv6: transparent mode redirects an IPv6 connection to the IPv6
//! address of a listener (`[::1]:4140` outbound, the pod's own IPv6 address inbound). An
//! IPv6 socket is bound IPv6-only, so it never collides with the IPv4 one on the same
//! port. On a machine without IPv6 (common in containers) an IPv6 address that cannot be
//! bound is left out, with a line saying so; any other failure is an error naming the flag.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// How many connections may wait to be accepted.
const BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {address} ({flag}): {source}")]
    Address {
        address: SocketAddr,
        flag: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{flag} names no address that could be bound ({left_out} IPv6 left out: no IPv6 here)")]
    Nothing { flag: &'static str, left_out: usize },
}

/// Binds every address of `flag`; IPv6 ones the machine cannot have are left out.
pub fn bind_all(
    addresses: &[SocketAddr],
    flag: &'static str,
) -> Result<Vec<TcpListener>, BindError> {
    let mut listeners = Vec::with_capacity(addresses.len());
    let mut left_out = 0;
    for &address in addresses {
        match bind(address) {
            Ok(listener) => listeners.push(listener),
            Err(err) if address.is_ipv6() && no_ipv6(&err) => {
                tracing::info!(%address, flag, error = %err, "no IPv6 here: not listening on this address");
                left_out += 1;
            }
            Err(source) => {
                return Err(BindError::Address {
                    address,
                    flag,
                    source,
                });
            }
        }
    }
    if listeners.is_empty() {
        return Err(BindError::Nothing { flag, left_out });
    }
    Ok(listeners)
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // As tokio's own bind does: a restarted proxy binds again at once.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Whether an IPv6 bind failed because the machine has no IPv6 (rather than the address
/// being taken, say).
fn no_ipv6(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL | nix::libc::EPROTONOSUPPORT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_ipv4_and_ipv6_on_one_port_side_by_side() {
        let first = bind_all(&["127.0.0.1:0".parse().unwrap()], "--outbound").unwrap();
        let port = first[0].local_addr().unwrap().port();
        drop(first);
        let both = [
            SocketAddr::from(([127, 0, 0, 1], port)),
            format!("[::1]:{port}").parse().unwrap(),
        ];
        let listeners = bind_all(&both, "--outbound").unwrap();
        assert!(!listeners.is_empty());
        assert_eq!(listeners[0].local_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_naming_the_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let err = bind_all(&[address], "--inbound").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot listen on {address} (--inbound): ")),
            "{err}"
        );
    }
}
