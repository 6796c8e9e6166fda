//! One shared HTTP/2 connection to one place (an endpoint's proxy, or the local app):
//! every request is a stream on it. The first request opens it; requests that arrive
//! while it is being made wait for that one attempt and share its outcome, so a dead
//! endpoint costs one connect, not one per waiting request. Once it has closed, the next
//! request opens another. A request the connection could not even take (it had just
//! closed) goes out on a new one; a request it took is never sent twice. A connection
//! that carried no request for a whole idle timeout is closed: dropping its sender lets
//! streams still open finish first.
//!
//! hyper-util's pool does the same for HTTP/2, but per request it rebuilds its pool key
//! from the URI, races a checkout against a connect, and moves the request through
//! some 25 copies; callgrind put that at ~4.8k instructions of a hop's HTTP/2 request.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::TokioTimer;
use parking_lot::Mutex;

use crate::http1_pool::{Dial, PoolError};
use crate::spawn_boxed::SpawnBoxed;

pub struct Http2Conn<D, B> {
    shared: Arc<Shared<D, B>>,
}

impl<D, B> Clone for Http2Conn<D, B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<D, B> {
    dial: D,
    builder: Builder<SpawnBoxed>,
    idle_timeout: Duration,
    current: Mutex<Current<B>>,
    /// Held while a connection is being made; why the last attempt failed, if it did.
    dialing: tokio::sync::Mutex<Option<(io::ErrorKind, String)>>,
    /// How many attempts to connect have ended.
    attempts: AtomicU64,
    /// Whether the sweep of an idle connection runs (from the first connection on).
    sweeping: AtomicBool,
}

struct Current<B> {
    /// The connection requests go out on, while it is open.
    open: Option<SendRequest<B>>,
    /// Requests sent so far: the sweep closes the connection when this has not moved
    /// in a timeout.
    requests: u64,
}

impl<D, B> Http2Conn<D, B>
where
    D: Dial,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// `keep_alive`: how often to PING the peer while requests are open, so a peer that
    /// vanished is noticed; None sends none.
    pub fn new(dial: D, idle_timeout: Duration, keep_alive: Option<Duration>) -> Self {
        let mut builder = Builder::new(SpawnBoxed);
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(keep_alive);
        Self {
            shared: Arc::new(Shared {
                dial,
                builder,
                idle_timeout,
                current: Mutex::new(Current {
                    open: None,
                    requests: 0,
                }),
                dialing: tokio::sync::Mutex::default(),
                attempts: AtomicU64::new(0),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` (an absolute URI, which HTTP/2 sends as `:scheme` and
    /// `:authority`) as a stream on the connection, opening one when there is none.
    pub fn send(
        &self,
        mut request: Request<B>,
    ) -> impl Future<Output = Result<Response<Incoming>, PoolError>> + Send + use<D, B> {
        let conn = self.clone();
        // An `async` block, not an `async fn`, which would keep the request twice.
        async move {
            loop {
                let (mut sender, reused) = match conn.take_open() {
                    Some(sender) => (sender, true),
                    // Boxed: dialing and the TLS handshake would otherwise make every
                    // request's future much larger.
                    None => (Box::pin(conn.connect()).await?, false),
                };
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(response),
                    Err(mut failed) => match failed.take_message() {
                        Some(unsent) if reused => request = unsent,
                        _ => return Err(PoolError::Http(failed.into_error())),
                    },
                }
            }
        }
    }

    /// A sender on the open connection, counting the request it is taken for; None
    /// when there is none or it has closed.
    fn take_open(&self) -> Option<SendRequest<B>> {
        let mut current = self.shared.current.lock();
        let sender = current.open.as_ref()?;
        if sender.is_closed() {
            current.open = None;
            return None;
        }
        let sender = sender.clone();
        current.requests += 1;
        Some(sender)
    }

    /// Opens the connection, or waits for the attempt under way and takes its outcome.
    async fn connect(&self) -> Result<SendRequest<B>, PoolError> {
        let ended_before = self.shared.attempts.load(Ordering::Acquire);
        let mut last_failure = self.shared.dialing.lock().await;
        // While this request waited, another attempt may have ended: share its outcome.
        if let Some(sender) = self.take_open() {
            return Ok(sender);
        }
        if self.shared.attempts.load(Ordering::Acquire) > ended_before
            && let Some((kind, message)) = &*last_failure
        {
            return Err(PoolError::Connect(io::Error::new(*kind, message.clone())));
        }
        let outcome = self.open().await;
        *last_failure = match &outcome {
            Err(PoolError::Connect(err)) => Some((err.kind(), err.to_string())),
            _ => None,
        };
        self.shared.attempts.fetch_add(1, Ordering::Release);
        let sender = outcome?;
        let mut current = self.shared.current.lock();
        current.open = Some(sender.clone());
        current.requests += 1;
        Ok(sender)
    }

    async fn open(&self) -> Result<SendRequest<B>, PoolError> {
        if !self.shared.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep_idle(
                Arc::downgrade(&self.shared),
                self.shared.idle_timeout,
            ));
        }
        let io = self.shared.dial.dial().await.map_err(PoolError::Connect)?;
        let (sender, connection) = self.shared.builder.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Every `idle_timeout`, closes the connection if it took no request since the last
/// look (so after one to two timeouts of idleness), until the holder is gone.
async fn sweep_idle<D, B>(conn: Weak<Shared<D, B>>, idle_timeout: Duration) {
    let mut ticks = tokio::time::interval(idle_timeout);
    let mut seen = None;
    loop {
        ticks.tick().await;
        let Some(conn) = conn.upgrade() else {
            return;
        };
        let mut current = conn.current.lock();
        if seen == Some(current.requests) {
            current.open = None;
        }
        seen = Some(current.requests);
    }
}

#[cfg(test)]
mod tests;
