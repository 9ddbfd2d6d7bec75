//! The per-call context: deadline, metadata, caller and its peer, trace and balancing hints.
//!
//! A client attaches a `Context` to a call with `XClient::with_context`; the server rebuilds one
//! from the request frame and hands it to the handler as `ctx: &Context`. The deadline travels as
//! the *remaining* duration, so the two machines' clocks need not agree. A handler that calls
//! further services passes [`Context::child`] on, which keeps the remaining deadline and the
//! trace but not the metadata.
//!
//! # Deadlines and defaults
//!
//! A context is in one of three states as to its deadline:
//!
//! 1. **Unset** (a new context): no deadline yet. Channels and clients give such a call a
//!    *default* deadline when it enters them (10 s unless configured otherwise; see
//!    `ChannelBuilder::default_timeout` and `ClientBuilder::default_timeout` in
//!    `zrpc-transport`), so that no call waits forever by accident. The context then remembers
//!    whose default it was ([`Context::deadline_origin`]), for error messages.
//! 2. **A deadline**, set by the caller ([`Context::with_timeout`], [`Context::with_deadline`]),
//!    by a layer such as a whole-call timeout, or by a default. No default replaces it, longer
//!    or shorter.
//! 3. **Unbounded** ([`Context::without_deadline`]): no deadline, by the caller's choice, for a
//!    long poll or a watch that may legitimately wait for hours. No default applies. A deadline
//!    set later still applies, so a layer that caps every call (a client's `timeout`, a
//!    [`Timeout`](crate::timeout::Timeout)) still caps this one.
//!
//! The choice of an unbounded call is not sent to the server (the protocol carries only the
//! remaining time), and [`Context::child`] does not carry it either: each call that should wait
//! without limit says so itself, and a handler's downstream calls get defaults as usual.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::compression::Compression;
use crate::durable::{Durable, MessageId};
use crate::identity::Identity;
use crate::metadata::Metadata;
use crate::peer::Peer;
use crate::trace::TraceContext;

/// Per-call information that travels with a request.
///
/// Cloning is cheap when the metadata is small; an empty context does not allocate.
#[derive(Clone, Debug, Default)]
pub struct Context {
    deadline: Deadline,
    metadata: Metadata,
    caller: Option<Arc<str>>,
    /// The end the call came from, on the side that handles it.
    peer: Option<Peer>,
    /// Who that end is, if the server authenticated it.
    identity: Option<Identity>,
    trace: Trace,
    /// `None` until a layer or the caller sets a hint: most calls have none, and every call
    /// moves its context several times (see [`Context`]'s size test).
    hints: Option<Box<Hints>>,
    /// Where the balancer notes its pick, set per attempt by the retry and timeout layers:
    /// outside the hints, so that setting it allocates nothing.
    record: Option<PickRecord>,
    /// One byte: unset (the channel's default), off, or an algorithm.
    compression: Choice,
    /// The durable message this call delivers or handles, if it is one. Boxed: most calls
    /// are not, and every call moves its context.
    durable: Option<Box<Durable>>,
}

/// A call's choice of compression; see [`Context::with_compression`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Choice {
    /// The channel's (or server's) configured compression.
    #[default]
    Unset,
    /// This algorithm, or none.
    Chosen(Option<Compression>),
}

/// A trace context as a [`Context`] keeps it: the trace id in two words, so that the context
/// is aligned to 8 bytes rather than to `u128`'s 16, and the tag shares a word with the flags
/// (32 bytes; `Option<TraceContext>` took 48).
#[derive(Clone, Copy, Debug, Default)]
enum Trace {
    #[default]
    None,
    Some {
        trace_id: [u64; 2],
        span_id: u64,
        flags: u8,
    },
}

impl Trace {
    fn get(self) -> Option<TraceContext> {
        match self {
            Trace::None => None,
            Trace::Some { trace_id: [high, low], span_id, flags } => {
                Some(TraceContext { trace_id: u128::from(high) << 64 | u128::from(low), span_id, flags })
            }
        }
    }
}

impl From<Option<TraceContext>> for Trace {
    fn from(trace: Option<TraceContext>) -> Trace {
        match trace {
            None => Trace::None,
            // The id's two halves: `as` keeps the low 64 bits of each.
            Some(TraceContext { trace_id, span_id, flags }) => {
                Trace::Some { trace_id: [(trace_id >> 64) as u64, trace_id as u64], span_id, flags }
            }
        }
    }
}

/// The hints of a context that has none.
static NO_HINTS: Hints = Hints { hash_key: None, exclude: Vec::new(), pin: None };

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

/// Where a context stands as to its deadline; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Deadline {
    /// No deadline yet: a default may give it one.
    #[default]
    Unset,
    /// No deadline, by the caller's choice: no default applies.
    Unbounded,
    /// A deadline; `origin` names the default that set it, if one did.
    At { at: Instant, origin: Option<&'static str> },
}

impl Deadline {
    /// A deadline the caller (or a layer acting for it) chose.
    fn chosen(at: Option<Instant>) -> Deadline {
        at.map_or(Deadline::Unset, |at| Deadline::At { at, origin: None })
    }
}

impl Context {
    /// An empty context: no deadline, no metadata, no trace.
    pub fn new() -> Context {
        Context::default()
    }

    /// The instant after which the call is abandoned, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline {
            Deadline::At { at, .. } => Some(at),
            Deadline::Unset | Deadline::Unbounded => None,
        }
    }

    /// Time left until the deadline (zero once it has passed), or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Context {
        self.deadline = Deadline::chosen(Some(deadline));
        self
    }

    /// Sets the deadline to `timeout` from now, or keeps an earlier one already set.
    ///
    /// A timeout too long for the clock to say when it ends (`Duration::MAX`, or a peer's
    /// `zrpc-timeout: 99999999999h` at the gateway) is no deadline: the context is then as
    /// [`without_deadline`](Context::without_deadline) leaves it, unless it had a deadline.
    /// (`Instant + Duration` panics past the clock's range; this was reachable from an HTTP
    /// header until 2026-12-01.)
    pub fn with_timeout(mut self, timeout: Duration) -> Context {
        let Some(candidate) = Instant::now().checked_add(timeout) else {
            if self.deadline().is_none() {
                self.deadline = Deadline::Unbounded;
            }
            return self;
        };
        if self.deadline().is_none_or(|d| candidate < d) {
            self.deadline = Deadline::chosen(Some(candidate));
        }
        self
    }

    /// Replaces the deadline. `None` leaves the call without one, open to defaults again.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = Deadline::chosen(deadline);
    }

    /// No deadline, and no default deadline either: the call may wait as long as it takes, as a
    /// long poll or a watch must. Per call, where a client's `default_timeout(None)` opts a whole
    /// client out.
    ///
    /// A deadline set afterwards ([`with_timeout`](Context::with_timeout), a timeout layer that
    /// caps every call) still applies. Neither the server nor [`child`](Context::child) contexts
    /// inherit the choice (see the [module docs](self)).
    ///
    /// # Examples
    ///
    /// ```
    /// use zrpc_core::Context;
    ///
    /// let watch = Context::new().without_deadline();
    /// assert!(watch.is_unbounded());
    /// assert_eq!(watch.deadline(), None);
    /// ```
    pub fn without_deadline(mut self) -> Context {
        self.deadline = Deadline::Unbounded;
        self
    }

    /// Whether the call opted out of deadlines with [`without_deadline`](Context::without_deadline)
    /// and has not been given one since: no default deadline applies to it.
    pub fn is_unbounded(&self) -> bool {
        self.deadline == Deadline::Unbounded
    }

    /// Gives a call that has no deadline, and has not opted out of one, the deadline `timeout`
    /// from now. `origin` says whose default this is, for error messages (`"the channel's
    /// default"`); [`deadline_origin`](Context::deadline_origin) returns it. Returns whether the
    /// default was applied. What channels and clients do as a call enters them.
    pub fn apply_default_timeout(&mut self, timeout: Duration, origin: &'static str) -> bool {
        if self.deadline != Deadline::Unset {
            return false;
        }
        // A default too far away for the clock is no deadline at all.
        let Some(at) = Instant::now().checked_add(timeout) else { return false };
        self.deadline = Deadline::At { at, origin: Some(origin) };
        true
    }

    /// Whose default set the deadline, when a default did (e.g. `"the channel's default"`);
    /// `None` when the caller or a layer acting for it chose the deadline, or there is none.
    pub fn deadline_origin(&self) -> Option<&'static str> {
        match self.deadline {
            Deadline::At { origin, .. } => origin,
            Deadline::Unset | Deadline::Unbounded => None,
        }
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
        match (&self.caller, &self.peer) {
            (Some(caller), _) => caller,
            (None, Some(peer)) => peer.name(),
            (None, None) => "",
        }
    }

    /// Sets the caller's name, which otherwise is the [peer](Context::peer)'s.
    pub fn set_caller(&mut self, caller: Option<Arc<str>>) {
        self.caller = caller;
    }

    /// The end this call came from, to call it back on the same connection (see
    /// [`crate::peer`]): in a handler, the connection's other end; in a context that did not
    /// come over a connection, a [detached](Peer::detached) peer that refuses every call.
    pub fn peer(&self) -> Peer {
        self.peer.clone().unwrap_or_else(Peer::detached)
    }

    /// Whether this call came over a connection, so that [`Context::peer`] can be called.
    pub fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    /// Who the caller is, as the server's authenticator established it when the connection
    /// opened; `None` on a server without one (see [`crate::identity`]).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Sets who the caller is; done by the connection for each request.
    pub fn set_identity(&mut self, identity: Option<Identity>) {
        self.identity = identity;
    }

    /// Sets the end this call came from; done by the connection for each request.
    pub fn set_peer(&mut self, peer: Option<Peer>) {
        self.peer = peer;
    }

    /// The trace this call belongs to, if any.
    pub fn trace(&self) -> Option<TraceContext> {
        self.trace.get()
    }

    /// Sets the trace.
    pub fn with_trace(mut self, trace: TraceContext) -> Context {
        self.set_trace(Some(trace));
        self
    }

    /// Replaces the trace.
    pub fn set_trace(&mut self, trace: Option<TraceContext>) {
        self.trace = Trace::from(trace);
    }

    /// The trace, set to `make()` first if there is none.
    pub fn trace_or_insert_with(&mut self, make: impl FnOnce() -> TraceContext) -> TraceContext {
        match self.trace.get() {
            Some(trace) => trace,
            None => {
                let trace = make();
                self.set_trace(Some(trace));
                trace
            }
        }
    }

    /// The balancing hints.
    pub fn hints(&self) -> &Hints {
        self.hints.as_deref().unwrap_or(&NO_HINTS)
    }

    /// The balancing hints, to change them. The first change allocates them.
    pub fn hints_mut(&mut self) -> &mut Hints {
        self.hints.get_or_insert_default()
    }

    /// Where the balancer notes the endpoint it picked for this attempt, if a layer above it
    /// asked (see [`PickRecord`]).
    pub fn pick_record(&self) -> Option<&PickRecord> {
        self.record.as_ref()
    }

    /// Replaces the record in which the balancer notes its pick.
    pub fn set_pick_record(&mut self, record: Option<PickRecord>) {
        self.record = record;
    }

    /// The pick record, set to a new one first if there is none.
    pub fn pick_record_or_insert(&mut self) -> &PickRecord {
        self.record.get_or_insert_with(PickRecord::new)
    }

    /// Sets the consistent-hash key.
    pub fn with_hash_key(mut self, key: u64) -> Context {
        self.hints_mut().hash_key = Some(key);
        self
    }

    /// Compresses this call's payload with `compression`, or sends it uncompressed with `None`,
    /// whatever the channel is configured with. Unset, the channel's configuration decides.
    ///
    /// The threshold still applies: a payload under the channel's compression threshold, one
    /// that does not shrink, or one for a peer that did not announce the algorithm (or an
    /// algorithm whose feature this build lacks) is sent uncompressed. Not passed on to
    /// [`child`](Context::child) contexts, and not sent to the server: a server answers a
    /// compressed request with the same algorithm.
    ///
    /// # Examples
    ///
    /// ```
    /// use zrpc_core::{Compression, Context};
    ///
    /// let small_and_urgent = Context::new().with_compression(None);
    /// assert_eq!(small_and_urgent.compression(), Some(None));
    /// let bulk = Context::new().with_compression(Some(Compression::Zstd));
    /// assert_eq!(bulk.compression(), Some(Some(Compression::Zstd)));
    /// assert_eq!(Context::new().compression(), None, "unset: the channel decides");
    /// ```
    pub fn with_compression(mut self, compression: Option<Compression>) -> Context {
        self.compression = Choice::Chosen(compression);
        self
    }

    /// The call's own choice of compression: `None` when it made none (the channel's
    /// configuration applies), `Some(None)` for uncompressed, `Some(Some(algorithm))`.
    pub fn compression(&self) -> Option<Option<Compression>> {
        match self.compression {
            Choice::Unset => None,
            Choice::Chosen(choice) => Some(choice),
        }
    }

    /// The stable identity of the durable message this handler runs for, if the call came
    /// from a receiver's inbox (`zrpc_transport::durable`): the same on every run of the
    /// handler for that message, also after a crash inside it, so that a handler can record it
    /// with its effect and skip a message it has already acted on.
    pub fn durable_id(&self) -> Option<&MessageId> {
        self.durable.as_deref().map(|durable| &durable.id)
    }

    /// The durable message this call delivers (sending side) or handles (receiving side); see
    /// [`Durable`].
    pub fn durable(&self) -> Option<&Durable> {
        self.durable.as_deref()
    }

    /// Marks the call as delivering or handling a durable message. Set by an outbox's delivery
    /// task and by an inbox; a connection sends a call so marked only as a durable request,
    /// to a peer that records them.
    pub fn set_durable(&mut self, durable: Option<Durable>) {
        self.durable = durable.map(Box::new);
    }

    /// A context for a downstream call made while handling this one: the same deadline, the
    /// same trace with a new span id; no metadata, caller, peer, identity, hints, choice of
    /// compression or durable message.
    ///
    /// The deadline passes on as the child's own, whoever set it. An unbounded call's child is
    /// not unbounded but unset: defaults apply to it, as they do on the server, which never
    /// learns that its caller opted out (see the [module docs](self)).
    pub fn child(&self) -> Context {
        Context {
            deadline: Deadline::chosen(self.deadline()),
            trace: Trace::from(self.trace().as_ref().map(TraceContext::child)),
            ..Context::default()
        }
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

    #[test]
    fn a_timeout_past_the_clocks_range_is_no_deadline_and_keeps_an_earlier_one() {
        let forever = Context::new().with_timeout(Duration::MAX);
        assert_eq!(forever.deadline(), None);
        assert!(forever.is_unbounded(), "no default deadline applies either");
        let earlier = Context::new().with_timeout(Duration::from_secs(1)).with_timeout(Duration::MAX);
        let left = earlier.remaining().expect("the earlier deadline stays");
        assert!(left <= Duration::from_secs(1), "{left:?}");
        assert!(!earlier.is_unbounded());
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

    #[test]
    fn a_trace_and_hints_come_back_as_they_were_set() {
        let trace = TraceContext { trace_id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, span_id: 7, flags: 0x81 };
        let ctx = Context::new().with_trace(trace);
        assert_eq!(ctx.trace(), Some(trace));
        let mut ctx = ctx;
        ctx.set_trace(None);
        assert_eq!(ctx.trace(), None);
        assert_eq!(ctx.trace_or_insert_with(|| trace), trace);
        assert_eq!(ctx.trace_or_insert_with(TraceContext::new_root), trace, "an existing trace is kept");

        assert_eq!(ctx.hints(), &Hints::default());
        let hashed = ctx.with_hash_key(9);
        assert_eq!(hashed.hints().hash_key, Some(9));
        assert_eq!(hashed.clone().hints().hash_key, Some(9), "a clone keeps its hints");
        assert_eq!(hashed.child().hints(), &Hints::default(), "a child has none");
    }

    #[test]
    fn choosing_compression_costs_no_room_and_is_not_inherited() {
        // Context is moved several times per call, inside every request: the choice takes one
        // byte of what was padding. It was 256 bytes before its trace was kept in words and
        // its hints boxed (184 with the pick record beside them).
        assert!(std::mem::size_of::<Context>() <= 184, "{} bytes", std::mem::size_of::<Context>());
        let ctx = Context::new().with_compression(Some(Compression::Lz4));
        assert_eq!(ctx.compression(), Some(Some(Compression::Lz4)));
        assert_eq!(ctx.clone().with_compression(None).compression(), Some(None));
        assert_eq!(ctx.child().compression(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_default_applies_only_to_a_call_without_a_deadline() {
        let mut unset = Context::new();
        assert!(unset.apply_default_timeout(Duration::from_secs(10), "the test's default"));
        assert_eq!(unset.remaining(), Some(Duration::from_secs(10)));
        assert_eq!(unset.deadline_origin(), Some("the test's default"));
        // A second default does not move the first.
        assert!(!unset.apply_default_timeout(Duration::from_secs(1), "another default"));
        assert_eq!(unset.remaining(), Some(Duration::from_secs(10)));

        // The caller's own deadline stays, longer or shorter than the default.
        let mut patient = Context::new().with_timeout(Duration::from_secs(60));
        assert!(!patient.apply_default_timeout(Duration::from_secs(10), "the test's default"));
        assert_eq!(patient.remaining(), Some(Duration::from_secs(60)));
        assert_eq!(patient.deadline_origin(), None);

        let mut unbounded = Context::new().without_deadline();
        assert!(!unbounded.apply_default_timeout(Duration::from_secs(10), "the test's default"));
        assert_eq!(unbounded.deadline(), None);
        assert!(unbounded.is_unbounded());

        // A default beyond the clock's range is no deadline.
        let mut far = Context::new();
        assert!(!far.apply_default_timeout(Duration::MAX, "the test's default"));
        assert_eq!(far.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_set_after_opting_out_still_applies() {
        let capped = Context::new().without_deadline().with_timeout(Duration::from_secs(2));
        assert_eq!(capped.remaining(), Some(Duration::from_secs(2)));
        assert!(!capped.is_unbounded());

        let mut cleared = Context::new().without_deadline();
        cleared.set_deadline(None);
        assert!(!cleared.is_unbounded(), "set_deadline(None) leaves the call open to defaults");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tighter_deadline_replaces_a_default_and_its_origin() {
        let mut ctx = Context::new();
        ctx.apply_default_timeout(Duration::from_secs(10), "the test's default");
        let kept = ctx.clone().with_timeout(Duration::from_secs(30));
        assert_eq!(
            (kept.remaining(), kept.deadline_origin()),
            (Some(Duration::from_secs(10)), Some("the test's default"))
        );
        let tighter = ctx.with_timeout(Duration::from_secs(1));
        assert_eq!((tighter.remaining(), tighter.deadline_origin()), (Some(Duration::from_secs(1)), None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_keeps_the_deadline_but_not_the_opt_out_or_the_origin() {
        let child = Context::new().without_deadline().child();
        assert!(!child.is_unbounded());
        assert_eq!(child.deadline(), None);

        let mut defaulted = Context::new();
        defaulted.apply_default_timeout(Duration::from_secs(10), "the test's default");
        let child = defaulted.child();
        assert_eq!(child.deadline(), defaulted.deadline());
        assert_eq!(child.deadline_origin(), None);
    }
}
