//! Everything the proxy tells about the requests it handles, behind two calls per
//! request: `Telemetry::begin` when a request arrives (reads the caller's trace context,
//! starts this proxy's span, rewrites the propagation headers to name that span as the
//! parent) and `Telemetry::finish` when its response is ready (golden metrics, span end,
//! access log line). A gRPC response is finished when its trailers carry `grpc-status`.
//!
//! While a tap is open (`crate::tap`), `begin` also captures what taps show and `finish`
//! hands the response to the taps; with none open that costs one atomic load.
//!
//! With no `--otlp-endpoint`, no span is recorded: the proxy only propagates trace
//! context, with span ids of its own so each hop still appears as a parent.

mod access_log;
mod byte_count;
mod export;
pub mod grpc_status;
pub mod trace_context;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use seam_proto::SpiffeId;

use crate::body::ProxyBody;
use crate::metrics::{Direction, Metrics, RequestRecord};
use crate::tap::{Captured, EventHead, Taps};

pub use access_log::AccessLogFormat;
use access_log::{AccessLog, Entry};
pub use byte_count::CountedIo;
use export::SpanExport;
use trace_context::{Propagation, SpanContext};

/// How the proxy's telemetry is set up (from its flags).
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    pub service: String,
    pub propagation: Propagation,
    pub sample_ratio: f64,
    pub otlp_endpoint: Option<String>,
    pub access_log: AccessLogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("cannot start the access log writer")]
    AccessLog(#[source] std::io::Error),
    #[error("--trace-sample-ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
}

/// Which upstream a proxied request went to (outbound; the endpoint of the attempt whose
/// response the app got).
#[derive(Clone, Debug)]
pub struct Upstream {
    pub endpoint: SocketAddr,
    /// None: a plaintext endpoint (no Seam proxy there).
    pub identity: Option<SpiffeId>,
}

/// What the proxy knows about one request between `begin` and `finish`.
pub struct Call {
    direction: Direction,
    started: tokio::time::Instant,
    /// Only for the access log (spans keep their own start).
    start_time: Option<SystemTime>,
    method: Method,
    /// Only when an access log or a span will show it.
    target: Option<RequestTarget>,
    caller: Option<SpiffeId>,
    context: SpanContext,
    /// Boxed: a span is large and only sampled requests have one; every request's
    /// future carries the `Call`.
    span: Option<Box<opentelemetry_sdk::trace::Span>>,
    /// Only while a tap is open.
    tap: Option<Box<Captured>>,
}

/// The authority and path a request named, for the access log and spans.
struct RequestTarget {
    authority: String,
    path: String,
}

impl RequestTarget {
    fn of<B>(request: &Request<B>) -> Self {
        Self {
            authority: authority_of(request),
            path: request.uri().path().to_owned(),
        }
    }
}

/// The authority a request named: its URI's, else its `Host` (for logs, spans and taps).
pub(crate) fn authority_of<B>(request: &Request<B>) -> String {
    request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

impl Call {
    /// The trace this request belongs to, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.context.trace_id_hex()
    }
}

/// What the listener learnt handling a request, for `finish`.
pub struct Handled {
    /// The service label the request is counted under.
    pub service: Arc<str>,
    pub route: Arc<str>,
    pub retries: u32,
    pub upstream: Option<Upstream>,
    /// `x-request-id` as it went on, when [`Telemetry::records_request_ids`].
    pub request_id: Option<HeaderValue>,
}

/// How a request ended, for the metrics, the span and the access log.
struct Done {
    handled: Handled,
    status: u16,
    /// Whether the response is gRPC (whose status is then `grpc_status`, or unknown).
    grpc: bool,
    grpc_status: Option<u32>,
}

pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    propagation: Propagation,
    sample_ratio: f64,
    export: Option<SpanExport>,
    access_log: Option<AccessLog>,
    /// The taps open on the admin listener.
    pub taps: Arc<Taps>,
}

impl Telemetry {
    /// Sets up export and the access log as configured; must run inside the runtime.
    pub fn start(config: &TelemetryConfig, metrics: Arc<Metrics>) -> Result<Self, TelemetryError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TelemetryError::SampleRatio(config.sample_ratio));
        }
        let export = match &config.otlp_endpoint {
            Some(endpoint) => Some(SpanExport::start(endpoint, &config.service)?),
            None => None,
        };
        let access_log = match config.access_log {
            AccessLogFormat::Off => None,
            AccessLogFormat::Json => Some(
                AccessLog::start(metrics.access_log_dropped.clone())
                    .map_err(TelemetryError::AccessLog)?,
            ),
        };
        Ok(Self {
            taps: Arc::new(Taps::new(metrics.tap.clone())),
            metrics,
            propagation: config.propagation,
            sample_ratio: config.sample_ratio,
            export,
            access_log,
        })
    }

    /// Whether an access log or spans show request ids (so the listeners keep them).
    pub fn records_request_ids(&self) -> bool {
        self.access_log.is_some() || self.export.is_some()
    }

    /// The `x-request-id` of `headers` for [`Handled::request_id`], when recorded.
    pub fn request_id_of(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.records_request_ids() {
            headers.get(&crate::request_id::HEADER).cloned()
        } else {
            None
        }
    }

    /// Starts a request's telemetry and rewrites its trace headers for the next hop.
    /// `caller` is the peer's mesh identity, inbound.
    pub fn begin<B: hyper::body::Body>(
        &self,
        direction: Direction,
        request: &mut Request<B>,
        caller: Option<&SpiffeId>,
    ) -> Call {
        let incoming = trace_context::extract(request.headers(), self.propagation);
        // The caller's trace, or a new one.
        let trace_id = incoming
            .as_ref()
            .map_or_else(|| nonzero(rand::random::<u128>), |parent| parent.trace_id);
        let sampled = trace_context::sample(incoming.as_ref(), trace_id, self.sample_ratio);
        let tracestate = incoming
            .as_ref()
            .and_then(|parent| parent.tracestate.clone());
        let method = request.method().clone();
        let (context, span) = match &self.export {
            Some(export) if sampled => {
                let span = start_span(
                    export,
                    direction,
                    &method,
                    SystemTime::now(),
                    incoming.as_ref(),
                );
                let ids = span.span_context();
                let context = SpanContext {
                    trace_id: u128::from_be_bytes(ids.trace_id().to_bytes()),
                    span_id: u64::from_be_bytes(ids.span_id().to_bytes()),
                    sampled: Some(true),
                    tracestate,
                };
                (context, Some(Box::new(span)))
            }
            _ => {
                let context = SpanContext {
                    trace_id,
                    span_id: nonzero(rand::random::<u64>),
                    sampled: Some(sampled),
                    tracestate,
                };
                (context, None)
            }
        };
        trace_context::inject(request.headers_mut(), self.propagation, &context);
        let tap = self.taps.capture(request);
        let target =
            (span.is_some() || self.access_log.is_some()).then(|| RequestTarget::of(request));
        Call {
            direction,
            started: tokio::time::Instant::now(),
            start_time: self.access_log.is_some().then(SystemTime::now),
            method,
            target,
            caller: caller.cloned(),
            context,
            span,
            tap,
        }
    }

    /// Records the request once its outcome is known: now, or for a gRPC response whose
    /// status comes in trailers, when the body ends.
    pub fn finish(
        self: &Arc<Self>,
        mut call: Call,
        handled: Handled,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let grpc = grpc_status::is_grpc(response.headers());
        let done = Done {
            handled,
            status: response.status().as_u16(),
            grpc,
            // A trailers-only gRPC response has its status in the headers.
            grpc_status: grpc
                .then(|| grpc_status::from_headers(response.headers()))
                .flatten(),
        };
        let tapped = call.tap.take().map(|captured| {
            let event = captured.into_event(event_head(&call, &done));
            (event, call.started)
        });
        let response = self.record_when_done(call, done, grpc, response);
        match tapped {
            Some((event, started)) => self.taps.follow(response, event, started),
            None => response,
        }
    }

    /// Records the request now, or at its gRPC trailers.
    fn record_when_done(
        self: &Arc<Self>,
        call: Call,
        done: Done,
        grpc: bool,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        if grpc && done.grpc_status.is_none() {
            let telemetry = self.clone();
            response.map(|body| {
                grpc_status::on_trailers(body, move |grpc_status| {
                    telemetry.record(
                        call,
                        Done {
                            grpc_status,
                            ..done
                        },
                    );
                })
            })
        } else {
            self.record(call, done);
            response
        }
    }

    fn record(&self, mut call: Call, done: Done) {
        let elapsed = call.started.elapsed();
        let peer = match call.direction {
            Direction::Inbound => call.caller.as_ref(),
            Direction::Outbound => done
                .handled
                .upstream
                .as_ref()
                .and_then(|up| up.identity.as_ref()),
        }
        .map(SpiffeId::shared);
        self.metrics.record_request(&RequestRecord {
            direction: call.direction,
            service: &done.handled.service,
            route: &done.handled.route,
            status: done.status,
            grpc: done.grpc,
            grpc_status: done.grpc_status,
            // The peer's identity came from mTLS; plaintext callers and requests that
            // never left have none.
            tls: peer.is_some(),
            peer: peer.as_ref(),
            elapsed,
        });
        let target = call.target.take().unwrap_or(RequestTarget {
            authority: String::new(),
            path: String::new(),
        });
        let request_id = done
            .handled
            .request_id
            .as_ref()
            .and_then(|id| id.to_str().ok());
        if let (Some(log), Some(start_time)) = (&self.access_log, call.start_time) {
            log.write(&Entry {
                time: humantime::format_rfc3339_millis(start_time).to_string(),
                direction: call.direction.as_str(),
                service: &done.handled.service,
                trace_id: call.trace_id(),
                request_id,
                method: call.method.as_str(),
                authority: &target.authority,
                path: &target.path,
                status: done.status,
                grpc_status: done.grpc_status,
                duration_seconds: elapsed.as_secs_f64(),
                upstream: done
                    .handled
                    .upstream
                    .as_ref()
                    .map(|up| up.endpoint.to_string()),
                peer_identity: peer.as_deref(),
                tls: peer.is_some(),
                retries: done.handled.retries,
            });
        }
        if let Some(mut span) = call.span {
            let mut attributes = vec![
                KeyValue::new("http.request.method", call.method.as_str().to_owned()),
                KeyValue::new("http.route", done.handled.route.to_string()),
                KeyValue::new("http.response.status_code", i64::from(done.status)),
                KeyValue::new("url.path", target.path),
                KeyValue::new("server.address", target.authority),
                KeyValue::new("seam.service", done.handled.service.to_string()),
                KeyValue::new("seam.direction", call.direction.as_str()),
                KeyValue::new("seam.retries", i64::from(done.handled.retries)),
            ];
            if let Some(id) = request_id {
                attributes.push(KeyValue::new("seam.request_id", id.to_owned()));
            }
            if let Some(peer) = peer {
                attributes.push(KeyValue::new("seam.peer.identity", peer.to_string()));
            }
            if let Some(upstream) = &done.handled.upstream {
                attributes.push(KeyValue::new(
                    "network.peer.address",
                    upstream.endpoint.ip().to_string(),
                ));
                attributes.push(KeyValue::new(
                    "network.peer.port",
                    i64::from(upstream.endpoint.port()),
                ));
            }
            if let Some(code) = done.grpc_status {
                attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            }
            span.set_attributes(attributes);
            // Semantic conventions: 5xx is an error on both sides, 4xx only for a client.
            let error_from = match call.direction {
                Direction::Inbound => 500,
                Direction::Outbound => 400,
            };
            if done.status >= error_from {
                span.set_status(Status::error(format!("HTTP {}", done.status)));
            }
            span.end();
        }
    }

    /// Flushes queued spans (bounded in time) when the proxy stops.
    pub async fn shutdown(&self) {
        if let Some(export) = &self.export {
            export.shutdown().await;
        }
    }
}

fn start_span(
    export: &SpanExport,
    direction: Direction,
    method: &Method,
    start_time: SystemTime,
    parent: Option<&SpanContext>,
) -> opentelemetry_sdk::trace::Span {
    let parent_cx = match parent {
        Some(parent) => {
            Context::new().with_remote_span_context(opentelemetry::trace::SpanContext::new(
                TraceId::from_bytes(parent.trace_id.to_be_bytes()),
                opentelemetry::trace::SpanId::from_bytes(parent.span_id.to_be_bytes()),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
        }
        None => Context::new(),
    };
    let kind = match direction {
        Direction::Inbound => SpanKind::Server,
        Direction::Outbound => SpanKind::Client,
    };
    let builder = export
        .tracer
        .span_builder(method.as_str().to_owned())
        .with_kind(kind)
        .with_start_time(start_time);
    export.tracer.build_with_context(builder, &parent_cx)
}

/// What taps are told of a request at its response's head.
fn event_head(call: &Call, done: &Done) -> EventHead {
    let upstream = done.handled.upstream.as_ref();
    let peer = match call.direction {
        Direction::Inbound => call.caller.clone(),
        Direction::Outbound => upstream.and_then(|up| up.identity.clone()),
    };
    EventHead {
        direction: call.direction,
        service: done.handled.service.clone(),
        route: done.handled.route.clone(),
        // As in the metrics: a peer identity is known only from mTLS.
        peer_verified: peer.is_some(),
        peer,
        method: call.method.clone(),
        status: done.status,
        grpc_status: done.grpc_status,
        retries: done.handled.retries,
        endpoint: upstream.map(|up| up.endpoint),
    }
}

/// A random id that is not all zeros (an all-zero id means "none" on the wire).
fn nonzero<T: PartialEq + From<u8>>(random: impl Fn() -> T) -> T {
    loop {
        let id = random();
        if id != T::from(0) {
            return id;
        }
    }
}
