//! Test stand-ins for the layers' neighbours: attempts carrying a service snapshot and
//! route, and inner services that answer, hang, or play a script of outcomes while
//! recording what they saw. Real sockets are covered end to end in `seam-tests`; these
//! let each layer be tested alone, with tokio's paused clock.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::route::RouteChoice;
use super::stack::{Attempt, Stack, ToBackend, ToEndpoint};
use crate::body::{self, ProxyBody};
use crate::proxy_error::ProxyError;
use crate::state::policy::Policy;
use crate::state::{Endpoint, Service};

pub fn request(method: &str, path: &str) -> Request<ProxyBody> {
    request_with_body(method, path, Bytes::new())
}

pub fn request_with_body(method: &str, path: &str, body: Bytes) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .unwrap()
}

pub fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: Some(seam_proto::SpiffeId::workload("seam.local", "default", "api").unwrap()),
    }
}

/// A service "api" with `endpoints` whose only route has `policy`.
pub fn service(policy: Policy, endpoints: Vec<Endpoint>) -> Arc<Service> {
    Arc::new(Service::with_routes(
        "api".into(),
        endpoints,
        policy,
        Vec::new(),
    ))
}

/// An attempt as the outbound hands it to the stack.
pub fn routed(method: &str, path: &str, policy: Policy) -> Attempt {
    routed_to(request(method, path), service(policy, Vec::new()))
}

pub fn routed_to(request: Request<ProxyBody>, service: Arc<Service>) -> Attempt {
    let choice = RouteChoice::choose(service, &request, Arc::default());
    Attempt::new(request, choice)
}

/// An attempt as the split leaves it: bound for the route's first backend.
pub fn to_backend(request: Request<ProxyBody>, service: Arc<Service>) -> ToBackend {
    let attempt = routed_to(request, service);
    let target = attempt.choice.route.backends[0].target.clone();
    ToBackend { attempt, target }
}

fn status(code: u16) -> Response<ProxyBody> {
    Response::builder()
        .status(code)
        .body(body::text(String::new()))
        .unwrap()
}

/// Answers every attempt, at any stage, with `code`.
pub fn answer<A: 'static>(code: u16) -> Stack<A> {
    Stack::new(move |_attempt: A| async move { Ok(status(code)) })
}

pub fn hang<A: 'static>() -> Stack<A> {
    Stack::new(|_attempt: A| std::future::pending::<Result<Response<ProxyBody>, ProxyError>>())
}

/// Answers 200 with the split's target service in `x-target`.
pub fn answer_with_target() -> Stack<ToBackend> {
    Stack::new(|attempt: ToBackend| {
        let target = attempt.target.service.clone();
        async move {
            let mut response = status(200);
            response
                .headers_mut()
                .insert("x-target", target.parse().unwrap());
            Ok(response)
        }
    })
}

/// One scripted outcome of an inner service.
#[derive(Clone, Debug)]
pub enum Outcome {
    Status(u16),
    /// A gRPC response (200) with this `grpc-status` in its headers.
    Grpc(u32),
    ConnectFailure,
    Reset,
    /// A 429 with this `retry-after`, if any.
    RateLimited(Option<&'static str>),
}

/// What a scripted service saw of one call.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub body: Bytes,
    pub avoid: Option<SocketAddr>,
}

/// Plays `script` in order (repeating the last outcome), reading each request body whole.
pub fn scripted(script: Vec<Outcome>) -> (Stack<Attempt>, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let log = calls.clone();
    let script = Arc::new(script);
    let stack = Stack::new(move |attempt: Attempt| {
        let calls = calls.clone();
        let script = script.clone();
        async move {
            let at = Instant::now();
            let avoid = attempt.avoid;
            let body = attempt
                .request
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let index = {
                let mut calls = calls.lock();
                calls.push(Call { at, body, avoid });
                calls.len() - 1
            };
            let outcome = script[index.min(script.len() - 1)].clone();
            let peer = |cause: &str| (endpoint(1).address, cause.to_owned());
            match outcome {
                Outcome::Status(code) => Ok(status(code)),
                Outcome::Grpc(code) => Ok(Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", code.to_string())
                    .body(body::text(String::new()))
                    .unwrap()),
                Outcome::RateLimited(retry_after) => {
                    let mut response = status(429);
                    if let Some(value) = retry_after {
                        response
                            .headers_mut()
                            .insert("retry-after", http::HeaderValue::from_static(value));
                    }
                    Ok(response)
                }
                Outcome::ConnectFailure => {
                    let (endpoint, cause) = peer("connection refused");
                    Err(ProxyError::PeerConnect {
                        service: "api".into(),
                        endpoint,
                        cause,
                    })
                }
                Outcome::Reset => {
                    let (endpoint, cause) = peer("connection reset");
                    Err(ProxyError::Peer {
                        service: "api".into(),
                        endpoint,
                        cause,
                    })
                }
            }
        }
    });
    (stack, log)
}

/// A directory that lists `service` (so endpoint state for it is kept).
pub async fn directory_with(service: Arc<Service>) -> Arc<crate::state::Directory> {
    let (subscribe, _subscriptions) = tokio::sync::mpsc::unbounded_channel();
    let directory = Arc::new(crate::state::Directory::new(subscribe, 10));
    let _ = directory
        .resolve("api", std::time::Duration::ZERO)
        .await
        .unwrap();
    directory.apply("api", 1, crate::state::Resolution::Found(service));
    directory
}

/// Answers by endpoint after 1 ms (of the paused clock, so latencies are alike): 503
/// from the ones in `failing`, else 200 (or hangs, for `hanging`).
pub fn by_endpoint(
    failing: Arc<Mutex<Vec<SocketAddr>>>,
    hanging: Vec<SocketAddr>,
) -> (Stack<ToEndpoint>, Arc<Mutex<Vec<SocketAddr>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let stack = Stack::new(move |attempt: ToEndpoint| {
        let address = attempt.picked.endpoint.address;
        seen.lock().push(address);
        let fails = failing.lock().contains(&address);
        let hangs = hanging.contains(&address);
        async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok(status(if fails { 503 } else { 200 }))
        }
    });
    (stack, log)
}
