//! Authorization of inbound callers, as a pure decision: given who is calling (a mesh
//! identity proven by mTLS, or nobody over plaintext), the service's policy and, when the
//! request matched a route that carries its own list, that route's list, may the call
//! proceed? A route's list replaces the service's; "no list" means any mesh identity.
//! No sockets and no I/O here, so every case is a table row in the tests.

use seam_proto::SpiffeId;

/// Who may call a service, as the control plane last sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// `None`: any mesh identity. `Some`: only these identities.
    pub allow: Option<Vec<SpiffeId>>,
    /// Whether a caller without mTLS may call at all.
    pub allow_plaintext: bool,
}

/// The caller of one inbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// Proven by a client certificate from the mesh CA.
    Mesh(&'a SpiffeId),
    /// Came without TLS; has no identity.
    Plaintext,
}

/// Why a call was refused; the text is the body of the 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{caller} is not allowed to call {service}")]
    NotAllowed { caller: SpiffeId, service: String },
    #[error("{service} accepts only mTLS callers, and this call came in plaintext")]
    PlaintextRefused { service: String },
}

impl Denied {
    /// A short, bounded label for metrics.
    pub fn reason_label(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. } => "not_allowed",
            Self::PlaintextRefused { .. } => "plaintext",
        }
    }
}

/// Decides whether `caller` may call `service` under `policy`; `route_allow` is the list
/// of the route the request matched, if that route has one.
pub fn authorize(
    caller: Caller<'_>,
    service: &str,
    policy: &Authorization,
    route_allow: Option<&[SpiffeId]>,
) -> Result<(), Denied> {
    let caller = match caller {
        Caller::Mesh(id) => id,
        Caller::Plaintext if policy.allow_plaintext => return Ok(()),
        Caller::Plaintext => {
            return Err(Denied::PlaintextRefused {
                service: service.to_owned(),
            });
        }
    };
    let allow = route_allow.or(policy.allow.as_deref());
    match allow {
        None => Ok(()),
        Some(allowed) if allowed.contains(caller) => Ok(()),
        Some(_) => Err(Denied::NotAllowed {
            caller: caller.clone(),
            service: service.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(account: &str) -> SpiffeId {
        SpiffeId::workload("seam.local", "default", account).unwrap()
    }

    /// Caller, service policy, route list, and the expected outcome.
    type Row<'a> = (
        Caller<'a>,
        &'a Authorization,
        Option<&'a [SpiffeId]>,
        Result<(), &'static str>,
    );

    #[test]
    fn decides_every_combination_of_caller_service_list_and_route_list() {
        let web = id("web");
        let billing = id("billing");
        let only_web = Authorization {
            allow: Some(vec![web.clone()]),
            allow_plaintext: false,
        };
        let nobody = Authorization {
            allow: Some(vec![]),
            allow_plaintext: false,
        };
        let open = Authorization::default();
        let plaintext_ok = Authorization {
            allow: Some(vec![web.clone()]),
            allow_plaintext: true,
        };
        let route_billing = [billing.clone()];
        // (caller, policy, route list, allowed?)
        let cases: Vec<Row> = vec![
            (Caller::Mesh(&web), &open, None, Ok(())),
            (Caller::Mesh(&billing), &open, None, Ok(())),
            (Caller::Mesh(&web), &only_web, None, Ok(())),
            (Caller::Mesh(&billing), &only_web, None, Err("not_allowed")),
            (Caller::Mesh(&web), &nobody, None, Err("not_allowed")),
            // A route's own list replaces the service's, both ways.
            (
                Caller::Mesh(&billing),
                &only_web,
                Some(&route_billing),
                Ok(()),
            ),
            (
                Caller::Mesh(&web),
                &only_web,
                Some(&route_billing),
                Err("not_allowed"),
            ),
            (
                Caller::Mesh(&web),
                &open,
                Some(&route_billing),
                Err("not_allowed"),
            ),
            (Caller::Plaintext, &open, None, Err("plaintext")),
            (Caller::Plaintext, &only_web, None, Err("plaintext")),
            (Caller::Plaintext, &plaintext_ok, None, Ok(())),
        ];
        for (row, (caller, policy, route, want)) in cases.into_iter().enumerate() {
            let got = authorize(caller, "api", policy, route);
            assert_eq!(
                got.as_ref().map_err(Denied::reason_label).copied(),
                want,
                "row {row}: {caller:?} {policy:?} route {route:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn refusals_name_both_identities() {
        let policy = Authorization {
            allow: Some(vec![id("web")]),
            allow_plaintext: false,
        };
        let err = authorize(Caller::Mesh(&id("billing")), "api", &policy, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spiffe://seam.local/ns/default/sa/billing is not allowed to call api"
        );
    }
}
