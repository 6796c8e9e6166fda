//! The gRPC status of a response: from its headers (a trailers-only response), or from
//! its trailers, read by wrapping the body so the request is recorded when they pass.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BodyError, ProxyBody};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-status` in these headers or trailers, if any.
pub fn from_headers(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Whether these are a gRPC message's headers (`application/grpc`, `application/grpc+proto`...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// `body`, unchanged, calling `done` once with the trailers' `grpc-status` when they pass,
/// when the body ends without them, or when it is dropped unfinished.
pub fn on_trailers<F>(body: ProxyBody, done: F) -> ProxyBody
where
    F: FnOnce(Option<u32>) + Send + Sync + 'static,
{
    TrailerWatch {
        inner: body,
        done: Some(Box::new(done)),
    }
    .boxed()
}

type Done = Box<dyn FnOnce(Option<u32>) + Send + Sync>;

struct TrailerWatch {
    inner: ProxyBody,
    done: Option<Done>,
}

impl TrailerWatch {
    fn complete(&mut self, grpc_status: Option<u32>) {
        if let Some(done) = self.done.take() {
            done(grpc_status);
        }
    }
}

impl Body for TrailerWatch {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = from_headers(trailers);
                    self.complete(status);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.complete(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrailerWatch {
    fn drop(&mut self) {
        self.complete(None);
    }
}
