//! A request body that can be sent more than once. The first attempt streams the app's
//! body as it arrives (nothing waits for the whole body) while a copy of up to a limit
//! (64 KiB) is kept; a later attempt replays the copy and then carries on reading where
//! the app's body left off. A body larger than the limit is sent once and not retried.
//! A body that has ended before the first attempt (a GET's) needs no copy at all.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

use http_body_util::BodyExt;

use crate::body::{self, ProxyBody};

/// The most request body bytes kept for a retry.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// The app's body and the copy every attempt shares; `None` for a body that was empty
/// from the start.
pub struct Replay {
    shared: Option<Arc<Mutex<Shared>>>,
}

struct Shared {
    /// The app's body, until it ends.
    source: Option<ProxyBody>,
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    /// More than `limit` bytes went by: the copy is gone and no retry is possible.
    overflowed: bool,
    /// The app's body broke: no attempt can send it whole.
    broken: bool,
}

impl Replay {
    pub fn new(body: ProxyBody, limit: usize) -> Self {
        if body.is_end_stream() {
            return Self { shared: None };
        }
        Self {
            shared: Some(Arc::new(Mutex::new(Shared {
                source: Some(body),
                chunks: Vec::new(),
                buffered: 0,
                limit,
                trailers: None,
                overflowed: false,
                broken: false,
            }))),
        }
    }

    /// A body for one attempt, starting from the beginning.
    pub fn attempt(&self) -> ProxyBody {
        match &self.shared {
            None => body::empty(),
            Some(shared) => ReplayBody {
                shared: shared.clone(),
                next_chunk: 0,
                trailers_sent: false,
            }
            .boxed(),
        }
    }

    /// Whether another attempt could send the whole body.
    pub fn replayable(&self) -> bool {
        self.shared.as_ref().is_none_or(|shared| {
            let shared = shared.lock().expect("replay lock poisoned");
            !shared.overflowed && !shared.broken
        })
    }
}

/// One attempt's view of the body.
struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    next_chunk: usize,
    trailers_sent: bool,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut shared = this.shared.lock().expect("replay lock poisoned");
        if !shared.overflowed && this.next_chunk < shared.chunks.len() {
            let chunk = shared.chunks[this.next_chunk].clone();
            this.next_chunk += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        loop {
            let Some(source) = shared.source.as_mut() else {
                if this.trailers_sent {
                    return Poll::Ready(None);
                }
                this.trailers_sent = true;
                return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            };
            let frame = match Pin::new(source).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    shared.source = None;
                    continue;
                }
                Poll::Ready(Some(Err(err))) => {
                    shared.broken = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    if !shared.overflowed {
                        if shared.buffered + data.len() > shared.limit {
                            shared.overflowed = true;
                            shared.chunks = Vec::new();
                        } else {
                            shared.buffered += data.len();
                            shared.chunks.push(data.clone());
                            this.next_chunk += 1;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                shared.trailers = Some(trailers.clone());
                shared.source = None;
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            // A frame kind this proxy does not know: not forwarded.
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().expect("replay lock poisoned");
        let copy_sent = shared.overflowed || self.next_chunk >= shared.chunks.len();
        let source_done = shared
            .source
            .as_ref()
            .is_none_or(|source| source.is_end_stream());
        let trailers_done = self.trailers_sent || shared.trailers.is_none();
        copy_sent && source_done && trailers_done
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock().expect("replay lock poisoned");
        let copied: u64 = if shared.overflowed {
            0
        } else {
            shared.chunks[self.next_chunk.min(shared.chunks.len())..]
                .iter()
                .map(|chunk| chunk.len() as u64)
                .sum()
        };
        match &shared.source {
            None => SizeHint::with_exact(copied),
            Some(source) => {
                let rest = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + copied);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + copied);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> ProxyBody {
        let mut frames: Vec<Result<Frame<Bytes>, hyper::Error>> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        if let Some(trailers) = trailers {
            frames.push(Ok(Frame::trailers(trailers)));
        }
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    async fn read(body: ProxyBody) -> (Vec<u8>, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn every_attempt_sends_the_whole_body_and_its_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "3".parse().unwrap());
        let replay = Replay::new(body_of(&[b"ab", b"c"], Some(trailers)), 16);
        for _ in 0..3 {
            let (data, trailers) = read(replay.attempt()).await;
            assert_eq!(data, b"abc");
            assert_eq!(trailers.unwrap()["x-sum"], "3");
            assert!(replay.replayable());
        }
        let finished = replay.attempt();
        assert_eq!(finished.size_hint().exact(), Some(3));
    }

    #[tokio::test]
    async fn a_later_attempt_continues_where_an_earlier_one_stopped() {
        let replay = Replay::new(body_of(&[b"ab", b"cd", b"ef"], None), 16);
        let mut first = replay.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        let (data, _) = read(replay.attempt()).await;
        assert_eq!(
            data, b"abcdef",
            "the copy first, then the rest of the app's body"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_sent_once_and_not_replayable() {
        let replay = Replay::new(body_of(&[b"0123456789", b"0123456789"], None), 16);
        let (data, _) = read(replay.attempt()).await;
        assert_eq!(data.len(), 20, "the one attempt still gets all of it");
        assert!(!replay.replayable());
    }

    #[tokio::test]
    async fn a_body_that_already_ended_is_replayed_without_a_copy() {
        let replay = Replay::new(body::empty(), 16);
        assert!(replay.shared.is_none());
        for _ in 0..2 {
            let attempt = replay.attempt();
            assert!(attempt.is_end_stream());
            assert_eq!(read(attempt).await, (Vec::new(), None));
        }
        assert!(replay.replayable());
    }

    #[tokio::test]
    async fn an_empty_body_ends_at_once() {
        let replay = Replay::new(body_of(&[], None), 16);
        let (data, trailers) = read(replay.attempt()).await;
        assert!(data.is_empty() && trailers.is_none());
        assert!(replay.attempt().is_end_stream());
        assert!(replay.replayable());
    }
}
