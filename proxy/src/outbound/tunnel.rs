//! `CONNECT host:port` from the app: a tunnel through the mesh. The authority is resolved
//! like any other (a service name, or an IP:port); for a service of the mesh the proxy
//! answers `200` and carries the app's bytes as an opaque stream over mTLS to one of its
//! endpoints; an IP:port the mesh does not know is passed through as plain TCP, as a
//! redirected connection would be. A name the mesh does not know is refused (`503`).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::target::service_key;
use super::{FIRST_LOOKUP_WAIT, Labels, Outbound};
use crate::body::{self, ProxyBody};
use crate::opaque;
use crate::proxy_error::ProxyError;
use crate::state::Resolution;
use crate::state::policy::DEFAULT_ROUTE_LABEL;

/// Answers a `CONNECT`, and opens the tunnel once hyper hands the connection over.
pub async fn open(
    outbound: Arc<Outbound>,
    mut request: Request<Incoming>,
) -> (Labels, Result<Response<ProxyBody>, ProxyError>) {
    let unknown = Labels {
        service: outbound.unknown_service.clone(),
        route: DEFAULT_ROUTE_LABEL.clone(),
        request_id: None,
    };
    let Some(authority) = request.uri().authority().cloned() else {
        return (unknown, Err(ProxyError::NoAuthority));
    };
    let key = service_key(&authority).into_owned();
    let resolution = match outbound.directory.resolve(&key, FIRST_LOOKUP_WAIT).await {
        Ok(resolution) => resolution,
        Err(err) => return (unknown, Err(err.into())),
    };
    let connection = hyper::upgrade::on(&mut request);
    let labels = match resolution {
        Resolution::Found(service) => {
            let labels = Labels {
                service: service.name.clone(),
                route: DEFAULT_ROUTE_LABEL.clone(),
                request_id: None,
            };
            let outbound = outbound.clone();
            tokio::spawn(async move {
                match connection.await {
                    Ok(upgraded) => {
                        outbound
                            .forwarder
                            .forward(TokioIo::new(upgraded), &service)
                            .await;
                    }
                    Err(err) => tracing::debug!(error = %err, "a CONNECT tunnel did not open"),
                }
            });
            labels
        }
        Resolution::NotFound => match authority.as_str().parse() {
            Ok(destination) => {
                let metrics = outbound.metrics.clone();
                tokio::spawn(async move {
                    if let Ok(upgraded) = connection.await {
                        opaque::passthrough(TokioIo::new(upgraded), destination, &metrics).await;
                    }
                });
                unknown
            }
            Err(_) => return (unknown, Err(ProxyError::UnknownService(key))),
        },
        Resolution::Pending => return (unknown, Err(ProxyError::DiscoveryPending(key))),
    };
    let established = Response::builder()
        .status(StatusCode::OK)
        .body(body::empty())
        .expect("a status and an empty body make a response");
    (labels, Ok(established))
}
