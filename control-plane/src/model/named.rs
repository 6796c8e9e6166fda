//! Endpoints by DNS name (`dns:NAME:PORT` in the mesh file): the validated name, the
//! entry as written, and the addresses each name currently resolves to. The model holds
//! a name's resolved addresses as ordinary endpoints (one per address, at the entry's
//! port), so everything that works for a listed IP:port works for them; which addresses
//! a name has is the resolver's business (`crate::dns`), not the model's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The longest DNS name, without its final dot (RFC 1035).
const MAX_NAME_LEN: usize = 253;
/// The longest label of a DNS name.
const MAX_LABEL_LEN: usize = 63;

/// A DNS name, checked and lowercased (names are compared without regard to case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// `text` as a DNS name, or why it is not one. Labels are letters, digits, `-` and
    /// `_` (compose names containers `project_api_1`), none starting or ending with `-`;
    /// one final dot is allowed (a fully qualified name).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let name = text.strip_suffix('.').unwrap_or(text);
        if name.is_empty() {
            return Err("it is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return Err("it is longer than 253 characters");
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("it has an empty label (two dots in a row, or a leading dot)");
            }
            if label.len() > MAX_LABEL_LEN {
                return Err("it has a label longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err("it may hold only letters, digits, '-', '_' and dots");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("a label may not start or end with '-'");
            }
        }
        if name.parse::<IpAddr>().is_ok() {
            return Err("it is an IP address, not a name");
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `dns:NAME:PORT` entry of a service's endpoints: every address of `name`, at
/// `port`, is an instance of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEndpoint {
    pub name: DnsName,
    pub port: u16,
}

impl fmt::Display for NamedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns:{}:{}", self.name, self.port)
    }
}

/// What each name resolves to now: its addresses, ascending and each once. A name with
/// no entry has not been resolved yet; an empty list has no addresses (it does not exist,
/// or has no A or AAAA records). Either way its entries bring no endpoints.
pub type Resolutions = BTreeMap<DnsName, Vec<IpAddr>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_names_and_says_why_others_are_not() {
        for good in [
            "api",
            "API",
            "api.",
            "project_api_1",
            "a-b.example.com",
            "x1",
        ] {
            assert!(DnsName::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            DnsName::parse("API.Example").unwrap().as_str(),
            "api.example"
        );
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 5].join(".");
        let cases = [
            ("", "it is empty"),
            (".", "it is empty"),
            (long_name.as_str(), "it is longer than 253 characters"),
            (
                "a..b",
                "it has an empty label (two dots in a row, or a leading dot)",
            ),
            (
                ".a",
                "it has an empty label (two dots in a row, or a leading dot)",
            ),
            (
                long_label.as_str(),
                "it has a label longer than 63 characters",
            ),
            (
                "api/v1",
                "it may hold only letters, digits, '-', '_' and dots",
            ),
            ("-api", "a label may not start or end with '-'"),
            ("api-.x", "a label may not start or end with '-'"),
            ("10.0.0.7", "it is an IP address, not a name"),
        ];
        for (text, why) in cases {
            assert_eq!(DnsName::parse(text), Err(why), "{text:?}");
        }
    }
}
