//! Keep-alive HTTP/1.1 connections to one place (the local app, or one endpoint's proxy),
//! reused request after request. A connection goes back to the pool as soon as its
//! response headers arrive and is taken again once hyper says it is ready, that is once
//! that response's body has been read. The pool is a queue: a request takes the
//! connection that went back first (the one whose body is likeliest to be done), looks at
//! no more than a few that are still busy (those go to the back), and otherwise opens a
//! new connection, so finding one costs the same however many there are. It holds at
//! most [`MAX_POOLED`] connections; one more going back is closed once its response is
//! done. A request that a pooled connection could not even
//! start to send (the peer had just closed it) goes out on another connection; a request
//! any byte of which went out is never sent twice. Connections idle longer than the idle
//! timeout are closed: a sweep every half timeout drops them even when no request comes.
//! A response that came on a new connection carries [`FreshConnection`] in its
//! extensions, so a caller timing it can leave the connection's set-up out.
//!
//! hyper-util's pool does the same but spawns a task per request to wait for the
//! connection to become idle, and rebuilds its pool key from the URI each time; the
//! benchmark showed that at ~7 % of a hop's CPU.

use std::collections::VecDeque;
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

/// The most connections one pool keeps, busy or idle. Each is a file descriptor here and
/// on the peer, per endpoint: 128 covers the benchmark's 64 concurrent connections into
/// one endpoint twice over, while a burst against one of a thousand endpoints cannot
/// leave more than this many open behind it.
pub const MAX_POOLED: usize = 128;
/// How many busy connections a request looks past before it opens a new one.
const BUSY_LOOKS: usize = 4;

/// In the extensions of a response that came on a connection opened for its request:
/// when that connection was ready (its TCP and TLS set-up done).
#[derive(Debug, Clone, Copy)]
pub struct FreshConnection {
    pub ready_at: Instant,
}

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
    /// Every pooled connection, busy (its response body still being read) or idle, in
    /// the order they went back.
    connections: Mutex<VecDeque<Pooled<B>>>,
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
                let (mut sender, fresh) = match pool.take_ready() {
                    Some(sender) => (sender, None),
                    // Boxed: dialing and the TLS handshake would otherwise make every
                    // request's future (moved and allocated per request) over a KiB larger.
                    None => {
                        let sender = Box::pin(pool.connect()).await?;
                        let ready_at = Instant::now();
                        (sender, Some(FreshConnection { ready_at }))
                    }
                };
                let reused = fresh.is_none();
                match sender.try_send_request(request).await {
                    Ok(mut response) => {
                        pool.put_back(sender);
                        if let Some(fresh) = fresh {
                            response.extensions_mut().insert(fresh);
                        }
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

    /// A connection ready for a request, from the front of the queue: closed ones and
    /// ones idle too long are dropped on the way, up to [`BUSY_LOOKS`] busy ones go to
    /// the back.
    fn take_ready(&self) -> Option<SendRequest<B>> {
        let now = Instant::now();
        let mut pooled = self.shared.connections.lock();
        let mut busy_seen = 0;
        while busy_seen < BUSY_LOOKS {
            let entry = pooled.pop_front()?;
            let ready = entry.sender.is_ready();
            if entry.expired(ready, now, self.shared.idle_timeout) {
                continue;
            }
            if ready {
                return Some(entry.sender);
            }
            busy_seen += 1;
            pooled.push_back(entry);
        }
        None
    }

    /// Back in the queue, unless closed or the pool is full: dropping the sender then
    /// closes the connection once its response is done.
    fn put_back(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut pooled = self.shared.connections.lock();
        if pooled.len() < MAX_POOLED {
            pooled.push_back(Pooled {
                sender,
                since: Instant::now(),
            });
        }
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
