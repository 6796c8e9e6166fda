//! The proxy's admin HTTP listener (loopback by default): `/ready`, `/live`, `/metrics`,
//! `/config` (discovery state, subscriptions and ejected endpoints), `/identity` (the
//! certificate held), `/callers` (who called this service, over mTLS or not),
//! `/tap` (live requests, for clients in `--tap-allow`; see `crate::tap::serve`) and
//! `POST /shutdown` (loopback clients only: drain and exit, for Jobs).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::control_plane::ControlPlane;
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::server::next_connection;
use crate::state::Directory;
use crate::state::endpoints::EndpointStates;
use crate::tap::serve::{AdminBody, TapEndpoint};
use crate::tls::TlsState;
use seam_proto::exposition;

pub struct AdminState {
    pub service: String,
    /// The replicas configured and the one the discovery stream is on.
    pub control_plane: ControlPlane,
    pub tls: Arc<TlsState>,
    pub directory: Arc<Directory>,
    /// Circuit breaker state, for the ejected endpoints `/config` lists.
    pub endpoint_states: Arc<EndpointStates>,
    pub metrics: Arc<Metrics>,
    pub discovery_connected: Arc<AtomicBool>,
    pub discovery_ever_connected: watch::Receiver<bool>,
    /// Set once a stop was asked for: the proxy is draining and should get no new traffic.
    pub draining: Arc<AtomicBool>,
    pub inbound: Arc<Inbound>,
    /// Cancelled by `POST /shutdown`: the proxy drains and exits as on SIGTERM.
    pub shutdown_requested: CancellationToken,
    pub tap: TapEndpoint,
}

impl AdminState {
    /// Why the proxy is not ready, if it is not.
    fn not_ready_because(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if self.tls.certificate().is_none() {
            Some("no certificate yet")
        } else if !*self.discovery_ever_connected.borrow() {
            Some("discovery stream not up yet")
        } else if !self.directory.is_answered(self.inbound.policy_authority()) {
            // Until then the inbound side cannot authorize callers.
            Some("own authorization policy not received yet")
        } else {
            None
        }
    }
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    // The admin listener serves until the process exits.
    let never = CancellationToken::new();
    while let Some((tcp, peer)) =
        next_connection(&listener, &never, "admin", &state.metrics.refusal_log).await
    {
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move {
                    let response: Response<AdminBody> = if request.uri().path() == "/tap" {
                        state.tap.serve(&request, peer)
                    } else {
                        route(&state, &request, peer).map(BodyExt::boxed_unsync)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn route(
    state: &AdminState,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/shutdown" {
        return shutdown(state, request.method(), peer);
    }
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here\n".into(),
        );
    }
    match request.uri().path() {
        "/live" => text(StatusCode::OK, "ok\n".into()),
        "/ready" => match state.not_ready_because() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let connected = state.discovery_connected.load(Ordering::Relaxed);
            state.metrics.discovery_connected.set(i64::from(connected));
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok());
            let (content_type, body) = exposition::negotiate(state.metrics.encode(), accept);
            Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(body)))
                .expect("static response parts are valid")
        }
        "/config" => json_response(&json!({
            "service": state.service,
            "discovery": {
                "control_plane": state.control_plane.addresses(),
                "connected": state.discovery_connected.load(Ordering::Relaxed),
                "connected_to": state.control_plane.discovery_replica().map(|replica| replica.to_string()),
            },
            "subscriptions": state.directory.describe(),
            "ejected_endpoints": state.endpoint_states.ejected(),
        })),
        "/identity" => match state.tls.certificate() {
            Some(certificate) => json_response(&json!({
                "spiffe_id": certificate.spiffe_id.as_str(),
                "serial": certificate.serial_hex,
                "not_before": rfc3339(certificate.not_before),
                "not_after": rfc3339(certificate.not_after),
                "issuer": certificate.issuer,
                "issuer_key_id": certificate.issuer_key_id,
            })),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no certificate yet\n".into(),
            ),
        },
        "/callers" => json_response(&json!({
            "service": state.service,
            "spiffe_id": state.tls.certificate().map(|c| c.spiffe_id.to_string()),
            "callers": state.inbound.callers().snapshot(),
            "plaintext_callees": state.metrics.plaintext_callees.snapshot(),
        })),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /live, /metrics, /config, /identity, /callers or /tap\n".into(),
        ),
    }
}

/// `POST /shutdown`: drain and exit as on SIGTERM (for Jobs whose main container is done).
/// Only from loopback, whatever address the admin listener is bound to.
fn shutdown(state: &AdminState, method: &Method, peer: SocketAddr) -> Response<Full<Bytes>> {
    if !peer.ip().is_loopback() {
        tracing::warn!(%peer, "refused /shutdown from a non-loopback address");
        return text(
            StatusCode::FORBIDDEN,
            "/shutdown is served to loopback clients only\n".into(),
        );
    }
    if method != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /shutdown\n".into(),
        );
    }
    state.shutdown_requested.cancel();
    text(StatusCode::OK, "shutting down\n".into())
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}
