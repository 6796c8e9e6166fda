//! Tap: live requests seen by this proxy, streamed to whoever opened `GET /tap` on the
//! admin listener (`seamctl tap`, the control plane's dashboard).
//!
//! `Taps` holds the open taps. Telemetry asks it twice per request: `capture` when the
//! request arrives (with no tap open: one relaxed atomic load, nothing else) and, only if
//! something was captured, `follow` when the response is ready, which counts the
//! response body and publishes the finished request when the body ends. Publishing
//! applies each tap's filter and its GCRA rate limit, then `try_send`s into its bounded
//! channel: a slow tap loses events (counted) and never slows a request.

mod body;
pub mod event;
pub mod query;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Body;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::body::ProxyBody;
pub use event::TapEvent;
use query::{TapFilter, TapQuery};

/// The most taps open at once on one proxy.
pub const MAX_OPEN_TAPS: usize = 16;
/// Events queued per tap before new ones are dropped.
const TAP_QUEUE: usize = 1024;

/// The tap counters in the proxy's registry.
#[derive(Clone)]
pub struct TapMetrics {
    open: Gauge,
    dropped: Family<DropLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `rate_limited` (over the tap's max_rps) or `queue_full` (the reader fell behind).
    reason: &'static str,
}

impl TapMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let open = Gauge::default();
        registry.register("taps_open", "Taps open on the admin listener", open.clone());
        let dropped = Family::default();
        registry.register(
            "tap_events_dropped",
            "Finished requests a tap matched but did not send, by reason (rate_limited: over \
             the tap's max_rps; queue_full: its reader fell behind)",
            Family::clone(&dropped),
        );
        Self { open, dropped }
    }

    fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }
}

/// The open taps of this proxy.
pub struct Taps {
    /// How many taps are open: the request path's only question when there are none.
    open: AtomicUsize,
    current: ArcSwap<OpenTaps>,
    /// Serializes opening and closing (each builds a new `OpenTaps`).
    edit: Mutex<()>,
    next_id: AtomicU64,
    metrics: TapMetrics,
}

/// The taps open at one moment, published whole.
#[derive(Default)]
struct OpenTaps {
    sinks: Vec<Arc<Sink>>,
    /// Every header name some open tap asked for: what `capture` keeps.
    headers: Vec<HeaderName>,
}

/// One open tap, as the request path sees it.
struct Sink {
    id: u64,
    filter: TapFilter,
    limiter: DefaultDirectRateLimiter,
    events: mpsc::Sender<Arc<TapEvent>>,
}

/// Why a tap could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_OPEN_TAPS} taps are open on this proxy already; close one and try again")]
pub struct TooManyTaps;

/// An open tap's events, and its place among the open taps: dropping it closes the tap.
pub struct OpenedTap {
    pub events: mpsc::Receiver<Arc<TapEvent>>,
    pub registration: TapRegistration,
}

/// Closes its tap when dropped.
pub struct TapRegistration {
    taps: Arc<Taps>,
    id: u64,
}

impl Drop for TapRegistration {
    fn drop(&mut self) {
        self.taps.close(self.id);
    }
}

/// What a request's arrival told, kept only while a tap is open.
pub struct Captured {
    started_at: SystemTime,
    authority: String,
    path: String,
    request_bytes: Option<u64>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Taps {
    pub fn new(metrics: TapMetrics) -> Self {
        Self {
            open: AtomicUsize::new(0),
            current: ArcSwap::default(),
            edit: Mutex::new(()),
            next_id: AtomicU64::new(0),
            metrics,
        }
    }

    /// Opens a tap for `query`; it stays open until the registration is dropped.
    pub fn open(self: &Arc<Self>, query: &TapQuery) -> Result<OpenedTap, TooManyTaps> {
        let _editing = self.edit.lock();
        let current = self.current.load_full();
        if current.sinks.len() >= MAX_OPEN_TAPS {
            return Err(TooManyTaps);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, events) = mpsc::channel(TAP_QUEUE);
        let sink = Arc::new(Sink {
            id,
            filter: query.filter.clone(),
            limiter: RateLimiter::direct(Quota::per_second(query.max_rps)),
            events: sender,
        });
        let mut sinks = current.sinks.clone();
        sinks.push(sink);
        let mut headers = current.headers.clone();
        for name in &query.headers {
            if !headers.contains(name) {
                headers.push(name.clone());
            }
        }
        self.publish_open(sinks, headers);
        Ok(OpenedTap {
            events,
            registration: TapRegistration {
                taps: self.clone(),
                id,
            },
        })
    }

    fn close(&self, id: u64) {
        let _editing = self.edit.lock();
        let current = self.current.load_full();
        let sinks: Vec<Arc<Sink>> = current
            .sinks
            .iter()
            .filter(|sink| sink.id != id)
            .cloned()
            .collect();
        // Header names are kept until every tap is closed: a shorter list is not worth
        // tracking which tap asked for which name.
        let headers = if sinks.is_empty() {
            Vec::new()
        } else {
            current.headers.clone()
        };
        self.publish_open(sinks, headers);
    }

    fn publish_open(&self, sinks: Vec<Arc<Sink>>, headers: Vec<HeaderName>) {
        let count = sinks.len();
        self.current.store(Arc::new(OpenTaps { sinks, headers }));
        self.open.store(count, Ordering::Relaxed);
        self.metrics
            .open
            .set(i64::try_from(count).expect("at most MAX_OPEN_TAPS"));
    }

    /// What taps need to know of an arriving request, if any tap is open.
    pub fn capture<B: Body>(&self, request: &Request<B>) -> Option<Box<Captured>> {
        if self.open.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let wanted = &self.current.load().headers;
        let headers = request
            .headers()
            .iter()
            .filter(|(name, _)| wanted.contains(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Some(Box::new(Captured {
            started_at: SystemTime::now(),
            authority: crate::telemetry::authority_of(request),
            path: request.uri().path().to_owned(),
            request_bytes: request.body().size_hint().exact(),
            headers,
        }))
    }

    /// `response`, whose body is counted; the finished request is published when the body
    /// ends (or is dropped). `event` holds everything known at the response's head.
    pub fn follow(
        self: &Arc<Self>,
        response: Response<ProxyBody>,
        event: TapEvent,
        started: tokio::time::Instant,
    ) -> Response<ProxyBody> {
        let taps = self.clone();
        response.map(|inner| body::TapBody::wrap(inner, event, started, taps))
    }

    /// Hands a finished request to every open tap whose filter it passes.
    fn publish(&self, event: TapEvent) {
        let current = self.current.load();
        let mut shared = None;
        for sink in &current.sinks {
            if !sink.filter.matches(&event) {
                continue;
            }
            if sink.limiter.check().is_err() {
                self.metrics.dropped("rate_limited");
                continue;
            }
            let event = shared.get_or_insert_with(|| Arc::new(event.clone()));
            if let Err(mpsc::error::TrySendError::Full(_)) = sink.events.try_send(event.clone()) {
                self.metrics.dropped("queue_full");
            }
        }
    }
}

impl Captured {
    /// The event known at the response's head: the body's bytes, the trailers' gRPC
    /// status and the latency are filled in when the body ends.
    pub fn into_event(self, head: EventHead) -> TapEvent {
        TapEvent {
            started_at: self.started_at,
            direction: head.direction,
            service: head.service,
            route: head.route,
            peer: head.peer,
            method: head.method,
            authority: self.authority,
            path: self.path,
            status: head.status,
            grpc_status: head.grpc_status,
            latency: std::time::Duration::ZERO,
            request_bytes: self.request_bytes,
            response_bytes: 0,
            retries: head.retries,
            endpoint: head.endpoint,
            mtls: head.peer_verified,
            headers: self.headers,
        }
    }
}

/// What telemetry knows of a request when its response head is ready.
pub struct EventHead {
    pub direction: crate::metrics::Direction,
    pub service: Arc<str>,
    pub route: Arc<str>,
    pub peer: Option<seam_proto::SpiffeId>,
    /// Whether the peer's identity came from a verified mTLS handshake.
    pub peer_verified: bool,
    pub method: http::Method,
    pub status: u16,
    pub grpc_status: Option<u32>,
    pub retries: u32,
    pub endpoint: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests;
