//! The webhook's HTTPS listener: TLS handshakes off the accept loop, HTTP/1.1 or HTTP/2 as
//! the API server chooses, `POST /inject` and `POST /inject-annotated` answered by
//! [`super::review`]. A body that is not an AdmissionReview gets a 400 naming why.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Scope;
use crate::accept::next_connection;
use crate::injector::Settings;

/// The API server sends whole pods; a few megabytes is far beyond any real one.
const MAX_BODY: usize = 4 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the webhook on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, settings: Arc<Settings>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = next_connection(&listener, "webhook").await;
        let acceptor = acceptor.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "webhook TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let settings = settings.clone();
                async move { Ok::<_, Infallible>(handle(request, &settings).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that never finishes its headers does not hold a task forever.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(request: Request<Incoming>, settings: &Settings) -> Response<Full<Bytes>> {
    let Some(scope) = Scope::of_path(request.uri().path()) else {
        return text(
            StatusCode::NOT_FOUND,
            "the webhook serves /inject and /inject-annotated\n",
        );
    };
    if request.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST with an AdmissionReview\n",
        );
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {err}\n"),
            );
        }
    };
    match super::review(&body, scope, settings) {
        Ok(answer) => match super::to_json(&answer) {
            Ok(json) => Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json)))
                .expect("a static header is valid"),
            Err(err) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot write the AdmissionReview: {err}\n"),
            ),
        },
        Err(bad) => {
            tracing::warn!(error = %bad, "refused a webhook request");
            text(StatusCode::BAD_REQUEST, &format!("{bad}\n"))
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a static header is valid")
}
