//! An upstream app that records every request it gets, whole (method, path with query,
//! headers, body), for tests that compare what arrived with what was sent (a mirror's
//! copies): real HTTP/1.1 and h2c on `127.0.0.1:0`. It answers each request, once the
//! body is read, with a fixed status, or never ([`Answer::Hang`]: the request is held
//! until the server is dropped, as a stuck app would).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a [`RecordingServer`] answers.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    Hang,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path with its query, as the request line had it.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A recording app. Dropping it stops accepting connections and releases held requests.
pub struct RecordingServer {
    addr: SocketAddr,
    recorded: watch::Sender<Vec<Recorded>>,
    accept_loop: JoinHandle<()>,
}

impl RecordingServer {
    pub async fn start(answer: Answer) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let recorded = watch::Sender::new(Vec::new());
        let sink = recorded.clone();
        let accept_loop = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                // Held in the set, so dropping the server (aborting this loop) ends
                // every connection and the requests it holds.
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let sink = sink.clone();
                        async move { Ok::<_, Infallible>(record(&sink, request, answer).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            recorded,
            accept_loop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request recorded so far, in order of arrival (with its body read).
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.borrow().clone()
    }

    pub fn count(&self) -> usize {
        self.recorded.borrow().len()
    }

    /// Waits until at least `count` requests have been recorded.
    pub async fn wait_count(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut recorded = self.recorded.subscribe();
        tokio::time::timeout(timeout, recorded.wait_for(|seen| seen.len() >= count))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{count} requests were not recorded within {timeout:?} (saw {})",
                    self.count()
                )
            })?
            .map_err(|_| anyhow::anyhow!("the recording server stopped"))?;
        Ok(())
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn record(
    sink: &watch::Sender<Vec<Recorded>>,
    request: Request<Incoming>,
    answer: Answer,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    sink.send_modify(|recorded| {
        recorded.push(Recorded {
            method: parts.method.to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
            headers: parts.headers.clone(),
            body,
        });
    });
    match answer {
        Answer::Status(status) => Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .body(Full::new(Bytes::from_static(b"recorded\n")))
            .expect("a status and a static body make a response"),
        Answer::Hang => std::future::pending().await,
    }
}
