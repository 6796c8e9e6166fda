//! Real upstream apps for the proxies to forward to, on `127.0.0.1:0`:
//!
//! - [`EchoServer`]: HTTP/1.1 and h2c (hyper-util's auto server) answering every request
//!   with JSON describing what it received: its own name, the HTTP version, host, path,
//!   method, the size of the request body, the `x-seam-client-id` it saw and how many
//!   such headers arrived, the trace context headers (`trace_headers`), and every
//!   `x-request-id` value (`request_ids`). `/bytes/<n>` answers `n` bytes of a fixed pattern
//!   (`i % 251`) instead. Requests
//!   whose path starts with `/hold` wait until the test releases them, so a test can keep
//!   a request in flight for exactly as long as it needs (no sleeps).
//! - [`GrpcHealthServer`]: tonic-health's standard `grpc.health.v1.Health` service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use crate::wait;

/// The header the inbound proxy sets to the caller's SPIFFE id.
pub const CLIENT_ID_HEADER: &str = "x-seam-client-id";

/// State shared by the echo server's connections.
struct EchoState {
    name: String,
    requests_seen: AtomicUsize,
    held_arrived: watch::Sender<usize>,
    released: watch::Sender<bool>,
}

/// An HTTP echo app. Dropping it stops accepting connections.
pub struct EchoServer {
    addr: SocketAddr,
    state: Arc<EchoState>,
    accept_loop: JoinHandle<()>,
}

impl EchoServer {
    /// Binds `127.0.0.1:0` and serves; `name` is echoed in every answer.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind("127.0.0.1:0").await?, name)
    }

    /// Serves on `listener` (bound wherever the test needs it, say inside a pod).
    pub fn serve(listener: TcpListener, name: &str) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(EchoState {
            name: name.to_string(),
            requests_seen: AtomicUsize::new(0),
            held_arrived: watch::channel(0).0,
            released: watch::channel(false).0,
        });
        let accept_state = state.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(echo(&state, request).await) }
                    });
                    // A connection error (a peer going away) ends only that connection.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            accept_loop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// How many requests reached this app so far (held ones count on arrival).
    pub fn requests_seen(&self) -> usize {
        self.state.requests_seen.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests to `/hold…` have arrived and are being held.
    pub async fn wait_held(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut arrived = self.state.held_arrived.subscribe();
        tokio::time::timeout(timeout, arrived.wait_for(|held| *held >= count))
            .await
            .with_context(|| {
                format!(
                    "{} held requests did not arrive at {} within {timeout:?}",
                    count, self.state.name
                )
            })?
            .context("echo server state dropped")?;
        Ok(())
    }

    /// Lets every held request (and any later one) answer.
    pub fn release_held(&self) {
        self.state.released.send_replace(true);
    }

    /// Waits until this app has seen `count` requests.
    pub async fn wait_requests(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        wait::until(
            &format!("{} sees {count} requests", self.state.name),
            timeout,
            || async {
                let seen = self.requests_seen();
                anyhow::ensure!(seen >= count, "{seen} requests so far");
                Ok(())
            },
        )
        .await
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn echo(state: &EchoState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    state.requests_seen.fetch_add(1, Ordering::SeqCst);
    let client_ids: Vec<String> = request
        .headers()
        .get_all(CLIENT_ID_HEADER)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let request_ids: Vec<String> = request
        .headers()
        .get_all("x-request-id")
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let host = request
        .headers()
        .get(http::header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .or_else(|| request.uri().authority().map(ToString::to_string));
    let held = request.uri().path().starts_with("/hold");
    let (parts, body) = request.into_parts();
    // Read the whole request body before answering, as a real app would.
    let body_bytes = body
        .collect()
        .await
        .map(|body| body.to_bytes().len())
        .unwrap_or(0);
    let request = Request::from_parts(parts, ());
    let body = json!({
        "name": state.name,
        "body_bytes": body_bytes,
        "version": format!("{:?}", request.version()),
        "host": host,
        "path": request.uri().path(),
        "method": request.method().as_str(),
        "client_id": client_ids.first(),
        "spoofed_headers_seen": client_ids.len(),
        "trace_headers": trace_headers(request.headers()),
        "request_ids": request_ids,
    });
    if held {
        state.held_arrived.send_modify(|held| *held += 1);
        let mut released = state.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
    }
    if let Some(size) = request
        .uri()
        .path()
        .strip_prefix("/bytes/")
        .and_then(|size| size.parse::<usize>().ok())
    {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(payload)))
            .expect("a response with a fixed header is valid");
    }
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response with a fixed header is valid")
}

/// The trace context headers a request carried (W3C and B3), by name.
fn trace_headers(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
    ]
    .into_iter()
    .filter_map(|name| {
        let value = headers.get(name)?.to_str().ok()?;
        Some((name.to_string(), json!(value)))
    })
    .collect()
}

/// A gRPC server with the standard health service, reporting `SERVING` for "" (the
/// whole server). Dropping it stops the server.
pub struct GrpcHealthServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    server: JoinHandle<()>,
}

impl GrpcHealthServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (reporter, service) = tonic_health::server::health_reporter();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(Self {
            addr,
            reporter,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn reporter(&self) -> &HealthReporter {
        &self.reporter
    }
}

impl Drop for GrpcHealthServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
