//! Span export over OTLP/gRPC (`--otlp-endpoint`): a batch processor with a bounded queue
//! in front of the `opentelemetry-otlp` tonic exporter. Ending a span only queues it; the
//! processor's own thread sends batches, and drops spans when the queue is full, so a slow
//! or absent collector never slows or fails a request. Sampling is decided before a span
//! is started (see `trace_context::sample`), so the SDK records every span it is given.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

/// Spans waiting for export beyond this many are dropped.
const MAX_QUEUED_SPANS: usize = 4096;
/// How often a partial batch goes out.
const EXPORT_DELAY: Duration = Duration::from_millis(500);
/// One export call gives up after this long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "--otlp-endpoint {0:?} must be an http:// URL (OTLP over TLS is not built in; \
         send to a collector beside the proxy)"
    )]
    Scheme(String),
    #[error("--otlp-endpoint {endpoint:?} is not usable")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The span pipeline of a proxy whose spans go to `endpoint`.
pub struct SpanExport {
    provider: SdkTracerProvider,
    pub tracer: SdkTracer,
}

impl SpanExport {
    /// Must run inside the tokio runtime: the gRPC channel's worker is spawned on it.
    pub fn start(endpoint: &str, service: &str) -> Result<Self, ExportError> {
        if !endpoint.starts_with("http://") {
            return Err(ExportError::Scheme(endpoint.to_owned()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| ExportError::Exporter {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("seam-proxy");
        Ok(Self { provider, tracer })
    }

    /// Sends what is queued and stops the processor, waiting at most `EXPORT_TIMEOUT`.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(EXPORT_TIMEOUT));
        match tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                tracing::warn!(error = %err, "span export did not shut down cleanly")
            }
            Ok(Err(_)) | Err(_) => tracing::warn!("span export did not shut down in time"),
        }
    }
}
