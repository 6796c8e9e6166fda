//! Turning a `seam.v1.ServiceUpdate` into the proxy's own [`Resolution`], refusing anything
//! malformed with a reason the control plane will see in the NACK.

use std::net::SocketAddr;
use std::sync::Arc;

use seam_proto::SpiffeId;
use seam_proto::v1::{ServiceUpdate, service_update};

use crate::state::{Backend, Endpoint, Resolution};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUpdate {
    #[error("the update has no state")]
    NoState,
    #[error("endpoint address {0:?} is not an IP:port")]
    Address(String),
    #[error("endpoint {address} has an invalid identity: {reason}")]
    Identity { address: String, reason: String },
}

pub fn update_from_proto(update: ServiceUpdate) -> Result<Resolution, InvalidUpdate> {
    match update.state.ok_or(InvalidUpdate::NoState)? {
        service_update::State::NotFound(_) => Ok(Resolution::NotFound),
        service_update::State::Service(service) => {
            let endpoints =
                service
                    .endpoints
                    .into_iter()
                    .map(|endpoint| {
                        let address: SocketAddr = endpoint
                            .address
                            .parse()
                            .map_err(|_| InvalidUpdate::Address(endpoint.address.clone()))?;
                        let identity: SpiffeId = endpoint.identity.parse().map_err(
                            |err: seam_proto::SpiffeIdError| InvalidUpdate::Identity {
                                address: endpoint.address.clone(),
                                reason: err.to_string(),
                            },
                        )?;
                        Ok(Endpoint { address, identity })
                    })
                    .collect::<Result<_, _>>()?;
            Ok(Resolution::Found(Arc::new(Backend::new(
                service.name,
                endpoints,
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_proto::v1;

    fn update(endpoints: Vec<(&str, &str)>) -> ServiceUpdate {
        ServiceUpdate {
            authority: "api".into(),
            version: 3,
            state: Some(service_update::State::Service(v1::Service {
                name: "api".into(),
                endpoints: endpoints
                    .into_iter()
                    .map(|(address, identity)| v1::Endpoint {
                        address: address.into(),
                        identity: identity.into(),
                    })
                    .collect(),
                ..v1::Service::default()
            })),
        }
    }

    #[test]
    fn converts_valid_updates_and_refuses_malformed_ones_with_a_reason() {
        let ok = update(vec![(
            "127.0.0.1:1",
            "spiffe://seam.local/ns/default/sa/api",
        )]);
        match update_from_proto(ok).unwrap() {
            Resolution::Found(backend) => assert_eq!(backend.endpoints[0].address.port(), 1),
            other => panic!("{other:?}"),
        }
        let not_found = ServiceUpdate {
            state: Some(service_update::State::NotFound(v1::NotFound {})),
            ..ServiceUpdate::default()
        };
        assert!(matches!(
            update_from_proto(not_found),
            Ok(Resolution::NotFound)
        ));

        let cases = [
            (
                update(vec![("nowhere", "spiffe://seam.local/ns/default/sa/api")]),
                "\"nowhere\" is not an IP:port",
            ),
            (update(vec![("127.0.0.1:1", "api")]), "invalid identity"),
            (ServiceUpdate::default(), "no state"),
        ];
        for (input, reason) in cases {
            let err = update_from_proto(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
    }
}
