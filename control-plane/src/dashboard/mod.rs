//! The web dashboard on the control plane's admin listener: a page (`/ui`, with `/`
//! redirecting there) and the JSON it draws from (`/api/graph`, `/api/services/NAME`,
//! `/api/certs`), which `seamctl` and scripts can read too, and the live tap of one
//! service as server-sent events (`/api/tap?service=NAME`, see `tap_relay`).
//!
//! The numbers come from a background task (`scrape`) that reads every connected proxy's
//! admin endpoints every 2 s into a bounded `history`; the JSON views (`graph`,
//! `service`, `certs`) are pure functions of that history, the mesh model and the proxy
//! registry. The page (`assets`) is hand-written HTML, JS and CSS embedded in the binary.

mod assets;
mod certs;
mod graph;
mod history;
pub mod model_json;
mod scrape;
mod service;
mod tap_relay;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use parking_lot::Mutex;
use serde_json::json;
use tokio_util::task::AbortOnDropHandle;

use crate::admin::{self, AdminState};
use crate::registry::ProxyRegistry;
use history::History;
use tap_relay::RelayBody;

/// The dashboard's state: what the scraper has gathered.
pub struct Dashboard {
    history: Arc<Mutex<History>>,
}

impl Dashboard {
    /// Starts the scraper over the proxies of `registry`; it stops when the handle drops.
    pub fn start(registry: Arc<ProxyRegistry>) -> (Arc<Self>, AbortOnDropHandle<()>) {
        let history = Arc::new(Mutex::new(History::default()));
        let task = tokio::spawn(scrape::run(registry, history.clone()));
        (Arc::new(Self { history }), AbortOnDropHandle::new(task))
    }
}

/// `/api/tap`: the live tap relay, a streaming answer.
pub fn tap<B>(state: &AdminState, request: &Request<B>) -> Response<RelayBody> {
    if request.method() != Method::GET {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Full::new(Bytes::from_static(b"use GET /api/tap?service=NAME\n")).boxed_unsync())
            .expect("static response parts are valid");
    }
    tap_relay::relay(&state.registry, request.uri().query().unwrap_or(""))
}

/// Whether the dashboard serves `path`.
pub fn serves(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/") || path.starts_with("/api/")
}

/// Answers a GET of one of the dashboard's paths.
pub fn respond(state: &AdminState, path: &str) -> Response<Full<Bytes>> {
    if let Some(asset) = assets::find(path) {
        return asset;
    }
    let dashboard = &state.dashboard;
    match path {
        "/" => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/ui")
            .body(Full::new(Bytes::from_static(b"the dashboard is at /ui\n")))
            .expect("static response parts are valid"),
        "/api/graph" => {
            let model = state.source.current();
            let history = dashboard.history.lock();
            let graph = graph::graph(&history, model.services().keys().map(String::as_str));
            admin::json_response(&json!(graph))
        }
        "/api/certs" => {
            let scraped = dashboard
                .history
                .lock()
                .latest()
                .map(|round| round.proxies.clone())
                .unwrap_or_default();
            let view = certs::certs_view(admin::ca_state(state), &scraped, SystemTime::now());
            admin::json_response(&view)
        }
        _ => match path.strip_prefix("/api/services/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                let model = state.source.current();
                let records = state.registry.snapshot();
                let view = service::service_view(name, &dashboard.history.lock(), &model, &records);
                match view {
                    Some(view) => admin::json_response(&view),
                    None => not_found(&format!("no service {name:?} in the mesh")),
                }
            }
            _ => not_found(
                "not found; the dashboard serves /ui, /api/graph, /api/services/NAME, /api/certs \
                 and /api/tap?service=NAME",
            ),
        },
    }
}

fn not_found(message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            json!({ "error": message }).to_string(),
        )))
        .expect("static response parts are valid")
}
