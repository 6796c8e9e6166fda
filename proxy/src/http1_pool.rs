//! Keep-alive HTTP/1.1 connections to one place (the local app, or one endpoint's proxy),
//! reused request after request. A connection goes back to the pool as soon as its
//! response headers arrive and is taken again once hyper says it is ready, that is once
//! that response's body has been read. A request that a pooled connection could not even
//! start to send (the peer had just closed it) goes out on another connection; a request
//! any byte of which went out is never sent twice. Connections idle longer than the idle
//! timeout are closed: a sweep every half timeout drops them even when no request comes.
//!
//! hyper-util's pool does the same but spawns a task per request to wait for the
//! connection to become idle, and rebuilds its pool key from the URI each time; the
//! benchmark showed that at ~7 % of a hop's CPU.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Opens one new connection to the pool's destination.
pub trait Dial: Send + Sync + 'static {
    type Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;

    fn dial(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect failed")]
    Connect(#[source] io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl PoolError {
    /// Whether the request failed before any connection took it (it never left).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

pub struct Http1Pool<D, B> {
    /// Shared with each request's future, which then borrows nothing from the pool: a
    /// caller can make the future at once and keep only it, not the request beside it.
    shared: Arc<Shared<D, B>>,
}

impl<D, B> Clone for Http1Pool<D, B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<D, B> {
    dial: D,
    /// Every pooled connection, busy (its response body still being read) or idle.
    connections: Mutex<Vec<Pooled<B>>>,
    idle_timeout: Duration,
    /// Whether the sweep of idle connections runs (from the first connection on).
    sweeping: AtomicBool,
}

struct Pooled<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Pooled<B> {
    /// Closed, or idle (`ready`, as the caller read it) for longer than `idle_timeout`.
    fn expired(&self, ready: bool, now: Instant, idle_timeout: Duration) -> bool {
        self.sender.is_closed() || (ready && now.duration_since(self.since) > idle_timeout)
    }
}

impl<D, B> Http1Pool<D, B>
where
    D: Dial,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(dial: D, idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                dial,
                connections: Mutex::default(),
                idle_timeout,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` (origin-form URI and a Host header, as HTTP/1.1 has them) on a
    /// pooled connection, or a new one when none is ready.
    pub fn send(
        &self,
        mut request: Request<B>,
    ) -> impl Future<Output = Result<Response<Incoming>, PoolError>> + Send + use<D, B> {
        let pool = self.clone();
        // An `async` block, not an `async fn`, which would keep the request twice.
        async move {
            loop {
                let (mut sender, reused) = match pool.take_ready() {
                    Some(sender) => (sender, true),
                    // Boxed: dialing and the TLS handshake would otherwise make every
                    // request's future (moved and allocated per request) over a KiB larger.
                    None => (Box::pin(pool.connect()).await?, false),
                };
                match sender.try_send_request(request).await {
                    Ok(response) => {
                        pool.put_back(sender);
                        return Ok(response);
                    }
                    Err(mut failed) => match failed.take_message() {
                        Some(unsent) if reused => request = unsent,
                        _ => return Err(PoolError::Http(failed.into_error())),
                    },
                }
            }
        }
    }

    /// How many connections the pool holds, busy or idle.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.connections.lock().len()
    }

    /// A connection ready for a request; closed ones and ones idle too long are dropped
    /// on the way.
    fn take_ready(&self) -> Option<SendRequest<B>> {
        let now = Instant::now();
        let mut pooled = self.shared.connections.lock();
        // One pass from the newest: the first ready one is taken, closed and stale ones
        // met on the way are dropped.
        let mut index = pooled.len();
        while index > 0 {
            index -= 1;
            let entry = &pooled[index];
            let ready = entry.sender.is_ready();
            if entry.expired(ready, now, self.shared.idle_timeout) {
                pooled.swap_remove(index);
            } else if ready {
                return Some(pooled.swap_remove(index).sender);
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        self.shared.connections.lock().push(Pooled {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<B>, PoolError> {
        if !self.shared.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep_idle(
                Arc::downgrade(&self.shared),
                self.shared.idle_timeout,
            ));
        }
        let io = self.shared.dial.dial().await.map_err(PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            // With upgrades: a `101` answer hands the connection over (see `upgrade`).
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "pooled HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Every half `idle_timeout`, drops the connections that closed or sat idle longer than
/// `idle_timeout` (dropping its sender closes a connection), until the pool is gone.
/// Without it a connection nobody takes again would stay open: `take_ready` stops at the
/// first ready connection, and a quiet pool is never asked.
async fn sweep_idle<D, B>(pool: Weak<Shared<D, B>>, idle_timeout: Duration) {
    let mut ticks = tokio::time::interval(idle_timeout / 2);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        pool.connections
            .lock()
            .retain(|entry| !entry.expired(entry.sender.is_ready(), now, idle_timeout));
    }
}

#[cfg(test)]
mod tests;
