//! A real OTLP/gRPC trace receiver for tests, built on the official OTLP proto types
//! (`opentelemetry-proto`'s generated `TraceService` server): it keeps every span it is
//! sent, flattened with the `service.name` of the resource that sent it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::wait;

/// One received span, with the ids as lowercase hex.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub kind: SpanKind,
    /// String and integer attributes, as strings.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
}

/// The gRPC service: appends what it is sent to the shared list.
struct Sink(Arc<Collected>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .map(any_value_text)
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        attributes: span
                            .attributes
                            .iter()
                            .filter_map(|attribute| {
                                Some((
                                    attribute.key.clone(),
                                    any_value_text(attribute.value.as_ref()?),
                                ))
                            })
                            .collect(),
                    });
                }
            }
        }
        self.0.spans.lock().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn any_value_text(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// An OTLP/gRPC receiver on `127.0.0.1:0`. Dropping it stops the server.
pub struct OtlpReceiver {
    addr: SocketAddr,
    collected: Arc<Collected>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let collected = Arc::new(Collected::default());
        let service = TraceServiceServer::new(Sink(collected.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(Self {
            addr,
            collected,
            server,
        })
    }

    /// The `--otlp-endpoint` value that reaches this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected.spans.lock().clone()
    }

    /// Waits until the spans of `trace_id` number at least `count`, and returns them.
    pub async fn wait_trace(
        &self,
        trace_id: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        wait::until(
            &format!("{count} spans of trace {trace_id} arrive"),
            timeout,
            || async {
                let spans: Vec<ReceivedSpan> = self
                    .spans()
                    .into_iter()
                    .filter(|span| span.trace_id == trace_id)
                    .collect();
                anyhow::ensure!(
                    spans.len() >= count,
                    "{} so far; all received: {:?}",
                    spans.len(),
                    self.spans()
                );
                Ok(spans)
            },
        )
        .await
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
