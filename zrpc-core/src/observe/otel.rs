//! Joining the spans into OpenTelemetry traces across processes (feature `opentelemetry`): with
//! `tracing-opentelemetry`'s layer installed, a client sends its span's OpenTelemetry ids as the
//! call's trace context, and a server makes that the remote parent of its span, so that the
//! exporter sees one trace across both processes.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::TraceContext;

/// The OpenTelemetry ids of `span`, if an OpenTelemetry layer records it.
pub(super) fn ids(span: &Span) -> Option<TraceContext> {
    let cx = span.context();
    let otel = cx.span();
    let ids = otel.span_context();
    ids.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(ids.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(ids.span_id().to_bytes()),
        flags: ids.trace_flags().to_u8(),
    })
}

/// Makes the caller's span, named by `caller`, the remote parent of `span`.
pub(super) fn set_remote_parent(span: &Span, caller: &TraceContext) {
    let remote = SpanContext::new(
        TraceId::from_bytes(caller.trace_id.to_be_bytes()),
        SpanId::from_bytes(caller.span_id.to_be_bytes()),
        TraceFlags::new(caller.flags),
        true,
        TraceState::default(),
    );
    // Fails only when no OpenTelemetry layer records the span: nothing to join then.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}
