//! The per-call context: deadline, metadata, caller name, trace and balancing hints.
//!
//! A client attaches a `Context` to a call with `XClient::with_context`; the server rebuilds one
//! from the request frame and hands it to the handler as `ctx: &Context`. The deadline travels as
//! the *remaining* duration, so the two machines' clocks need not agree. A handler that calls
//! further services passes [`Context::child`] on, which keeps the remaining deadline and the
//! trace but not the metadata.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::metadata::Metadata;
use crate::trace::TraceContext;

/// Per-call information that travels with a request.
///
/// Cloning is cheap when the metadata is small; an empty context does not allocate.
#[derive(Clone, Debug, Default)]
pub struct Context {
    deadline: Option<Instant>,
    metadata: Metadata,
    caller: Option<Arc<str>>,
    trace: Option<TraceContext>,
    hints: Hints,
}

/// Hints for the balancing and retry layers: which endpoint a call should prefer or avoid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hints {
    /// Key for consistent-hash balancing; calls with the same key go to the same endpoint.
    pub hash_key: Option<u64>,
    /// Endpoints (by address) not to pick for this call.
    pub exclude: Vec<Arc<str>>,
    /// The endpoint (by address) to send this call to, if it is available.
    pub pin: Option<Arc<str>>,
    /// Where the balancer notes the endpoint it picked, for the retry layer above it.
    pub record: Option<PickRecord>,
}

/// A slot in which a balancer notes the address it picked for one attempt, so that the retry
/// layer above it knows where the attempt went while it is still in flight (a backup request
/// must go elsewhere; a failover must not revisit it).
#[derive(Clone, Debug, Default)]
pub struct PickRecord(Arc<OnceLock<Arc<str>>>);

impl PickRecord {
    /// An empty record.
    pub fn new() -> PickRecord {
        PickRecord::default()
    }

    /// Notes the picked address; later calls are ignored (one attempt, one pick).
    pub fn set(&self, address: Arc<str>) {
        let _ = self.0.set(address);
    }

    /// The picked address, once a balancer has picked.
    pub fn get(&self) -> Option<&Arc<str>> {
        self.0.get()
    }
}

impl PartialEq for PickRecord {
    /// Records are equal when they are the same slot.
    fn eq(&self, other: &PickRecord) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PickRecord {}

impl Context {
    /// An empty context: no deadline, no metadata, no trace.
    pub fn new() -> Context {
        Context::default()
    }

    /// The instant after which the call is abandoned, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it has passed), or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Context {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline to `timeout` from now, or keeps an earlier one already set.
    pub fn with_timeout(mut self, timeout: Duration) -> Context {
        let candidate = Instant::now() + timeout;
        self.deadline = Some(self.deadline.map_or(candidate, |d| d.min(candidate)));
        self
    }

    /// Replaces the deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The call's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The call's metadata, to add entries.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds a metadata entry.
    pub fn with_metadata(
        mut self,
        key: impl Into<std::borrow::Cow<'static, str>>,
        value: impl Into<bytes::Bytes>,
    ) -> Context {
        self.metadata.insert(key, value);
        self
    }

    /// The calling endpoint's name as it announced itself when connecting, or `""` when the
    /// call did not come over a connection.
    pub fn caller(&self) -> &str {
        self.caller.as_deref().unwrap_or("")
    }

    /// Sets the caller's name; done by the server for each request.
    pub fn set_caller(&mut self, caller: Option<Arc<str>>) {
        self.caller = caller;
    }

    /// The trace this call belongs to, if any.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// Sets the trace.
    pub fn with_trace(mut self, trace: TraceContext) -> Context {
        self.trace = Some(trace);
        self
    }

    /// Replaces the trace.
    pub fn set_trace(&mut self, trace: Option<TraceContext>) {
        self.trace = trace;
    }

    /// The balancing hints.
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// The balancing hints, to change them.
    pub fn hints_mut(&mut self) -> &mut Hints {
        &mut self.hints
    }

    /// Sets the consistent-hash key.
    pub fn with_hash_key(mut self, key: u64) -> Context {
        self.hints.hash_key = Some(key);
        self
    }

    /// A context for a downstream call made while handling this one: the same deadline, the
    /// same trace with a new span id; no metadata, caller or hints.
    pub fn child(&self) -> Context {
        Context { deadline: self.deadline, trace: self.trace.as_ref().map(TraceContext::child), ..Context::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timeout_keeps_the_earlier_deadline() {
        let ctx = Context::new().with_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(5));
        assert_eq!(ctx.remaining(), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn child_keeps_deadline_and_trace_but_not_metadata() {
        let trace = TraceContext::new_root();
        let mut parent =
            Context::new().with_timeout(Duration::from_millis(300)).with_trace(trace).with_metadata("k", "v");
        parent.set_caller(Some("upstream".into()));
        let child = parent.child();
        assert_eq!(child.deadline(), parent.deadline());
        assert_eq!(child.trace().map(|t| t.trace_id), Some(trace.trace_id));
        assert_ne!(child.trace().map(|t| t.span_id), Some(trace.span_id));
        assert!(child.metadata().is_empty());
        assert_eq!(child.caller(), "");
    }
}
