//! Pooled mTLS connections to other proxies' inbound listeners, one pool per endpoint and
//! HTTP version, and single connections for opaque streams. A connection dials the
//! endpoint's address, speaks TLS 1.3 with our workload certificate, and accepts only the
//! SPIFFE id the control plane published for that endpoint. An endpoint published without
//! an identity (no Seam proxy there) gets the same pools over plain TCP: HTTP/1.1 as is,
//! HTTP/2 with prior knowledge, opaque streams as raw bytes. Pools are keyed by endpoint
//! and outlive config updates.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashSet};
use futures_util::TryFutureExt;
use futures_util::future::Either;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::ProxyBody;
use crate::http1_pool::{Dial, Http1Pool, PoolError};
use crate::state::Endpoint;
use crate::tls::{ALPN_H2, ALPN_HTTP11, ALPN_OPAQUE, TlsState};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The two pools for one endpoint: HTTP/1.1 connections kept alive (`http1_pool`), and
/// hyper-util's pool for HTTP/2, which shares one connection among all requests; and the
/// connector for opaque streams, each on its own connection.
pub struct PeerClient {
    http1: Http1Pool<PeerConnector, ProxyBody>,
    http2: Client<PeerConnector, ProxyBody>,
    opaque: PeerConnector,
}

/// Why a request did not get a response from the peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Http1(#[from] PoolError),
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
}

impl PeerError {
    /// Whether the connection could not be made (the peer never saw the request).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Http1(err) => err.is_connect(),
            Self::Http2(err) => err.is_connect(),
        }
    }
}

impl PeerClient {
    fn new(tls: &Arc<TlsState>, endpoint: &Endpoint) -> Self {
        let connector = |alpn| PeerConnector {
            endpoint: endpoint.clone(),
            tls: endpoint
                .identity
                .as_ref()
                .map(|identity| TlsConnector::from(tls.client_config(identity.clone(), alpn))),
        };
        let http1 = Http1Pool::new(connector(ALPN_HTTP11), POOL_IDLE_TIMEOUT);
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build(connector(ALPN_H2));
        Self {
            http1,
            http2,
            opaque: connector(ALPN_OPAQUE),
        }
    }

    /// A new connection to the endpoint for an opaque stream (mTLS, or plain TCP to a
    /// plaintext endpoint).
    pub fn connect_opaque(
        &self,
    ) -> impl Future<Output = io::Result<TokioIo<PeerStream>>> + Send + 'static {
        self.opaque.connect()
    }

    /// Sends the request in the HTTP version the app spoke. The future owns what it
    /// needs, so the caller can make it at once and keep only it, not the request too.
    pub fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, PeerError>> + Send + use<> {
        if request.version() == Version::HTTP_2 {
            Either::Left(self.http2.request(request).err_into())
        } else {
            Either::Right(self.http1.send(request).err_into())
        }
    }
}

/// Every endpoint's pools.
pub struct PeerClients {
    tls: Arc<TlsState>,
    clients: ArcSwap<HashMap<Endpoint, Arc<PeerClient>>>,
    adding: Mutex<()>,
}

impl PeerClients {
    pub fn new(tls: Arc<TlsState>) -> Self {
        Self {
            tls,
            clients: ArcSwap::from_pointee(HashMap::default()),
            adding: Mutex::new(()),
        }
    }

    /// The pools for `endpoint`, made on first use. `in_use` lists every endpoint still
    /// in some service: pools of endpoints gone from all of them are dropped then.
    pub fn get(
        &self,
        endpoint: &Endpoint,
        in_use: impl FnOnce() -> Vec<Endpoint>,
    ) -> Arc<PeerClient> {
        if let Some(client) = self.clients.load().get(endpoint) {
            return client.clone();
        }
        let _adding = self.adding.lock();
        let current = self.clients.load();
        if let Some(client) = current.get(endpoint) {
            return client.clone();
        }
        // A set: with a thousand endpoints, a list's `contains` per kept pool would make
        // each new endpoint's first request cost a million comparisons.
        let in_use: HashSet<Endpoint> = in_use().into_iter().collect();
        let mut next: HashMap<Endpoint, Arc<PeerClient>> = current
            .iter()
            .filter(|(known, _)| in_use.contains(known))
            .map(|(known, client)| (known.clone(), client.clone()))
            .collect();
        let client = Arc::new(PeerClient::new(&self.tls, endpoint));
        next.insert(endpoint.clone(), client.clone());
        self.clients.store(Arc::new(next));
        client
    }
}

/// Dials one endpoint, whatever URI the request carries.
#[derive(Clone)]
pub struct PeerConnector {
    endpoint: Endpoint,
    /// None: the endpoint is plaintext.
    tls: Option<TlsConnector>,
}

impl tower::Service<Uri> for PeerConnector {
    type Response = TokioIo<PeerStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.connect())
    }
}

impl Dial for PeerConnector {
    type Io = TokioIo<PeerStream>;

    fn dial(&self) -> impl Future<Output = io::Result<Self::Io>> + Send {
        self.connect()
    }
}

impl PeerConnector {
    fn connect(&self) -> impl Future<Output = io::Result<TokioIo<PeerStream>>> + Send + 'static {
        let address = self.endpoint.address;
        let tls = self.tls.clone();
        async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                    )
                })??;
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(TokioIo::new(PeerStream::Plain(tcp)));
            };
            let stream = tls
                .connect(ServerName::IpAddress(address.ip().into()), tcp)
                .await?;
            Ok(TokioIo::new(PeerStream::Tls(stream)))
        }
    }
}

/// A connection to a peer: mTLS to another proxy, or plain TCP to an endpoint without
/// one.
// Boxing the TLS stream would cost an allocation per mTLS connection, the common case.
#[allow(clippy::large_enum_variant)]
pub enum PeerStream {
    Tls(TlsStream<TcpStream>),
    Plain(TcpStream),
}

impl Connection for PeerStream {
    /// Tells hyper whether HTTP/2 was negotiated. A plain connection negotiates nothing:
    /// the HTTP/2 pool speaks HTTP/2 on it with prior knowledge.
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        match self {
            Self::Tls(stream) if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) => {
                connected.negotiated_h2()
            }
            _ => connected,
        }
    }
}

/// Calls the same method on whichever stream `$stream` is.
macro_rules! either_stream {
    ($stream:expr, $inner:ident => $call:expr) => {
        match $stream {
            PeerStream::Tls($inner) => $call,
            PeerStream::Plain($inner) => $call,
        }
    };
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either_stream!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either_stream!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either_stream!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either_stream!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either_stream!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either_stream!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}
