//! The OTLP exporter of the `otel` feature: spans are queued in memory (a
//! bounded queue) and sent in batches by the SDK's own thread over OTLP/HTTP
//! (protobuf, reqwest's blocking client), off the daemon's runtime. A
//! collector that is down or slow never holds up the engine or delivery: the
//! queue fills and further spans are dropped, which the SDK counts and logs
//! (a warning at the first drop, the total at shutdown). Shutdown flushes.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The longest shutdown waits for the last spans to reach the collector.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// Where spans go and how they wait on the way.
pub(crate) struct ExportSettings {
    /// The full URL spans are posted to; None: the one the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` give.
    pub(crate) endpoint: Option<String>,
    pub(crate) service_name: String,
    /// Spans waiting for export at most; more are dropped.
    pub(crate) queue_size: usize,
    /// How long one export may take.
    pub(crate) timeout: Duration,
}

/// The running exporter: its layer goes into the subscriber, and `shutdown`
/// flushes what is queued.
pub(crate) struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Starts the exporter. Must run outside the async runtime: the blocking
    /// HTTP client has a runtime of its own.
    pub(crate) fn start(settings: ExportSettings) -> anyhow::Result<Export> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(settings.timeout);
        if let Some(endpoint) = &settings.endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter.build().context("start the OTLP trace exporter")?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue_size)
            .with_max_export_batch_size(settings.queue_size.min(512))
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let resource = Resource::builder().with_service_name(settings.service_name).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        Ok(Export { provider })
    }

    /// The layer that turns the spans of `nudge::otel` (and nothing else: no
    /// log line, so no message content or address) into exported spans.
    pub(crate) fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("nudge");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(Targets::new().with_target(super::TARGET, tracing::Level::INFO))
    }

    /// Sends what is queued and stops; a collector that does not answer is
    /// given `FLUSH_AT_SHUTDOWN`. Outside the async runtime.
    pub(crate) fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_AT_SHUTDOWN) {
            tracing::warn!("traces: the last spans may not have reached the collector: {e}");
        }
    }
}
