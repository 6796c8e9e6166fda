//! The types the layers of the outbound request path are made of. A layer is a shared
//! function from one stage of an attempt to a boxed response future; cloning one (a layer
//! whose future outlives its call does, per request) bumps a reference count, where
//! tower's boxed services would copy the whole chain of layers below.
//!
//! Each stage is its own type, holding what the layers above have decided: the retry
//! layer hands an [`Attempt`] down, the split turns it into a [`ToBackend`] (the backend it
//! drew), the balancer into a [`ToEndpoint`] (the endpoint it picked), which the
//! per-endpoint layer and the connection take. A layer's input and output types are its
//! place in the order, so a stack built in another order does not compile. What the
//! layers decide travels in typed fields, not in request extensions: they cost no
//! allocation or lookup, and the peer never sees them. There is no `poll_ready`:
//! back-pressure is the balancer's and the per-endpoint layer's business, answered per
//! request.

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

/// One attempt of a request: the request, the route it matched, and the endpoint the
/// previous attempt failed on (from the retry layer).
pub struct Attempt {
    pub request: Request<ProxyBody>,
    pub choice: RouteChoice,
    pub avoid: Option<SocketAddr>,
}

impl Attempt {
    pub fn new(request: Request<ProxyBody>, choice: RouteChoice) -> Self {
        Self {
            request,
            choice,
            avoid: None,
        }
    }
}

/// An attempt and the backend the split drew for it.
pub struct ToBackend {
    pub attempt: Attempt,
    pub target: Arc<Target>,
}

/// An attempt on its way to the endpoint the balancer picked.
pub struct ToEndpoint {
    pub request: Request<ProxyBody>,
    pub choice: RouteChoice,
    pub picked: Picked,
}

pub type StackFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static>>;

type Handler<A> = dyn Fn(A) -> StackFuture + Send + Sync;

/// One layer and everything below it, taking attempts at stage `A`.
pub struct Stack<A>(Arc<Handler<A>>);

impl<A> Clone for Stack<A> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<A: 'static> Stack<A> {
    /// A layer that answers each attempt with `handle(attempt)`.
    pub fn new<F, Fut>(handle: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static,
    {
        Self(Arc::new(move |attempt| Box::pin(handle(attempt))))
    }

    /// A layer whose handler already returns a boxed future (typically the layer below's
    /// `send`), which is kept as it is rather than boxed again.
    pub fn from_fn<F>(handle: F) -> Self
    where
        F: Fn(A) -> StackFuture + Send + Sync + 'static,
    {
        Self(Arc::new(handle))
    }

    /// Sends `attempt` down this layer.
    pub fn send(&self, attempt: A) -> StackFuture {
        (self.0)(attempt)
    }
}
