//! The inbound listener: mTLS from other proxies (a client certificate from the mesh CA is
//! required at the handshake), then the request goes to the local app in the HTTP version
//! it arrived in, carrying `x-seam-client-id: <the caller's SPIFFE id>` (any such header
//! that came from outside is removed first).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use seam_proto::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::body::{self, ProxyBody};
use crate::metrics::{Direction, Metrics};
use crate::proxy_error::{ProxyError, error_chain};
use crate::server::{CLIENT_ID_HEADER, http_server, next_connection, strip_hop_by_hop};
use crate::tls::TlsState;

/// A peer has this long to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type AppClient = Client<AppConnector, Incoming>;

pub struct Inbound {
    service: String,
    app: SocketAddr,
    /// `app` as a URI authority, made once rather than per request.
    app_authority: Authority,
    http1: AppClient,
    http2: AppClient,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
}

impl Inbound {
    pub fn new(
        service: String,
        app: SocketAddr,
        tls: Arc<TlsState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let http1 = builder.build(AppConnector(app));
        let http2 = builder.http2_only(true).build(AppConnector(app));
        Self {
            service,
            app,
            app_authority: Authority::try_from(app.to_string())
                .expect("a socket address is a valid authority"),
            http1,
            http2,
            tls,
            metrics,
        }
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        caller: &HeaderValue,
    ) -> Response<ProxyBody> {
        let started = tokio::time::Instant::now();
        let version = request.version();
        let request = self.to_app_request(request, caller);
        let client = if version == Version::HTTP_2 {
            &self.http2
        } else {
            &self.http1
        };
        let response = match client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body::streamed(body))
            }
            Err(err) => ProxyError::App {
                app: self.app,
                cause: error_chain(&err),
            }
            .into_response(),
        };
        self.metrics.record_request(
            Direction::Inbound,
            &self.service,
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    fn to_app_request(
        &self,
        request: Request<Incoming>,
        caller: &HeaderValue,
    ) -> Request<Incoming> {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(CLIENT_ID_HEADER);
        parts.headers.insert(CLIENT_ID_HEADER, caller.clone());
        // The pool needs an absolute URI; HTTP/1 requests arrive in origin form and keep
        // their Host header, HTTP/2 ones keep the :authority the caller used.
        if parts.uri.authority().is_none() {
            let mut uri = parts.uri.into_parts();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(self.app_authority.clone());
            if uri.path_and_query.is_none() {
                uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
        }
        Request::from_parts(parts, body)
    }
}

/// Accepts peers' connections until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    connections: Arc<GracefulShutdown>,
    stop: CancellationToken,
) {
    while let Some((tcp, peer)) = next_connection(&listener, &stop, "inbound").await {
        let inbound = inbound.clone();
        // A watcher per connection: the drain waits for it, handshake included.
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let _guard = inbound.metrics.connection_opened(Direction::Inbound);
            let Some((tls, caller)) = handshake(&inbound.tls, tcp, peer).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let inbound = inbound.clone();
                let caller = caller.clone();
                async move { Ok::<_, std::convert::Infallible>(inbound.handle(request, &caller).await) }
            });
            let server = http_server();
            let connection = server.serve_connection(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %err, "inbound connection ended with an error");
            }
        });
    }
}

/// Completes the mTLS handshake and reads the caller's SPIFFE id; refusals are logged.
async fn handshake(
    tls: &TlsState,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, HeaderValue)> {
    let Some(config) = tls.inbound_config() else {
        tracing::info!(%peer, "refused a connection: this proxy has no certificate yet");
        return None;
    };
    let stream = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(tcp),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(%peer, error = %err, "refused an inbound TLS handshake");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "inbound TLS handshake timed out");
            return None;
        }
    };
    let caller = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| SpiffeId::from_certificate_der(leaf).ok());
    let Some(caller) = caller else {
        tracing::info!(%peer, "refused a peer whose certificate names no SPIFFE id");
        return None;
    };
    let caller = HeaderValue::from_str(caller.as_str()).ok()?;
    Some((stream, caller))
}

/// Dials the local app, whatever URI the request carries.
#[derive(Clone, Copy)]
struct AppConnector(SocketAddr);

impl tower::Service<Uri> for AppConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let app = self.0;
        Box::pin(async move {
            let tcp = TcpStream::connect(app).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tcp))
        })
    }
}
