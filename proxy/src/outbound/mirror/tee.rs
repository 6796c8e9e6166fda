//! A request body that goes to the primary as it arrives while a copy of it is kept
//! for the mirror, up to [`MAX_MIRROR_BODY`]. The primary is never held back: each frame
//! is handed on as soon as it is read, and the copy only clones its bytes (a reference
//! count). When the body ends within the limit the copy is handed over whole; past the
//! limit it is given up as `too_large`; a body that breaks or is dropped before its end
//! loses it as `failure`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body, Frame, SizeHint};

use super::{MAX_MIRROR_BODY, Outcome};
use crate::body::{BodyError, ProxyBody};

/// Told once what became of the copy: its whole body, or why there is none.
pub type Ended = Box<dyn FnOnce(Result<ProxyBody, Outcome>) + Send + Sync>;

pub struct Tee {
    inner: ProxyBody,
    /// `None` once the copy was handed over or given up.
    copy: Option<Kept>,
}

struct Kept {
    ended: Ended,
    frames: Vec<Frame<Bytes>>,
    bytes: usize,
}

impl Tee {
    pub fn boxed(inner: ProxyBody, ended: Ended) -> ProxyBody {
        Self {
            inner,
            copy: Some(Kept {
                ended,
                frames: Vec::new(),
                bytes: 0,
            }),
        }
        .boxed()
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(kept) = &mut self.copy else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            if kept.bytes + data.len() > MAX_MIRROR_BODY {
                self.give_up(Outcome::TooLarge);
                return;
            }
            kept.bytes += data.len();
            kept.frames.push(Frame::data(data.clone()));
        } else if let Some(trailers) = frame.trailers_ref() {
            kept.frames.push(Frame::trailers(trailers.clone()));
        }
    }

    fn send(&mut self) {
        if let Some(kept) = self.copy.take() {
            let frames = kept.frames.into_iter().map(Ok::<_, BodyError>);
            (kept.ended)(Ok(
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            ));
        }
    }

    fn give_up(&mut self, outcome: Outcome) {
        if let Some(kept) = self.copy.take() {
            (kept.ended)(Err(outcome));
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                this.keep(frame);
                // The connection may stop polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.send();
                }
            }
            Some(Err(_)) => this.give_up(Outcome::Failure),
            None => this.send(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.give_up(Outcome::Failure);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::body;

    /// What a tee's copy ended as, once it has.
    type Seen = Arc<Mutex<Option<Result<ProxyBody, Outcome>>>>;

    /// A tee of `chunks` (sent as a stream) and what its copy ended as.
    fn tee_of(chunks: Vec<Bytes>) -> (ProxyBody, Seen) {
        let ended = Arc::new(Mutex::new(None));
        let seen = ended.clone();
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok::<_, BodyError>(Frame::data(chunk)));
        let inner = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let tee = Tee::boxed(inner, Box::new(move |end| *seen.lock() = Some(end)));
        (tee, ended)
    }

    #[tokio::test]
    async fn the_primary_gets_every_byte_and_the_copy_the_same() {
        let chunks: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let whole: Vec<u8> = chunks.iter().flatten().copied().collect();
        let (tee, ended) = tee_of(chunks);
        let primary = tee.collect().await.unwrap().to_bytes();
        assert_eq!(primary, whole);
        let copy = ended
            .lock()
            .take()
            .expect("the copy ended")
            .expect("a whole copy");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), whole);
    }

    #[tokio::test]
    async fn past_the_limit_the_copy_is_too_large_and_the_primary_goes_on() {
        let chunk = Bytes::from(vec![7u8; 16 * 1024]);
        let (tee, ended) = tee_of(vec![chunk; 5]);
        let primary = tee.collect().await.unwrap().to_bytes();
        assert_eq!(primary.len(), 80 * 1024);
        assert!(matches!(ended.lock().take(), Some(Err(Outcome::TooLarge))));
    }

    #[tokio::test]
    async fn exactly_the_limit_is_copied() {
        let chunk = Bytes::from(vec![1u8; MAX_MIRROR_BODY / 2]);
        let (tee, ended) = tee_of(vec![chunk.clone(), chunk]);
        tee.collect().await.unwrap();
        let copy = ended.lock().take().unwrap().unwrap();
        assert_eq!(
            copy.collect().await.unwrap().to_bytes().len(),
            MAX_MIRROR_BODY
        );
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_loses_the_copy() {
        let (mut tee, ended) = tee_of(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        let first = tee.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        assert!(ended.lock().is_none(), "the copy waits for the end");
        drop(tee);
        assert!(matches!(ended.lock().take(), Some(Err(Outcome::Failure))));
    }

    #[tokio::test]
    async fn a_copy_is_handed_over_when_the_body_says_it_ended() {
        // A full body reports its end with its last frame: no further poll comes.
        let ended = Arc::new(Mutex::new(None));
        let seen = ended.clone();
        let mut tee = Tee::boxed(
            body::text("whole".into()),
            Box::new(move |end| *seen.lock() = Some(end)),
        );
        tee.frame().await.unwrap().unwrap();
        assert!(tee.is_end_stream());
        let copy = ended.lock().take().unwrap().unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "whole");
    }
}
