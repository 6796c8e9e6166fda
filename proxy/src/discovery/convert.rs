//! Turning a `seam.v1.ServiceUpdate` into the proxy's own [`Resolution`], refusing anything
//! malformed with a reason the control plane will see in the NACK.

use std::net::SocketAddr;
use std::sync::Arc;

use seam_proto::SpiffeId;
use seam_proto::v1::{self, ServiceUpdate, service_update};

use super::policy::{match_from_proto, policy_from_proto};
use crate::state::authz::Authorization;
use crate::state::policy::{Route, Target, WeightedBackend};
use crate::state::{Endpoint, Resolution, Service};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUpdate {
    #[error("the update has no state")]
    NoState,
    #[error("endpoint address {0:?} is not an IP:port")]
    Address(String),
    #[error("endpoint {address} has an invalid identity: {reason}")]
    Identity { address: String, reason: String },
    #[error("invalid policy: {0}")]
    Policy(String),
    #[error("invalid route: {0}")]
    Route(String),
    #[error("the allow list holds an invalid identity: {0}")]
    AllowedIdentity(String),
    #[error("opaque port {0} is not a port (1 to 65535)")]
    OpaquePort(u32),
}

pub fn update_from_proto(update: ServiceUpdate) -> Result<Resolution, InvalidUpdate> {
    match update.state.ok_or(InvalidUpdate::NoState)? {
        service_update::State::NotFound(_) => Ok(Resolution::NotFound),
        service_update::State::Service(service) => {
            let endpoints = endpoints_from_proto(service.endpoints)?;
            let policy = policy_from_proto(service.policy)?;
            let routes = service
                .routes
                .into_iter()
                .map(|route| {
                    let route_match = match_from_proto(route.r#match)?;
                    let policy = policy_from_proto(route.policy)?;
                    let backends = route
                        .backends
                        .into_iter()
                        .map(|backend| {
                            Ok(WeightedBackend {
                                weight: backend.weight,
                                target: Arc::new(Target::new(
                                    backend.service.into(),
                                    endpoints_from_proto(backend.endpoints)?,
                                )),
                            })
                        })
                        .collect::<Result<Vec<_>, InvalidUpdate>>()?;
                    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
                        return Err(InvalidUpdate::Route(
                            "the backends' weights are all 0".into(),
                        ));
                    }
                    let allow = route
                        .authorization
                        .map(authorization_from_proto)
                        .transpose()?
                        .and_then(|authorization| authorization.allow);
                    Ok(Route::new(route_match, policy, backends, allow))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let authorization =
                authorization_from_proto(service.authorization.unwrap_or_default())?;
            let opaque_ports = service
                .opaque_ports
                .iter()
                .map(|&port| {
                    u16::try_from(port)
                        .ok()
                        .filter(|&port| port != 0)
                        .ok_or(InvalidUpdate::OpaquePort(port))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Resolution::Found(Arc::new(
                Service::with_routes(service.name, endpoints, policy, routes)
                    .with_authorization(authorization)
                    .with_opaque_ports(opaque_ports)
                    .with_request_id_off(service.request_id_off),
            )))
        }
    }
}

pub(super) fn endpoints_from_proto(
    endpoints: Vec<v1::Endpoint>,
) -> Result<Vec<Endpoint>, InvalidUpdate> {
    endpoints
        .into_iter()
        .map(|endpoint| {
            let address: SocketAddr = endpoint
                .address
                .parse()
                .map_err(|_| InvalidUpdate::Address(endpoint.address.clone()))?;
            let identity = match (endpoint.plaintext, endpoint.identity.is_empty()) {
                (true, true) => None,
                (true, false) => {
                    return Err(InvalidUpdate::Identity {
                        address: endpoint.address,
                        reason: "a plaintext endpoint must have no identity".into(),
                    });
                }
                (false, true) => {
                    return Err(InvalidUpdate::Identity {
                        address: endpoint.address,
                        reason: "empty, and the endpoint is not marked plaintext".into(),
                    });
                }
                (false, false) => Some(endpoint.identity.parse::<SpiffeId>().map_err(
                    |err: seam_proto::SpiffeIdError| InvalidUpdate::Identity {
                        address: endpoint.address.clone(),
                        reason: err.to_string(),
                    },
                )?),
            };
            Ok(Endpoint { address, identity })
        })
        .collect()
}

fn authorization_from_proto(
    authorization: v1::Authorization,
) -> Result<Authorization, InvalidUpdate> {
    let allow = if authorization.restricted {
        let ids = authorization
            .allowed_identities
            .iter()
            .map(|id| id.parse::<SpiffeId>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| InvalidUpdate::AllowedIdentity(err.to_string()))?;
        Some(ids)
    } else {
        None
    };
    Ok(Authorization {
        allow,
        allow_plaintext: authorization.allow_plaintext,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod authorization_tests {
    use super::*;
    use seam_proto::v1;

    fn with_authorization(authorization: Option<v1::Authorization>) -> ServiceUpdate {
        ServiceUpdate {
            authority: "api".into(),
            version: 1,
            state: Some(service_update::State::Service(v1::Service {
                name: "api".into(),
                endpoints: vec![],
                authorization,
                ..v1::Service::default()
            })),
        }
    }

    fn converted(update: ServiceUpdate) -> Result<Authorization, InvalidUpdate> {
        match update_from_proto(update)? {
            Resolution::Found(backend) => Ok(backend.authorization.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_allow_list_and_refuses_bad_ids() {
        assert_eq!(
            converted(with_authorization(None)).unwrap(),
            Authorization::default()
        );
        let restricted = converted(with_authorization(Some(v1::Authorization {
            restricted: true,
            allowed_identities: vec!["spiffe://seam.local/ns/default/sa/web".into()],
            allow_plaintext: true,
        })))
        .unwrap();
        assert_eq!(
            restricted.allow.unwrap()[0].as_str(),
            "spiffe://seam.local/ns/default/sa/web"
        );
        assert!(restricted.allow_plaintext);
        let nobody = converted(with_authorization(Some(v1::Authorization {
            restricted: true,
            ..v1::Authorization::default()
        })))
        .unwrap();
        assert_eq!(nobody.allow, Some(vec![]));
        let err = converted(with_authorization(Some(v1::Authorization {
            restricted: true,
            allowed_identities: vec!["web".into()],
            allow_plaintext: false,
        })))
        .unwrap_err();
        assert!(err.to_string().contains("allow list"), "{err}");
    }
}
