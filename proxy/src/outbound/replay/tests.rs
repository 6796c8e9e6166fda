use std::task::Waker;
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

type Frames = Vec<Result<Frame<Bytes>, BodyError>>;

fn body_of(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> ProxyBody {
    let mut frames: Frames = chunks
        .iter()
        .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
        .collect();
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(trailers)));
    }
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// A body whose chunks the test sends one by one, as a slow client would.
fn slow_body() -> (mpsc::Sender<Result<Frame<Bytes>, BodyError>>, ProxyBody) {
    let (sender, receiver) = mpsc::channel(1);
    (
        sender,
        StreamBody::new(ReceiverStream::new(receiver)).boxed(),
    )
}

fn chunk(data: &'static [u8]) -> Result<Frame<Bytes>, BodyError> {
    Ok(Frame::data(Bytes::from_static(data)))
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
    let (replay, first) = Replay::new(body_of(&[b"ab", b"c"], Some(trailers)), 16);
    let mut attempt = first;
    for _ in 0..3 {
        let (data, trailers) = read(attempt).await;
        assert_eq!(data, b"abc");
        assert_eq!(trailers.unwrap()["x-sum"], "3");
        assert!(replay.replayable());
        attempt = replay.retry_body().expect("replayable");
    }
    assert_eq!(attempt.size_hint().exact(), Some(3));
}

#[tokio::test]
async fn a_later_attempt_continues_where_an_earlier_one_stopped() {
    let (replay, mut first) = Replay::new(body_of(&[b"ab", b"cd", b"ef"], None), 16);
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ab");
    drop(first);
    let (data, _) = read(replay.retry_body().unwrap()).await;
    assert_eq!(
        data, b"abcdef",
        "the copy first, then the rest of the app's body"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_sent_once_and_not_replayable() {
    let (replay, first) = Replay::new(body_of(&[b"0123456789", b"0123456789"], None), 16);
    let (data, _) = read(first).await;
    assert_eq!(data.len(), 20, "the one attempt still gets all of it");
    assert!(!replay.replayable());
    assert!(replay.retry_body().is_none());
}

#[tokio::test]
async fn a_body_that_already_ended_is_replayed_without_a_copy() {
    let (replay, first) = Replay::new(body::empty(), 16);
    assert!(replay.shared.is_none());
    assert!(first.is_end_stream());
    for _ in 0..2 {
        let attempt = replay.retry_body().unwrap();
        assert!(attempt.is_end_stream());
        assert_eq!(read(attempt).await, (Vec::new(), None));
    }
    assert!(replay.replayable());
}

#[tokio::test]
async fn an_empty_body_ends_at_once() {
    let (replay, first) = Replay::new(body_of(&[], None), 16);
    let (data, trailers) = read(first).await;
    assert!(data.is_empty() && trailers.is_none());
    assert!(replay.retry_body().unwrap().is_end_stream());
    assert!(replay.replayable());
}

#[tokio::test]
async fn a_superseded_attempt_ends_with_an_error_and_never_reports_itself_complete() {
    let (replay, mut first) = Replay::new(body_of(&[b"ab", b"cd"], None), 16);
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ab");
    let retry = replay.retry_body().unwrap();
    assert!(!first.is_end_stream());
    let error = first.frame().await.unwrap().unwrap_err();
    assert_eq!(
        error.to_string(),
        "a retry took over the request body from this attempt"
    );
    assert_eq!(read(retry).await.0, b"abcd");
}

/// The connection of a first attempt answered early (a 503 before the upstream read the
/// request) keeps sending its body while the retry sends its own. Both wait on the app's
/// slow body; the retry must be woken by each new chunk and get all of it, and the first
/// attempt must stop at once, not race the retry for the chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_reads_a_slow_body_to_its_end_while_the_first_attempt_is_still_polled() {
    let (app, body) = slow_body();
    let (replay, first) = Replay::new(body, MAX_REPLAY_BYTES);
    app.send(chunk(b"one,")).await.unwrap();
    let (read_one, has_read_one) = tokio::sync::oneshot::channel();
    let first_attempt = tokio::spawn(async move {
        let mut first = first;
        let frame = first.frame().await.unwrap().unwrap();
        let mut read = frame.into_data().unwrap().to_vec();
        read_one.send(()).unwrap();
        loop {
            match first.frame().await {
                Some(Ok(frame)) => read.extend_from_slice(&frame.into_data().unwrap()),
                Some(Err(error)) => return (read, Some(error.to_string())),
                None => return (read, None),
            }
        }
    });
    // The first attempt has read what came so far and waits for more.
    has_read_one.await.unwrap();
    let retry = replay.retry_body().expect("the copy is whole");
    let retry_attempt = tokio::spawn(read(retry));
    for part in [b"two,".as_slice(), b"three,", b"four"] {
        app.send(Ok(Frame::data(Bytes::from_static(part))))
            .await
            .unwrap();
    }
    drop(app);
    let (data, _) = tokio::time::timeout(Duration::from_secs(10), retry_attempt)
        .await
        .expect("the retry is woken for every chunk")
        .unwrap();
    assert_eq!(data, b"one,two,three,four");
    let (read, error) = first_attempt.await.unwrap();
    assert_eq!(
        read, b"one,",
        "the first attempt read nothing after the retry began"
    );
    assert!(error.is_some(), "the first attempt ends with an error");
}

/// A waker that counts how often it was woken.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let count = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

fn woken(count: &CountingWaker) -> usize {
    count.0.load(std::sync::atomic::Ordering::SeqCst)
}

fn poll(body: &mut ProxyBody, waker: &Waker) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    Pin::new(body).poll_frame(&mut Context::from_waker(waker))
}

/// The order that lost a retry's wake-up: the first attempt's connection polls its body
/// again after the retry has (woken for its own reasons, say the end of the early answer
/// arriving). The app's body keeps one waker, the last poller's; the next chunk must
/// still wake the retry.
#[tokio::test]
async fn a_poll_of_the_earlier_attempt_after_the_retry_does_not_take_the_retrys_wake_up() {
    let (app, body) = slow_body();
    let (replay, mut first) = Replay::new(body, MAX_REPLAY_BYTES);
    let (first_woken, first_waker) = counting_waker();
    let (retry_woken, retry_waker) = counting_waker();
    app.send(chunk(b"one,")).await.unwrap();
    assert!(matches!(
        poll(&mut first, &first_waker),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(poll(&mut first, &first_waker).is_pending());

    let mut retry = replay.retry_body().unwrap();
    assert_eq!(
        woken(&first_woken),
        1,
        "the superseded attempt is told at once"
    );
    let replayed = poll(&mut retry, &retry_waker);
    assert!(
        matches!(&replayed, Poll::Ready(Some(Ok(frame))) if frame.data_ref().unwrap() == "one,")
    );
    assert!(poll(&mut retry, &retry_waker).is_pending());
    assert!(
        matches!(poll(&mut first, &first_waker), Poll::Ready(Some(Err(_)))),
        "the earlier attempt ends instead of waiting on the app's body"
    );

    app.send(chunk(b"two")).await.unwrap();
    assert_eq!(woken(&retry_woken), 1, "the new chunk wakes the retry");
    let next = poll(&mut retry, &retry_waker);
    assert!(matches!(&next, Poll::Ready(Some(Ok(frame))) if frame.data_ref().unwrap() == "two"));
}
