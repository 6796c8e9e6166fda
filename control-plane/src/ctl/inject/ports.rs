//! The TCP ports a compose service serves, read from its `ports:` (the container side of
//! `"8080:80"`, `"127.0.0.1:8080:80/tcp"`, `80`, `"9000-9002"`, or `{ target: 80 }`) and
//! its `expose:`. They become the service's `ports` in the mesh file, so that a connection
//! to the service's address and port is known to the mesh in transparent mode. UDP and
//! SCTP ports are left out: the mesh carries TCP.

use super::yaml::{Mapping, Yaml};

/// The widest port range a service may declare: each port is an entry in the mesh file.
const WIDEST_RANGE: u16 = 100;

/// What a service's `ports:` and `expose:` say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServedPorts {
    /// Container TCP ports, `ports:` first, then `expose:`, each once.
    pub tcp: Vec<u16>,
    /// Whether `ports:` publishes any port on the host.
    pub published: bool,
}

/// Reads `ports:` and `expose:` from `service` (a service, or a sidecar that holds them).
pub fn served(service: &Mapping) -> Result<ServedPorts, String> {
    let mut served = ServedPorts::default();
    for (key, container_side) in [("ports", true), ("expose", false)] {
        let Some(entries) = service.get(key) else {
            continue;
        };
        let Yaml::Seq(entries) = entries else {
            return Err(format!("`{key}` is {}; expected a list", entries.kind()));
        };
        for entry in entries {
            let (ports, protocol) = if container_side {
                served.published = true;
                port_entry(entry)?
            } else {
                expose_entry(entry)?
            };
            if protocol != "tcp" {
                continue;
            }
            for port in ports {
                if !served.tcp.contains(&port) {
                    served.tcp.push(port);
                }
            }
        }
    }
    Ok(served)
}

/// One `ports:` entry: its container ports and protocol.
fn port_entry(entry: &Yaml) -> Result<(Vec<u16>, String), String> {
    if let Yaml::Map(long) = entry {
        let target = long
            .get("target")
            .and_then(Yaml::scalar_text)
            .ok_or_else(|| "a `ports` entry in the long syntax has no `target`".to_owned())?;
        let protocol = long
            .get("protocol")
            .and_then(Yaml::as_str)
            .unwrap_or("tcp")
            .to_owned();
        return Ok((range(&target)?, protocol));
    }
    let text = entry.scalar_text().ok_or_else(|| {
        format!(
            "a `ports` entry is {}; expected \"HOST:CONTAINER\" or a port",
            entry.kind()
        )
    })?;
    let (mapping, protocol) = split_protocol(&text);
    // HOST_IP:HOST:CONTAINER, HOST:CONTAINER or CONTAINER; an IPv6 host IP has colons of
    // its own, but the container side is always last.
    let container = mapping.rsplit(':').next().unwrap_or(mapping);
    Ok((range(container)?, protocol))
}

/// One `expose:` entry: a port or a range, perhaps with a protocol.
fn expose_entry(entry: &Yaml) -> Result<(Vec<u16>, String), String> {
    let text = entry
        .scalar_text()
        .ok_or_else(|| format!("an `expose` entry is {}; expected a port", entry.kind()))?;
    let (ports, protocol) = split_protocol(&text);
    Ok((range(ports)?, protocol))
}

fn split_protocol(text: &str) -> (&str, String) {
    match text.rsplit_once('/') {
        Some((ports, protocol)) => (ports, protocol.to_ascii_lowercase()),
        None => (text, "tcp".to_owned()),
    }
}

/// `80` or `9000-9002`.
fn range(text: &str) -> Result<Vec<u16>, String> {
    let port = |part: &str| {
        part.trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                format!("port {text:?} is not a port from 1 to 65535 or a range of them")
            })
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => {
            let single = port(text)?;
            (single, single)
        }
    };
    if last < first || last - first >= WIDEST_RANGE {
        return Err(format!(
            "port range {text:?} is not a range of at most {WIDEST_RANGE} ports"
        ));
    }
    Ok((first..=last).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_by(yaml: &str) -> Result<ServedPorts, String> {
        let service: Yaml = serde_saphyr::from_str(yaml).unwrap();
        served(service.as_map().unwrap())
    }

    #[test]
    fn container_sides_of_every_syntax() {
        let ports = served_by(
            "ports:\n- '8080:80'\n- '127.0.0.1:8443:443/tcp'\n- 9000-9001\n- 53/udp\n\
             - '[::1]:2222:22'\n- { target: 5000, published: 5001 }\n- 80\n\
             expose: ['3000', 3001, '6000/udp']\n",
        )
        .unwrap();
        assert_eq!(
            ports,
            ServedPorts {
                tcp: vec![80, 443, 9000, 9001, 22, 5000, 3000, 3001],
                published: true,
            }
        );
        let exposed_only = served_by("expose: ['6379']\n").unwrap();
        assert_eq!(exposed_only.tcp, [6379]);
        assert!(!exposed_only.published);
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            served_by("ports: '80'\n").unwrap_err(),
            "`ports` is a string; expected a list"
        );
        assert_eq!(
            served_by("expose: ['http']\n").unwrap_err(),
            "port \"http\" is not a port from 1 to 65535 or a range of them"
        );
        assert_eq!(
            served_by("ports: ['1000-5000:1000-5000']\n").unwrap_err(),
            "port range \"1000-5000\" is not a range of at most 100 ports"
        );
    }
}
