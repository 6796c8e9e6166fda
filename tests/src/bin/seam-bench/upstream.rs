//! The one upstream every contender forwards to, on a single-threaded runtime: HTTP/1.1
//! and h2c (hyper-util's auto server) answering every request with the same 1 KiB body,
//! and on a second listener the opaque TCP scenario's exchange (`tcp_exchange`), which
//! answers every 64-byte request with 1 KiB. It runs as a child process
//! (`seam-bench upstream`) so it can be pinned to a CPU like the hops, and so its CPU time
//! is nobody's.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::tcp_exchange;

/// The response body size, as in Istio's published numbers.
pub const BODY_SIZE: usize = 1024;

/// Serves on two ports of `127.0.0.1`, prints `{"event":"listening","http":ADDR,"tcp":ADDR}`
/// and runs until killed (or until a listener fails).
pub fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        seam_control_plane::launch::print_listening_line(&[
            ("http", http.local_addr()?),
            ("tcp", tcp.local_addr()?),
        ]);
        tokio::try_join!(serve_http(http), serve_tcp(tcp))?;
        Ok(())
    })
}

/// Answers every HTTP request on every connection `listener` accepts with the 1 KiB body.
async fn serve_http(listener: TcpListener) -> std::io::Result<()> {
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
}

/// Answers the opaque TCP exchange on every connection `listener` accepts.
async fn serve_tcp(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        // A connection error (the client going away) ends only that connection.
        tokio::spawn(tcp_exchange::serve(stream));
    }
}
