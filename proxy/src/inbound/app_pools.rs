//! Connections to the local app, pooled per address it is reached at. A connection
//! addressed to the inbound listener goes to `--app`; one iptables redirected goes to the
//! port it was meant for on the app (`127.0.0.1:<port>`), so an app that serves several
//! ports gets each request on the port its caller dialed. HTTP/1.1 connections are kept
//! alive in `http1_pool`; HTTP/2 requests share one connection (`http2_conn`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::HashMap;
use http::uri::Authority;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::http1_pool::{Dial, Http1Pool};
use crate::http2_conn::Http2Conn;

/// How long a connection to the app may sit idle in a pool.
const APP_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pools for one address of the app.
pub struct AppPool {
    pub address: SocketAddr,
    /// `address` as a URI authority, made once rather than per request.
    pub authority: Authority,
    pub http1: Http1Pool<AppConnector, Incoming>,
    /// HTTP/2 to the app: one connection, every request a stream on it.
    pub http2: Http2Conn<AppConnector, Incoming>,
}

impl AppPool {
    fn new(address: SocketAddr) -> Self {
        let http2 = Http2Conn::new(AppConnector(address), APP_IDLE_TIMEOUT, None);
        Self {
            address,
            authority: Authority::try_from(address.to_string())
                .expect("a socket address is a valid authority"),
            http1: Http1Pool::new(AppConnector(address), APP_IDLE_TIMEOUT),
            http2,
        }
    }
}

/// The pools for `--app`, and for every other address of the app met so far.
pub struct AppPools {
    app: Arc<AppPool>,
    others: ArcSwap<HashMap<SocketAddr, Arc<AppPool>>>,
    adding: Mutex<()>,
}

impl AppPools {
    pub fn new(app: SocketAddr) -> Self {
        Self {
            app: Arc::new(AppPool::new(app)),
            others: ArcSwap::from_pointee(HashMap::default()),
            adding: Mutex::new(()),
        }
    }

    /// The address of `--app`.
    pub fn app(&self) -> SocketAddr {
        self.app.address
    }

    /// The pools for `address`, made on first use.
    pub fn get(&self, address: SocketAddr) -> Arc<AppPool> {
        if address == self.app.address {
            return self.app.clone();
        }
        if let Some(pool) = self.others.load().get(&address) {
            return pool.clone();
        }
        let _adding = self.adding.lock();
        let current = self.others.load();
        if let Some(pool) = current.get(&address) {
            return pool.clone();
        }
        let pool = Arc::new(AppPool::new(address));
        let mut next = HashMap::clone(&current);
        next.insert(address, pool.clone());
        self.others.store(Arc::new(next));
        pool
    }
}

/// Dials one address of the app.
#[derive(Clone, Copy)]
pub struct AppConnector(SocketAddr);

impl AppConnector {
    async fn connect(self) -> std::io::Result<TokioIo<TcpStream>> {
        let tcp = TcpStream::connect(self.0).await?;
        tcp.set_nodelay(true)?;
        Ok(TokioIo::new(tcp))
    }
}

impl Dial for AppConnector {
    type Io = TokioIo<TcpStream>;

    fn dial(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send {
        self.connect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_and_each_other_address_have_their_own_pools() {
        let pools = AppPools::new("127.0.0.1:8080".parse().unwrap());
        let app = pools.get("127.0.0.1:8080".parse().unwrap());
        let other = pools.get("127.0.0.1:5432".parse().unwrap());
        assert_eq!(app.address.port(), 8080);
        assert_eq!(other.address.port(), 5432);
        assert_eq!(other.authority.as_str(), "127.0.0.1:5432");
        assert!(Arc::ptr_eq(
            &other,
            &pools.get("127.0.0.1:5432".parse().unwrap())
        ));
        assert!(Arc::ptr_eq(&app, &pools.get(pools.app())));
    }
}
