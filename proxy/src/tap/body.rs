//! The response body of a tapped request: passed through unchanged while its bytes are
//! counted (and a gRPC status read from its trailers); when it ends, fails or is dropped,
//! the finished request goes to the taps once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

use super::{TapEvent, Taps};
use crate::body::{BodyError, ProxyBody};
use crate::telemetry::grpc_status;

pub struct TapBody {
    inner: ProxyBody,
    /// Until published.
    pending: Option<Box<TapEvent>>,
    started: tokio::time::Instant,
    taps: Arc<Taps>,
}

impl TapBody {
    pub fn wrap(
        inner: ProxyBody,
        event: TapEvent,
        started: tokio::time::Instant,
        taps: Arc<Taps>,
    ) -> ProxyBody {
        Self {
            inner,
            pending: Some(Box::new(event)),
            started,
            taps,
        }
        .boxed()
    }

    fn finish(&mut self) {
        if let Some(mut event) = self.pending.take() {
            event.latency = self.started.elapsed();
            self.taps.publish(*event);
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let data_len = frame.data_ref().map(Bytes::len);
                let trailer_status = frame.trailers_ref().and_then(grpc_status::from_headers);
                if let Some(event) = self.pending.as_mut() {
                    if let Some(len) = data_len {
                        event.response_bytes += len as u64;
                    }
                    if trailer_status.is_some() {
                        event.grpc_status = trailer_status;
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.finish(),
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

impl Drop for TapBody {
    fn drop(&mut self) {
        self.finish();
    }
}
