//! A service's `allow:` list (and the callers of a rate limit's override): each entry is a service of the same mesh file (its SPIFFE
//! id is derived) or a SPIFFE id of the control plane's trust domain. Entries that could
//! never match a caller (an unknown service, a foreign trust domain) are refused, so a typo
//! does not silently lock callers out.

use std::collections::HashSet;

use seam_proto::SpiffeId;
use serde_saphyr::Spanned;

use crate::model::FILE_NAMESPACE;

/// Why one entry was refused, and where it is.
pub struct AllowError {
    pub location: serde_saphyr::Location,
    pub reason: String,
}

/// Turns the `allow:` entries of `service` into SPIFFE ids, in the order written and
/// without repeats. `services` holds every service name of the file.
pub fn resolve(
    service: &str,
    entries: &[Spanned<String>],
    services: &HashSet<String>,
    trust_domain: &str,
) -> Result<Vec<SpiffeId>, AllowError> {
    callers("allow", service, entries, services, trust_domain)
}

/// [`resolve`] for any list of callers; `key` names the list in refusals.
pub fn callers(
    key: &str,
    service: &str,
    entries: &[Spanned<String>],
    services: &HashSet<String>,
    trust_domain: &str,
) -> Result<Vec<SpiffeId>, AllowError> {
    let mut allowed: Vec<SpiffeId> = Vec::with_capacity(entries.len());
    for entry in entries {
        let refuse = |reason: String| AllowError {
            location: entry.referenced,
            reason,
        };
        let text = entry.value.trim();
        let id = if text.starts_with("spiffe://") {
            let id: SpiffeId = text.parse().map_err(|err: seam_proto::SpiffeIdError| {
                refuse(format!("{key} of service {service:?}: {err}"))
            })?;
            if id.trust_domain() != trust_domain {
                return Err(refuse(format!(
                    "{key} of service {service:?} names {id}, outside trust domain {trust_domain:?}: no caller could ever prove it"
                )));
            }
            id
        } else if services.contains(text) {
            SpiffeId::workload(trust_domain, FILE_NAMESPACE, text)
                .map_err(|err| refuse(err.to_string()))?
        } else {
            return Err(refuse(format!(
                "{key} of service {service:?} names {text:?}, which is neither a service of this file nor a spiffe:// id"
            )));
        };
        if !allowed.contains(&id) {
            allowed.push(id);
        }
    }
    Ok(allowed)
}
