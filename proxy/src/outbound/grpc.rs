//! Reading a gRPC response's status for the retry decision: from the headers of a
//! trailers-only response, else from the trailers when they come before any message
//! and right after the headers (within [`PEEK_WINDOW`]). A response whose first frame is
//! a message, or is slow to come, is a real answer (possibly a long stream): it is
//! passed on as is, never held back to wait for its trailers.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

use crate::body::{BodyError, ProxyBody};
use crate::telemetry::grpc_status::{from_headers, is_grpc};

/// `grpc-status` UNAVAILABLE.
pub const UNAVAILABLE: u32 = 14;

/// How long after the headers a first frame is waited for. An error's trailers follow
/// its headers at once; a stream's first message may take minutes.
const PEEK_WINDOW: Duration = Duration::from_millis(50);

/// Whether a response says gRPC UNAVAILABLE in its headers (a trailers-only answer).
pub fn unavailable_in_headers<B>(response: &Response<B>) -> bool {
    is_grpc(response.headers()) && from_headers(response.headers()) == Some(UNAVAILABLE)
}

/// The response's gRPC status if it shows one before any message, and the response
/// with its body intact.
pub async fn peek_status(response: Response<ProxyBody>) -> (Option<u32>, Response<ProxyBody>) {
    if let Some(status) = from_headers(response.headers()) {
        return (Some(status), response);
    }
    let (parts, mut body) = response.into_parts();
    // Dropping an unfinished `frame()` loses nothing: a frame is taken only when ready.
    let Ok(first) = tokio::time::timeout(PEEK_WINDOW, body.frame()).await else {
        return (None, Response::from_parts(parts, body));
    };
    let status = match &first {
        Some(Ok(frame)) => frame.trailers_ref().and_then(from_headers),
        _ => None,
    };
    let first: Vec<Result<Frame<Bytes>, BodyError>> = first.into_iter().collect();
    let rest = BodyStream::new(body);
    let body = BodyExt::boxed(StreamBody::new(
        futures_util::stream::iter(first).chain(rest),
    ));
    (status, Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, header};
    use http_body_util::Full;

    fn grpc_response(
        frames: Vec<Frame<Bytes>>,
        header_status: Option<&str>,
    ) -> Response<ProxyBody> {
        let mut builder = Response::builder().header(header::CONTENT_TYPE, "application/grpc");
        if let Some(status) = header_status {
            builder = builder.header("grpc-status", status);
        }
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = frames.into_iter().map(Ok).collect();
        builder
            .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
            .unwrap()
    }

    fn trailers(status: &str) -> Frame<Bytes> {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", status.parse().unwrap());
        Frame::trailers(map)
    }

    #[tokio::test]
    async fn reads_the_status_from_headers_or_leading_trailers_only() {
        let (status, _) = peek_status(grpc_response(Vec::new(), Some("14"))).await;
        assert_eq!(status, Some(UNAVAILABLE), "trailers-only");

        let (status, response) = peek_status(grpc_response(vec![trailers("14")], None)).await;
        assert_eq!(status, Some(UNAVAILABLE), "trailers before any message");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14", "kept");

        let message = Frame::data(Bytes::from_static(b"\0\0\0\0\x01z"));
        let (status, response) =
            peek_status(grpc_response(vec![message, trailers("14")], None)).await;
        assert_eq!(status, None, "a message came first: passed on as is");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(collected.to_bytes().len(), 6);

        let plain = Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
        assert!(!is_grpc(plain.headers()));
        assert!(!unavailable_in_headers(&plain));
        assert!(unavailable_in_headers(&grpc_response(
            Vec::new(),
            Some("14")
        )));
        assert!(!unavailable_in_headers(&grpc_response(
            Vec::new(),
            Some("0")
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_frame_is_not_waited_for() {
        let slow = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, BodyError>(trailers("14"))
        });
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(BodyExt::boxed(StreamBody::new(slow)))
            .unwrap();
        let started = tokio::time::Instant::now();
        let (status, response) = peek_status(response).await;
        assert_eq!(status, None);
        assert_eq!(started.elapsed(), PEEK_WINDOW);
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(
            collected.trailers().unwrap()["grpc-status"],
            "14",
            "the body is intact"
        );
    }
}
