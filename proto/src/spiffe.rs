//! SPIFFE ids (`spiffe://<trust-domain>/<path>`): parsing with the spec's rules, the
//! shapes Seam issues, and reading the id out of an X.509 certificate's URI SAN.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The longest SPIFFE id the spec allows, in bytes.
const MAX_LEN: usize = 2048;

/// The namespace and service account the control plane's own certificate names.
const CONTROL_PLANE_NAMESPACE: &str = "seam-system";
const CONTROL_PLANE_ACCOUNT: &str = "seam-control-plane";

/// A validated SPIFFE id. Clones share one string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// Byte offset in `uri` where the path (leading `/`) starts, or `uri.len()` if none.
    path_start: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeIdError {
    #[error("SPIFFE id {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error("SPIFFE id {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("SPIFFE id {id:?} has an invalid trust domain: {why}")]
    TrustDomain { id: String, why: &'static str },
    #[error("SPIFFE id {id:?} has an invalid path: {why}")]
    Path { id: String, why: &'static str },
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("certificate has no spiffe:// URI SAN")]
    NoUriSan,
}

impl SpiffeId {
    /// The id of a workload: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn workload(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The id the control plane's serving certificate carries.
    pub fn control_plane(trust_domain: &str) -> Result<Self, SpiffeIdError> {
        Self::workload(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)
    }

    /// The id of a trust domain itself (`spiffe://<trust-domain>`), as a CA carries it.
    pub fn trust_domain_id(trust_domain: &str) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}").parse()
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The id as a shared string (a reference count, no copy).
    pub fn shared(&self) -> Arc<str> {
        self.uri.clone()
    }

    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len()..self.path_start]
    }

    /// The path, with its leading `/`, or `""` for a trust-domain id.
    pub fn path(&self) -> &str {
        &self.uri[self.path_start..]
    }

    /// The service account of a `/ns/<namespace>/sa/<account>` id.
    pub fn service_account(&self) -> Option<&str> {
        match self.path().split('/').collect::<Vec<_>>().as_slice() {
            ["", "ns", _, "sa", account] => Some(account),
            _ => None,
        }
    }

    /// Reads the single `spiffe://` URI SAN of a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, SpiffeIdError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|err| SpiffeIdError::Certificate(err.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|err| SpiffeIdError::Certificate(err.to_string()))?
            .ok_or(SpiffeIdError::NoUriSan)?;
        san.value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.parse()),
                _ => None,
            })
            .unwrap_or(Err(SpiffeIdError::NoUriSan))
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(id.to_owned()))?;
        if id.len() > MAX_LEN {
            return Err(SpiffeIdError::TooLong(id.to_owned()));
        }
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let bad_domain = |why| SpiffeIdError::TrustDomain {
            id: id.to_owned(),
            why,
        };
        if trust_domain.is_empty() {
            return Err(bad_domain("it is empty"));
        }
        if !trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(bad_domain(
                "only lowercase letters, digits, '-', '.' and '_' are allowed",
            ));
        }
        if !path.is_empty() {
            let bad_path = |why| SpiffeIdError::Path {
                id: id.to_owned(),
                why,
            };
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(bad_path("empty segment or trailing '/'"));
                }
                if segment == "." || segment == ".." {
                    return Err(bad_path("'.' and '..' segments are not allowed"));
                }
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(bad_path(
                        "only letters, digits, '-', '.' and '_' are allowed in segments",
                    ));
                }
            }
        }
        Ok(Self {
            uri: id.into(),
            path_start: "spiffe://".len() + trust_domain.len(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_workload_ids_and_exposes_parts() {
        let id: SpiffeId = "spiffe://seam.local/ns/default/sa/api".parse().unwrap();
        assert_eq!(id.trust_domain(), "seam.local");
        assert_eq!(id.path(), "/ns/default/sa/api");
        assert_eq!(id.service_account(), Some("api"));
        assert_eq!(
            SpiffeId::workload("seam.local", "default", "api").unwrap(),
            id
        );
        let domain = SpiffeId::trust_domain_id("seam.local").unwrap();
        assert_eq!(domain.path(), "");
        assert_eq!(domain.service_account(), None);
    }

    #[test]
    fn rejects_malformed_ids_with_the_reason() {
        let cases = [
            ("http://seam.local/x", "does not start with spiffe://"),
            ("spiffe://", "trust domain: it is empty"),
            ("spiffe:///ns/a", "trust domain: it is empty"),
            ("spiffe://Seam.Local/ns/a", "only lowercase"),
            ("spiffe://seam.local/ns//a", "empty segment"),
            ("spiffe://seam.local/ns/a/", "empty segment"),
            ("spiffe://seam.local/ns/../a", "'.' and '..'"),
            ("spiffe://seam.local/ns/a b", "only letters"),
            ("spiffe://seam.local:8080/x", "only lowercase"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
        let long = format!("spiffe://seam.local/{}", "a".repeat(MAX_LEN));
        assert!(matches!(
            long.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong(_))
        ));
    }
}
