//! Turning a `seam.v1.ServiceUpdate` into the proxy's own [`Resolution`], refusing anything
//! malformed with a reason the control plane will see in the NACK.

use std::net::SocketAddr;
use std::sync::Arc;

use seam_proto::SpiffeId;
use seam_proto::v1::{self, ServiceUpdate, service_update};

use super::policy::{match_from_proto, policy_from_proto};
use crate::state::policy::{Target, WeightedBackend};
use crate::state::{Backend, Endpoint, Resolution};

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
                                    backend.service,
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
                    Ok((route_match, policy, backends))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Resolution::Found(Arc::new(Backend::with_routes(
                service.name,
                endpoints,
                policy,
                routes,
            ))))
        }
    }
}

fn endpoints_from_proto(endpoints: Vec<v1::Endpoint>) -> Result<Vec<Endpoint>, InvalidUpdate> {
    endpoints
        .into_iter()
        .map(|endpoint| {
            let address: SocketAddr = endpoint
                .address
                .parse()
                .map_err(|_| InvalidUpdate::Address(endpoint.address.clone()))?;
            let identity: SpiffeId =
                endpoint
                    .identity
                    .parse()
                    .map_err(|err: seam_proto::SpiffeIdError| InvalidUpdate::Identity {
                        address: endpoint.address.clone(),
                        reason: err.to_string(),
                    })?;
            Ok(Endpoint { address, identity })
        })
        .collect()
}

#[cfg(test)]
mod tests;
