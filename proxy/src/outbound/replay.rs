//! A request body that can be sent more than once. The first attempt streams the app's
//! body as it arrives (nothing waits for the whole body) while a copy of up to a limit
//! (64 KiB) is kept; a later attempt replays the copy and then carries on reading where
//! the app's body left off. A body larger than the limit is sent once and not retried.
//! A body that has ended before the first attempt (a GET's) needs no copy at all.
//!
//! Only the newest attempt reads. Making a retry's body supersedes the attempts before it:
//! the connection of an earlier attempt may still be sending its body after an early
//! answer (an upstream may answer 503 before reading the request), and from its next poll
//! on that body ends with an error, which aborts that upload instead of completing a
//! request the retry sends again. No lock is held while the app's body is polled: the
//! reader takes it out of the shared state, polls it and puts it back; an attempt that
//! finds it taken out (its predecessor was mid-poll on another thread) is woken when it is
//! put back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

use crate::body::{self, BodyError, ProxyBody};

/// The most request body bytes kept for a retry.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// Why a replayed body ended with an error of the proxy's own.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("a retry took over the request body from this attempt")]
    Superseded,
    #[error("the request body broke off while an earlier attempt was sending it")]
    Broken,
}

/// The app's body and the copy every attempt shares; `None` for a body that was empty
/// from the start.
pub struct Replay {
    shared: Option<Arc<Mutex<Shared>>>,
}

struct Shared {
    source: Source,
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    /// More than `limit` bytes went by: the copy is gone and no retry is possible.
    overflowed: bool,
    /// The attempt that may read; the ones before it are superseded.
    current: u32,
    /// An attempt that found the source taken out, to wake when it is put back.
    waiting: Option<Waker>,
    /// The attempt that last found the app's body had nothing yet: the one the body will
    /// wake. A retry wakes it, so a superseded attempt learns it is done at once rather
    /// than leaving its connection waiting for ever.
    parked: Option<Waker>,
}

/// Where the app's body is.
enum Source {
    /// Here, to be polled by the current attempt.
    Open(ProxyBody),
    /// Taken out by an attempt that is polling it right now.
    Polling,
    /// It ended (its trailers, if any, are kept).
    Ended,
    /// It broke: no attempt can send it whole.
    Broken,
}

impl Replay {
    /// Takes the app's body; returns the replay and the first attempt's body.
    pub fn new(body: ProxyBody, limit: usize) -> (Self, ProxyBody) {
        if body.is_end_stream() {
            return (Self { shared: None }, body::empty());
        }
        let shared = Arc::new(Mutex::new(Shared {
            source: Source::Open(body),
            chunks: Vec::new(),
            buffered: 0,
            limit,
            trailers: None,
            overflowed: false,
            current: 0,
            waiting: None,
            parked: None,
        }));
        let first = ReplayBody::boxed_for(shared.clone(), 0);
        (
            Self {
                shared: Some(shared),
            },
            first,
        )
    }

    /// Whether another attempt could send the whole body.
    pub fn replayable(&self) -> bool {
        self.shared.as_ref().is_none_or(|shared| {
            let shared = shared.lock();
            !shared.overflowed && !matches!(shared.source, Source::Broken)
        })
    }

    /// The body of a retry, from the beginning, superseding every earlier attempt; `None`
    /// when it cannot be sent whole any more.
    pub fn retry_body(&self) -> Option<ProxyBody> {
        let Some(shared) = &self.shared else {
            return Some(body::empty());
        };
        let (attempt, parked) = {
            let mut state = shared.lock();
            if state.overflowed || matches!(state.source, Source::Broken) {
                return None;
            }
            state.current += 1;
            (state.current, state.parked.take())
        };
        if let Some(superseded) = parked {
            superseded.wake();
        }
        Some(ReplayBody::boxed_for(shared.clone(), attempt))
    }
}

/// One attempt's view of the body.
struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    cursor: Cursor,
}

/// Which attempt a body is, and how far it got.
struct Cursor {
    attempt: u32,
    next_chunk: usize,
    trailers_sent: bool,
}

impl ReplayBody {
    fn boxed_for(shared: Arc<Mutex<Shared>>, attempt: u32) -> ProxyBody {
        Self {
            shared,
            cursor: Cursor {
                attempt,
                next_chunk: 0,
                trailers_sent: false,
            },
        }
        .boxed()
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut shared = this.shared.lock();
        loop {
            if this.cursor.attempt != shared.current {
                return Poll::Ready(Some(Err(BodyError::new(ReplayError::Superseded))));
            }
            // The copy first. Once the copy overflowed it is empty, and only the current
            // attempt, which had read all of it, reads on.
            if this.cursor.next_chunk < shared.chunks.len() {
                let chunk = shared.chunks[this.cursor.next_chunk].clone();
                this.cursor.next_chunk += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            let mut source = match std::mem::replace(&mut shared.source, Source::Polling) {
                Source::Open(source) => source,
                Source::Polling => {
                    shared.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Source::Ended => {
                    shared.source = Source::Ended;
                    if this.cursor.trailers_sent {
                        return Poll::Ready(None);
                    }
                    this.cursor.trailers_sent = true;
                    return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
                }
                Source::Broken => {
                    shared.source = Source::Broken;
                    return Poll::Ready(Some(Err(BodyError::new(ReplayError::Broken))));
                }
            };
            drop(shared);
            let polled = Pin::new(&mut source).poll_frame(cx);
            shared = this.shared.lock();
            let waiting = shared.waiting.take();
            if polled.is_pending()
                && !shared
                    .parked
                    .as_ref()
                    .is_some_and(|parked| parked.will_wake(cx.waker()))
            {
                shared.parked = Some(cx.waker().clone());
            }
            let outcome = shared.took(source, polled, &mut this.cursor);
            if let Some(waiting) = waiting {
                waiting.wake();
            }
            match outcome {
                Took::Frame(frame) => return frame,
                Took::ReadAgain => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock();
        if self.cursor.attempt != shared.current {
            // It ends with an error, not quietly: a body reported complete would let a
            // connection send it as if whole.
            return false;
        }
        let copy_sent = self.cursor.next_chunk >= shared.chunks.len();
        let trailers_done = self.cursor.trailers_sent || shared.trailers.is_none();
        let source_done = match &shared.source {
            Source::Open(source) => source.is_end_stream(),
            Source::Ended => trailers_done,
            Source::Polling | Source::Broken => false,
        };
        copy_sent && source_done
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock();
        if self.cursor.attempt != shared.current {
            return SizeHint::default();
        }
        let copied: u64 = shared.chunks[self.cursor.next_chunk.min(shared.chunks.len())..]
            .iter()
            .map(|chunk| chunk.len() as u64)
            .sum();
        match &shared.source {
            Source::Ended => SizeHint::with_exact(copied),
            Source::Open(source) => {
                let rest = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + copied);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + copied);
                }
                hint
            }
            Source::Polling | Source::Broken => SizeHint::default(),
        }
    }
}

/// What polling the app's body gave the attempt that polled it.
enum Took {
    Frame(Poll<Option<Result<Frame<Bytes>, BodyError>>>),
    /// A frame kind this proxy does not forward: poll again.
    ReadAgain,
}

impl Shared {
    /// Puts the app's body back after `reader` polled it, keeping a copy of what came.
    /// A frame read by an attempt superseded while it was polling is kept for the current
    /// one (and only for it: the superseded attempt gets an error).
    fn took(
        &mut self,
        source: ProxyBody,
        polled: Poll<Option<Result<Frame<Bytes>, BodyError>>>,
        reader: &mut Cursor,
    ) -> Took {
        let superseded = reader.attempt != self.current;
        let frame = match polled {
            Poll::Pending => {
                self.source = Source::Open(source);
                return Took::Frame(Poll::Pending);
            }
            Poll::Ready(None) => {
                self.source = Source::Ended;
                return Took::ReadAgain;
            }
            Poll::Ready(Some(Err(err))) => {
                self.source = Source::Broken;
                return Took::Frame(Poll::Ready(Some(Err(err))));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        self.source = Source::Open(source);
        let frame = match frame.into_data() {
            Ok(data) => {
                if !self.overflowed {
                    if self.buffered + data.len() > self.limit {
                        self.overflowed = true;
                        self.chunks = Vec::new();
                        if superseded {
                            // The current attempt can neither replay nor read this chunk.
                            self.source = Source::Broken;
                        }
                    } else {
                        self.buffered += data.len();
                        self.chunks.push(data.clone());
                        if !superseded {
                            reader.next_chunk += 1;
                        }
                    }
                }
                Frame::data(data)
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    self.trailers = Some(trailers.clone());
                    self.source = Source::Ended;
                    if !superseded {
                        reader.trailers_sent = true;
                    }
                    Frame::trailers(trailers)
                }
                Err(_) => return Took::ReadAgain,
            },
        };
        if superseded {
            Took::Frame(Poll::Ready(Some(Err(BodyError::new(
                ReplayError::Superseded,
            )))))
        } else {
            Took::Frame(Poll::Ready(Some(Ok(frame))))
        }
    }
}

#[cfg(test)]
mod tests;
