//! Traffic mirroring, on the caller's side, per route: a share of the route's requests
//! is copied, fire-and-forget, to one endpoint of the mirror service (in turn), over the
//! same pooled mTLS peer clients as any request (`peers`), the endpoint's SPIFFE id
//! verified as for any other. The copy's answer is read and discarded. The primary never
//! awaits anything of the copy: a slow, hanging or failing mirror cannot slow, fail or
//! change it.
//!
//! - Bodies are copied up to [`MAX_MIRROR_BODY`] (64 KiB). A request whose
//!   `content-length` is larger is not copied; a streamed body is teed as it goes to the
//!   primary (`tee`) and the copy sent once it ended within the limit, or dropped past it.
//! - The copy has the primary's method, path, query, headers (hop-by-hop ones are already
//!   gone) and body, plus `x-seam-mirror: 1`; its `traceparent` gets a new span id and the
//!   sampled flag cleared, so the mirror's spans are not sampled.
//! - At most [`MAX_COPIES_IN_FLIGHT`] copies are in flight per proxy (excess copies are
//!   dropped), each for at most [`COPY_TIMEOUT`] or the route's timeout if smaller, so a
//!   hanging mirror gives its slot back.
//!
//! Every copy drawn is counted once in `seam_mirror_requests_total` by what became of it.

mod tee;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::peers::{PeerClient, PeerClients};
use crate::body::{self, ProxyBody};
use crate::metrics::Metrics;
use crate::state::Directory;
use crate::state::traffic::Mirror;
use crate::telemetry::trace_context::{TRACEPARENT, parse_traceparent, traceparent};

/// The largest request body copied to a mirror.
pub const MAX_MIRROR_BODY: usize = 64 * 1024;
/// Copies in flight at once per proxy; more are dropped.
pub const MAX_COPIES_IN_FLIGHT: usize = 32;
/// The longest a copy may take (the route's timeout when that is smaller).
pub const COPY_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks a request as a mirror's copy.
pub const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-seam-mirror");

/// What became of a copy (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The mirror answered with a status below 500 and its body was read.
    Success,
    /// A 5xx answer, no connection, no endpoint, or a body that broke or never ended.
    Failure,
    /// No whole answer within the copy's timeout.
    Timeout,
    /// Not sent: too many copies in flight.
    Dropped,
    /// Not sent: the body is larger than [`MAX_MIRROR_BODY`].
    TooLarge,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::Dropped => "dropped",
            Self::TooLarge => "too_large",
        }
    }
}

/// Sends the copies of every mirrored route of this proxy.
pub struct Mirrors {
    peers: Arc<PeerClients>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
}

impl Mirrors {
    pub fn new(peers: Arc<PeerClients>, directory: Arc<Directory>, metrics: Arc<Metrics>) -> Self {
        Self {
            peers,
            directory,
            metrics,
            slots: Arc::new(Semaphore::new(MAX_COPIES_IN_FLIGHT)),
        }
    }

    /// Copies `request` to `mirror` when this request is one of its share, and returns
    /// the request to send on (its body teed when the copy must wait for it).
    /// `route_timeout` bounds the copy when it is shorter than [`COPY_TIMEOUT`].
    pub fn copy(
        &self,
        request: Request<ProxyBody>,
        mirror: &Mirror,
        route_timeout: Option<Duration>,
    ) -> Request<ProxyBody> {
        if !mirror.chance.draw() {
            return request;
        }
        let service = &mirror.target.service;
        let count = |outcome: Outcome| self.metrics.mirrored(service, outcome.as_str());
        if declared_length(&request).is_some_and(|length| length > MAX_MIRROR_BODY as u64) {
            count(Outcome::TooLarge);
            return request;
        }
        let endpoints = &mirror.target.endpoints;
        if endpoints.is_empty() {
            count(Outcome::Failure);
            return request;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            count(Outcome::Dropped);
            return request;
        };
        let endpoint = &endpoints[mirror.target.next_turn() % endpoints.len()];
        let copy = Copy {
            head: head_of(&request),
            client: self.peers.get(endpoint, || self.directory.endpoints()),
            service: service.clone(),
            timeout: route_timeout.map_or(COPY_TIMEOUT, |limit| limit.min(COPY_TIMEOUT)),
            metrics: self.metrics.clone(),
            _slot: slot,
        };
        if request.body().is_end_stream() {
            copy.send(body::empty());
            return request;
        }
        let (parts, body) = request.into_parts();
        let ended: tee::Ended = Box::new(move |ended| match ended {
            Ok(body) => copy.send(body),
            Err(outcome) => copy.abandon(outcome),
        });
        Request::from_parts(parts, tee::Tee::boxed(body, ended))
    }
}

/// The `content-length` the request declares, if any.
fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The copy's head: the primary's method, URI, version and headers, marked as a copy,
/// with a trace context that is not sampled.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    let headers = head.headers_mut();
    *headers = request.headers().clone();
    headers.insert(MIRROR_HEADER, HeaderValue::from_static("1"));
    if let Some(mut context) = headers
        .get(TRACEPARENT)
        .and_then(|value| parse_traceparent(value.as_bytes()))
    {
        context.sampled = Some(false);
        context.span_id = rand::random::<u64>().max(1);
        headers.insert(TRACEPARENT, traceparent(&context));
    }
    head
}

/// A copy waiting for its body, holding its slot until it is done.
struct Copy {
    head: Request<()>,
    client: Arc<PeerClient>,
    service: Arc<str>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

impl Copy {
    /// Sends the copy with `body` in a task of its own, reads the answer and counts it.
    fn send(self, body: ProxyBody) {
        let Self {
            head,
            client,
            service,
            timeout,
            metrics,
            _slot,
        } = self;
        let sent = client.send(head.map(|()| body));
        tokio::spawn(async move {
            let _slot = _slot;
            let answered = async move {
                let response = sent.await.map_err(|_| Outcome::Failure)?;
                let server_error = response.status().is_server_error();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.map_err(|_| Outcome::Failure)?;
                }
                if server_error {
                    Err(Outcome::Failure)
                } else {
                    Ok(Outcome::Success)
                }
            };
            let outcome = match tokio::time::timeout(timeout, answered).await {
                Ok(Ok(outcome) | Err(outcome)) => outcome,
                Err(_) => Outcome::Timeout,
            };
            metrics.mirrored(&service, outcome.as_str());
        });
    }

    /// Counts a copy that will not be sent.
    fn abandon(self, outcome: Outcome) {
        self.metrics.mirrored(&self.service, outcome.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_marked_and_its_trace_is_not_sampled() {
        let request = Request::builder()
            .method("PUT")
            .uri("/items/7?full=1")
            .header("x-app", "kept")
            .header(
                TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(())
            .unwrap();
        let head = head_of(&request);
        assert_eq!(head.method(), "PUT");
        assert_eq!(head.uri(), "/items/7?full=1");
        assert_eq!(head.headers()["x-app"], "kept");
        assert_eq!(head.headers()[MIRROR_HEADER], "1");
        let context = parse_traceparent(head.headers()[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(context.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_ne!(context.span_id, 0xb7ad6b7169203331, "a span id of its own");
        assert_eq!(context.sampled, Some(false));

        let untraced = head_of(&Request::new(()));
        assert!(untraced.headers().get(TRACEPARENT).is_none());
    }

    #[test]
    fn the_declared_length_is_read_when_there_is_one() {
        let with = |value: &str| {
            Request::builder()
                .header("content-length", value)
                .body(())
                .unwrap()
        };
        assert_eq!(declared_length(&with("65537")), Some(65_537));
        assert_eq!(declared_length(&with("many")), None);
        assert_eq!(declared_length(&Request::new(())), None);
    }
}
