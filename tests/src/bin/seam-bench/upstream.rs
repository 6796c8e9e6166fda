//! The one upstream every contender forwards to: HTTP/1.1 and h2c (hyper-util's auto
//! server) on a single-threaded runtime, answering every request with the same 1 KiB body.
//! It runs as a child process (`seam-bench upstream`) so it can be pinned to a CPU like
//! the hops, and so its CPU time is nobody's.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The response body size, as in Istio's published numbers.
pub const BODY_SIZE: usize = 1024;

/// Serves on `127.0.0.1:0`, prints `{"event":"listening","http":ADDR}` and runs until killed.
pub fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        seam_control_plane::launch::print_listening_line(&[("http", listener.local_addr()?)]);
        let body = Bytes::from(vec![b'x'; BODY_SIZE]);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                                .body(Full::new(body))
                                .expect("a response with a fixed header is valid"),
                        )
                    }
                });
                // A connection error (the client going away) ends only that connection.
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
