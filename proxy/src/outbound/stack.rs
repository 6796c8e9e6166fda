//! The type every layer of the outbound request path is: a shared function from request to
//! boxed response future. Cloning one (a layer whose future outlives its call does, per
//! request) bumps a reference count; tower's boxed services would copy the whole chain of
//! layers below.
//! There is no `poll_ready`: back-pressure is the load balancer's and the breaker's
//! business, answered per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::proxy_error::ProxyError;

pub type StackFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static>>;

type Handler = dyn Fn(Request<ProxyBody>) -> StackFuture + Send + Sync;

/// One layer and everything below it.
#[derive(Clone)]
pub struct Stack(Arc<Handler>);

impl Stack {
    /// A layer that answers each request with `handle(request)`.
    pub fn new<F, Fut>(handle: F) -> Self
    where
        F: Fn(Request<ProxyBody>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static,
    {
        Self(Arc::new(move |request| Box::pin(handle(request))))
    }

    /// A layer whose handler already returns a boxed future (typically the layer below's
    /// `send`), which is kept as it is rather than boxed again.
    pub fn from_fn<F>(handle: F) -> Self
    where
        F: Fn(Request<ProxyBody>) -> StackFuture + Send + Sync + 'static,
    {
        Self(Arc::new(handle))
    }

    /// Sends `request` down this layer.
    pub fn send(&self, request: Request<ProxyBody>) -> StackFuture {
        (self.0)(request)
    }
}
