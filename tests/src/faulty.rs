//! Upstream apps that fail on purpose, on `127.0.0.1:0`, for the resilience tests:
//!
//! - [`Fault::Status`]: a real HTTP/1.1 + h2c server answering every request with one
//!   status (say, always 503), after reading the request body;
//! - [`Fault::Hang`]: reads the request and never answers;
//! - [`Fault::Reset`]: accepts a connection, reads the first bytes of the request and
//!   resets the connection (`SO_LINGER` 0, so the peer sees a TCP RST);
//! - [`Fault::GrpcUnavailable`]: answers every request (gRPC over h2c) with a
//!   trailers-only `grpc-status: 14`, as a gRPC server that is shutting down does;
//! - [`Fault::EarlyStatusOnce`]: answers its first request with a status at once, before
//!   reading the request body (as a server that refuses a request by its headers does,
//!   draining the body afterwards), and every later request with 200 and the body it sent.
//!
//! Each counts the requests it saw and their methods. Killing an upstream mid-run is done
//! to its proxy process (see the resilience tests), not here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Stands for "answer gRPC UNAVAILABLE" among the statuses `serve` is given.
const GRPC_UNAVAILABLE: u16 = 0;

/// How a [`FaultyServer`] misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Status(u16),
    Hang,
    Reset,
    GrpcUnavailable,
    EarlyStatusOnce(u16),
}

/// A misbehaving app. Dropping it stops accepting connections.
pub struct FaultyServer {
    addr: SocketAddr,
    methods: Arc<Mutex<Vec<String>>>,
    accept_loop: JoinHandle<()>,
}

impl FaultyServer {
    pub async fn start(fault: Fault) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let methods = Arc::new(Mutex::new(Vec::new()));
        let seen = methods.clone();
        let answered_early = Arc::new(AtomicBool::new(false));
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let answered_early = answered_early.clone();
                tokio::spawn(async move {
                    match fault {
                        Fault::Reset => reset(stream, &seen).await,
                        Fault::Status(status) => serve(stream, seen, Some(status)).await,
                        Fault::Hang => serve(stream, seen, None).await,
                        Fault::GrpcUnavailable => serve(stream, seen, Some(GRPC_UNAVAILABLE)).await,
                        Fault::EarlyStatusOnce(status) => {
                            early_status_once(stream, seen, status, answered_early).await;
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            methods,
            accept_loop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests (or, for [`Fault::Reset`], connections) arrived so far.
    pub fn requests_seen(&self) -> usize {
        self.methods.lock().len()
    }

    /// The methods of the requests seen, in order of arrival.
    pub fn methods(&self) -> Vec<String> {
        self.methods.lock().clone()
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn serve(stream: tokio::net::TcpStream, seen: Arc<Mutex<Vec<String>>>, status: Option<u16>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            seen.lock().push(request.method().to_string());
            let _ = request.into_body().collect().await;
            match status {
                Some(GRPC_UNAVAILABLE) => Ok::<_, Infallible>(
                    Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/grpc")
                        .header("grpc-status", "14")
                        .header("grpc-message", "faulty upstream")
                        .body(Full::new(Bytes::new()))
                        .expect("static headers make a response"),
                ),
                Some(status) => Ok::<_, Infallible>(
                    Response::builder()
                        .status(
                            StatusCode::from_u16(status)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        )
                        .body(Full::new(Bytes::from_static(b"faulty upstream\n")))
                        .expect("a status and a static body make a response"),
                ),
                None => std::future::pending().await,
            }
        }
    });
    // A connection error (a peer going away) ends only that connection.
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn early_status_once(
    stream: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<String>>>,
    status: u16,
    answered_early: Arc<AtomicBool>,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let seen = seen.clone();
        let early = !answered_early.swap(true, Ordering::SeqCst);
        async move {
            seen.lock().push(request.method().to_string());
            let response = if early {
                // The body is read after the answer, as a server that drains a refused
                // request to keep the connection does: the client goes on sending it.
                tokio::spawn(request.into_body().collect());
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
                    .body(Full::new(Bytes::from_static(b"refused before reading\n")))
            } else {
                let body = request.into_body().collect().await.map(|b| b.to_bytes());
                Response::builder().body(Full::new(body.unwrap_or_default()))
            };
            Ok::<_, Infallible>(response.expect("a status and a body make a response"))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn reset(mut stream: tokio::net::TcpStream, seen: &Mutex<Vec<String>>) {
    let mut first = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut first)).await;
    if let Ok(Ok(n)) = read {
        let method = String::from_utf8_lossy(&first[..n])
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        seen.lock().push(method);
    }
    // Linger 0: closing sends RST instead of FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}
