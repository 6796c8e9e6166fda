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
use futures_util::future::Either;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::ProxyBody;
use crate::http1_pool::{Dial, Http1Pool, PoolError};
use crate::http2_conn::Http2Conn;
use crate::state::Endpoint;
use crate::tls::{ALPN_H2, ALPN_HTTP11, ALPN_OPAQUE, TlsState};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often an HTTP/2 connection with requests open PINGs the peer.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The connections to one endpoint: HTTP/1.1 ones kept alive (`http1_pool`), one
/// HTTP/2 connection shared by all HTTP/2 requests (`http2_conn`), and the connector for
/// opaque streams, each on its own connection.
pub struct PeerClient {
    http1: Http1Pool<PeerConnector, ProxyBody>,
    http2: Http2Conn<PeerConnector, ProxyBody>,
    opaque: PeerConnector,
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
        let http2 = Http2Conn::new(
            connector(ALPN_H2),
            POOL_IDLE_TIMEOUT,
            Some(HTTP2_KEEP_ALIVE),
        );
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
    ) -> impl Future<Output = Result<Response<Incoming>, PoolError>> + Send + use<> {
        if request.version() == Version::HTTP_2 {
            Either::Left(self.http2.send(request))
        } else {
            Either::Right(self.http1.send(request))
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
