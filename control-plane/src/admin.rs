//! The control plane's admin HTTP listener: `/ready`, `/live`, `/metrics`, `/proxies`
//! (who is connected and what they acknowledged) and `/mesh` (the model in force and why
//! the latest change to the mesh file was refused, if it was).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::registry::ProxyRegistry;
use crate::source::MeshSource;
use seam_proto::exposition;

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<ProxyRegistry>,
    pub source: Arc<MeshSource>,
}

/// Serves the admin API on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn route(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match request.uri().path() {
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
                .services
                .values()
                .map(|service| {
                    let endpoints: Vec<String> = service
                        .endpoints
                        .iter()
                        .map(|endpoint| endpoint.address.to_string())
                        .collect();
                    (service.name.clone(), json!({ "endpoints": endpoints }))
                })
                .collect();
            json_response(&json!({
                "version": model.version,
                "trust_domain": model.trust_domain,
                "path": state.source.path(),
                "services": services,
                "last_error": state.source.last_error(),
            }))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /live, /metrics, /proxies or /mesh\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}
