//! The control plane's admin HTTP listener: `/ready`, `/live`, `/metrics`, `/proxies`
//! (who is connected and what they acknowledged), `/mesh` (the model in force, with the
//! endpoints its `dns:` entries resolve to, and why the latest change to the mesh file
//! was refused, if it was; with `--source kubernetes`, every problem with the cluster's
//! objects), `/ca` (the trust bundle
//! and the state of a root rotation) and `POST /ca/rotate` (loopback only: start one);
//! and the web dashboard, `/ui` and its `/api/` (see `dashboard`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use std::net::SocketAddr;

use crate::accept::next_connection;
use crate::ca::{CaError, CertificateAuthority};
use crate::dashboard::{self, Dashboard, model_json};
use crate::metrics::Metrics;
use crate::registry::ProxyRegistry;
use crate::rotation::{self, Rotation};
use crate::source::ModelSource;
use seam_proto::exposition;

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<ProxyRegistry>,
    pub source: ModelSource,
    pub ca: Arc<CertificateAuthority>,
    pub rotation: Arc<Rotation>,
    pub dashboard: Arc<Dashboard>,
}

/// Serves the admin API on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let (tcp, peer) = next_connection(&listener, "admin").await;
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move {
                    // The live tap streams; every other answer is whole.
                    let response = if request.uri().path() == "/api/tap" {
                        dashboard::tap(&state, &request)
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
    if request.uri().path() == "/ca/rotate" {
        return rotate(state, request.method(), peer);
    }
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match request.uri().path() {
        "/ready" if !state.source.is_ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the cluster has not been read yet\n",
        ),
        "/ready" | "/live" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
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
        "/proxies" => json_response(&json!({ "proxies": state.registry.snapshot() })),
        "/mesh" => {
            let model = state.source.current();
            let services: serde_json::Map<_, _> = model
                .services()
                .values()
                .map(|service| (service.name.clone(), model_json::mesh_entry(service)))
                .collect();
            let problems: Vec<serde_json::Value> = state
                .source
                .problems()
                .iter()
                .map(|problem| {
                    json!({
                        "kind": problem.kind,
                        "namespace": problem.namespace,
                        "name": problem.name,
                        "message": problem.message,
                    })
                })
                .collect();
            json_response(&json!({
                "version": model.version,
                "trust_domain": model.trust_domain,
                "source": state.source.kind(),
                "path": state.source.path(),
                "services": services,
                "last_error": state.source.last_error(),
                "problems": problems,
            }))
        }
        "/ca" => json_response(&ca_state(state)),
        path if dashboard::serves(path) => dashboard::respond(state, path),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /live, /metrics, /proxies, /mesh, /ca or /ui\n",
        ),
    }
}

/// The trust bundle (signing root first) and where a rotation stands.
pub(crate) fn ca_state(state: &AdminState) -> serde_json::Value {
    let roots: Vec<serde_json::Value> = state
        .ca
        .trust_bundle()
        .iter()
        .map(|root| rotation::root_summary(root))
        .collect();
    json!({
        "trust_domain": state.ca.trust_domain(),
        "rotation": state.rotation.status(),
        "roots": roots,
    })
}

/// `POST /ca/rotate`: starts a root rotation. Loopback clients only: whoever may rotate
/// the roots runs on the control plane's machine.
fn rotate(state: &AdminState, method: &Method, peer: SocketAddr) -> Response<Full<Bytes>> {
    if !peer.ip().is_loopback() {
        tracing::warn!(%peer, "refused /ca/rotate from a non-loopback address");
        return text(
            StatusCode::FORBIDDEN,
            "/ca/rotate is served to loopback clients only\n",
        );
    }
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST /ca/rotate\n");
    }
    match state.rotation.start() {
        Ok(_) => json_response(&ca_state(state)),
        Err(err @ CaError::RotationInProgress(_)) => Response::builder()
            .status(StatusCode::CONFLICT)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(format!("{err}\n"))))
            .expect("static response parts are valid"),
        Err(err) => {
            tracing::error!(error = %err, "cannot start a root rotation");
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(format!("{err}\n"))))
                .expect("static response parts are valid")
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

pub(crate) fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}
