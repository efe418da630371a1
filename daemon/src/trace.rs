//! Traces: the spans of an event's way through the daemon (event -> run ->
//! step -> delivery), exported over OTLP when nudge is built with the `otel`
//! feature and `[tracing] otlp_endpoint` is set (`export.rs`). The engine and
//! delivery open them as `tracing` spans of the target `nudge::otel`, which
//! only the exporter's layer takes: the log never shows them, and without the
//! exporter they are disabled at their call sites and cost next to nothing.
//!
//! A run's steps and a message's delivery happen later, in other tasks, than
//! the event that started the run: the context they continue is stored with
//! the run and with the outbox row as a W3C `traceparent` (migration 0023),
//! written and read here. It names nothing of the crate, so any layer may trace.

#[cfg(feature = "otel")]
mod export;
#[cfg(feature = "otel")]
pub(crate) use export::{Export, ExportSettings};

/// The `tracing` target of the exported spans; the log leaves it out.
pub(crate) const TARGET: &str = "nudge::otel";

/// The W3C `traceparent` of `span`, to store with what continues it later;
/// None when the span is not exported.
#[cfg(feature = "otel")]
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes the span stored as `traceparent` the parent of `span`, which must
/// not have been used yet (no child, no `traceparent`). A malformed value is
/// left out: `span` then starts a trace of its own.
#[cfg(feature = "otel")]
pub(crate) fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let Some(traceparent) = traceparent.filter(|_| !span.is_disabled()) else {
        return;
    };
    let carrier = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        // Fails only for a span already started, which the callers never pass.
        let _ = span.set_parent(parent);
    }
}

/// Without the `otel` feature nothing is exported, so nothing is carried.
#[cfg(not(feature = "otel"))]
pub(crate) fn traceparent(_span: &tracing::Span) -> Option<String> {
    None
}

/// Without the `otel` feature nothing is exported, so nothing is carried.
#[cfg(not(feature = "otel"))]
pub(crate) fn continue_from(_span: &tracing::Span, _traceparent: Option<&str>) {}
