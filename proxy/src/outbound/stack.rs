//! The type every layer of the outbound request path is: a shared function from an
//! attempt to a boxed response future. Cloning one (a layer whose future outlives its call
//! does, per request) bumps a reference count; tower's boxed services would copy the whole
//! chain of layers below.
//! What the layers decide for an attempt travels beside the request in `Attempt`, not in
//! its extensions: typed fields cost no allocation or lookup, and the peer never sees them.
//! There is no `poll_ready`: back-pressure is the load balancer's and the breaker's
//! business, answered per request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};

use super::balance::Picked;
use super::route::RouteChoice;
use crate::body::ProxyBody;
use crate::proxy_error::ProxyError;
use crate::state::policy::Target;

/// One attempt on its way down the stack: the request, the route it matched, and what
/// the layers above decided for it.
pub struct Attempt {
    pub request: Request<ProxyBody>,
    pub choice: RouteChoice,
    /// The endpoint the previous attempt of this request failed on (from `retry`).
    pub avoid: Option<SocketAddr>,
    /// The backend the split drew (from `split`).
    pub target: Option<Arc<Target>>,
    /// The endpoint the balancer picked (from `balance`).
    pub picked: Option<Picked>,
}

impl Attempt {
    pub fn new(request: Request<ProxyBody>, choice: RouteChoice) -> Self {
        Self {
            request,
            choice,
            avoid: None,
            target: None,
            picked: None,
        }
    }
}

pub type StackFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static>>;

type Handler = dyn Fn(Attempt) -> StackFuture + Send + Sync;

/// One layer and everything below it.
#[derive(Clone)]
pub struct Stack(Arc<Handler>);

impl Stack {
    /// A layer that answers each attempt with `handle(attempt)`.
    pub fn new<F, Fut>(handle: F) -> Self
    where
        F: Fn(Attempt) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static,
    {
        Self(Arc::new(move |attempt| Box::pin(handle(attempt))))
    }

    /// A layer whose handler already returns a boxed future (typically the layer below's
    /// `send`), which is kept as it is rather than boxed again.
    pub fn from_fn<F>(handle: F) -> Self
    where
        F: Fn(Attempt) -> StackFuture + Send + Sync + 'static,
    {
        Self(Arc::new(handle))
    }

    /// Sends `attempt` down this layer.
    pub fn send(&self, attempt: Attempt) -> StackFuture {
        (self.0)(attempt)
    }
}
