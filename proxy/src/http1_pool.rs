//! Keep-alive HTTP/1.1 connections to one place (the local app, or one endpoint's proxy),
//! reused request after request. A connection goes back to the pool as soon as its
//! response headers arrive and is taken again once hyper says it is ready, that is once
//! that response's body has been read. A request that a pooled connection could not even
//! start to send (the peer had just closed it) goes out on another connection; a request
//! any byte of which went out is never sent twice. Connections idle longer than the idle
//! timeout are closed.
//!
//! hyper-util's pool does the same but spawns a task per request to wait for the
//! connection to become idle, and rebuilds its pool key from the URI each time; the
//! benchmark showed that at ~7 % of a hop's CPU.

use std::future::Future;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
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
    dial: D,
    idle: Mutex<Vec<Pooled<B>>>,
    idle_timeout: Duration,
}

struct Pooled<B> {
    sender: SendRequest<B>,
    since: Instant,
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
            dial,
            idle: Mutex::new(Vec::new()),
            idle_timeout,
        }
    }

    /// Sends `request` (origin-form URI and a Host header, as HTTP/1.1 has them) on a
    /// pooled connection, or a new one when none is ready.
    pub async fn send(&self, mut request: Request<B>) -> Result<Response<Incoming>, PoolError> {
        loop {
            let (mut sender, reused) = match self.take_ready() {
                Some(sender) => (sender, true),
                // Boxed: dialing and the TLS handshake would otherwise make every
                // request's future (moved and allocated per request) over a KiB larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.put_back(sender);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::Http(failed.into_error())),
                },
            }
        }
    }

    /// How many connections the pool holds, busy or idle.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().expect("pool lock poisoned").len()
    }

    /// A connection ready for a request; closed ones and ones idle too long are dropped
    /// on the way.
    fn take_ready(&self) -> Option<SendRequest<B>> {
        let now = Instant::now();
        let mut pooled = self.idle.lock().expect("pool lock poisoned");
        // One pass from the newest: the first ready one is taken, closed and stale ones
        // met on the way are dropped.
        let mut index = pooled.len();
        while index > 0 {
            index -= 1;
            let entry = &pooled[index];
            let ready = entry.sender.is_ready();
            if entry.sender.is_closed()
                || (ready && now.duration_since(entry.since) > self.idle_timeout)
            {
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
        self.idle.lock().expect("pool lock poisoned").push(Pooled {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<B>, PoolError> {
        let io = self.dial.dial().await.map_err(PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "pooled HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests;
