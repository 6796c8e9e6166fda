//! One entry of a `--skip-inbound-ports` or `--skip-outbound-ports` list: a port (`22`) or
//! an inclusive range (`8000-8100`), and how it is spelled in an iptables `multiport`
//! match, which counts a range as two of its fifteen ports.

use std::fmt;
use std::str::FromStr;

/// An inclusive range of TCP ports; a single port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// How many of a `multiport` match's fifteen slots this entry takes.
    pub fn multiport_slots(self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }
}

/// Spelled as `multiport --dports` wants it: `22` or `8000:8100`.
impl fmt::Display for PortRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(formatter, "{}", self.first)
        } else {
            write!(formatter, "{}:{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// Reads `22` or `8000-8100` (a range names its lower port first).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text.split_once('-') {
            None => parse_port(text).map(Self::single),
            Some((first, last)) => {
                let (first, last) = (parse_port(first)?, parse_port(last)?);
                if first > last {
                    return Err(format!(
                        "a port range names its lower port first ({last}-{first})"
                    ));
                }
                Ok(Self { first, last })
            }
        }
    }
}

/// Reads a TCP port, 1 to 65535 (port 0 cannot be connected to, so it cannot be meant).
pub fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(u16::try_from(port).expect("the match bounds the port")),
        Ok(_) => Err("a port is a number from 1 to 65535".to_string()),
        Err(_) if text.is_empty() => Err("a port is missing".to_string()),
        Err(_) => Err(format!("{text:?} is not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_and_ranges_and_spells_them_for_multiport() {
        let cases = [
            ("22", "22", 1),
            (" 8080 ", "8080", 1),
            ("8000-8100", "8000:8100", 2),
            ("9-9", "9", 1),
            ("1-65535", "1:65535", 2),
        ];
        for (text, spelled, slots) in cases {
            let range: PortRange = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(range.to_string(), spelled, "{text}");
            assert_eq!(range.multiport_slots(), slots, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_port_or_a_range() {
        let cases = [
            ("0", "1 to 65535"),
            ("70000", "1 to 65535"),
            ("9-3", "lower port first"),
            ("", "missing"),
            ("8000-", "missing"),
            ("http", "not a port number"),
            ("-1", "missing"),
            ("1-2-3", "not a port number"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<PortRange>().expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
