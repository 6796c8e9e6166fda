//! Test stand-ins for the layers' neighbours: attempts carrying a service snapshot and
//! route, and inner services that answer, hang, or play a script of outcomes while
//! recording what they saw. Real sockets are covered end to end in `seam-tests`; these
//! let each layer be tested alone, with tokio's paused clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::route::RouteChoice;
use super::{Attempt, Stack};
use crate::body::{self, ProxyBody};
use crate::proxy_error::ProxyError;
use crate::state::policy::Policy;
use crate::state::{Backend, Endpoint};

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
        identity: seam_proto::SpiffeId::workload("seam.local", "default", "api").unwrap(),
    }
}

/// A service "api" with `endpoints` whose only route has `policy`.
pub fn service(policy: Policy, endpoints: Vec<Endpoint>) -> Arc<Backend> {
    Arc::new(Backend::with_routes(
        "api".into(),
        endpoints,
        policy,
        Vec::new(),
    ))
}

/// An attempt as the outbound and the split layer leave it.
pub fn routed(method: &str, path: &str, policy: Policy) -> Attempt {
    routed_to(request(method, path), service(policy, Vec::new()))
}

pub fn routed_to(request: Request<ProxyBody>, service: Arc<Backend>) -> Attempt {
    let choice = RouteChoice::choose(service, &request, Arc::default());
    let target = choice.route.backends[0].target.clone();
    Attempt {
        target: Some(target),
        ..Attempt::new(request, choice)
    }
}

fn status(code: u16) -> Response<ProxyBody> {
    Response::builder()
        .status(code)
        .body(body::text(String::new()))
        .unwrap()
}

pub fn answer(code: u16) -> Stack {
    Stack::new(move |_attempt: Attempt| async move { Ok(status(code)) })
}

pub fn hang() -> Stack {
    Stack::new(|_attempt: Attempt| {
        std::future::pending::<Result<Response<ProxyBody>, ProxyError>>()
    })
}

/// Answers 200 with the split's target service in `x-target`.
pub fn answer_with_target() -> Stack {
    Stack::new(|attempt: Attempt| {
        let target = attempt.target.unwrap().service.clone();
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
}

/// What a scripted service saw of one call.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub body: Bytes,
    pub avoid: Option<SocketAddr>,
}

/// Plays `script` in order (repeating the last outcome), reading each request body whole.
pub fn scripted(script: Vec<Outcome>) -> (Stack, Arc<Mutex<Vec<Call>>>) {
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
                let mut calls = calls.lock().unwrap();
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
pub async fn directory_with(service: Arc<Backend>) -> Arc<crate::state::Directory> {
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
) -> (Stack, Arc<Mutex<Vec<SocketAddr>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let stack = Stack::new(move |attempt: Attempt| {
        let address = attempt.picked.unwrap().endpoint.address;
        seen.lock().unwrap().push(address);
        let fails = failing.lock().unwrap().contains(&address);
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
