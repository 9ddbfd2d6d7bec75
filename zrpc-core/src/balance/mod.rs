//! Load balancing: choosing which endpoint a call goes to.
//!
//! A balancer is a [`Pick`]: given the endpoints the client knows, as a slice of
//! [`EndpointView`]s, and a [`PickContext`] made from the call, it returns the index of the
//! endpoint to use. Pickers do no I/O and own no connections; the balancing layer reads the live
//! state of its endpoints into views, asks the picker, and sends the call. That keeps every
//! algorithm here deterministic under a seed and testable without sockets.
//!
//! | balancer | chooses | state | a pick under [`Balance`] reads |
//! |---|---|---|---|
//! | [`P2c`] (default) | the cheaper of two random endpoints, cost = (in-flight + 1) × latency EWMA ÷ weight | none | 2 endpoints |
//! | [`LeastActive`] | the fewest calls in flight; ties by weighted random | none | up to [`LeastActive::DRAWN`] (16) drawn at random |
//! | [`Random`] | at random, in proportion to weight | none | 1 endpoint (a binary search of the weights) |
//! | [`RoundRobin`] | each endpoint in turn, ignoring weight | one atomic counter | 1 endpoint |
//! | [`WeightedRoundRobin`] | in turn, in proportion to weight, interleaved (smooth, as nginx) | a current weight per group of endpoints of equal weight, under a `Mutex` | 1 endpoint (a pass over the distinct weights) |
//! | [`ConsistentHash`] | the owner of the call's key on a ring of virtual nodes | the ring, rebuilt when the set changes, and the ring of the ready endpoints, derived from it when the ready set changes | 1 endpoint (a binary search of the ready ring), however many are down |
//!
//! The last column is what makes a balancer cost the same at 2,000 endpoints as at 2: a picker
//! [draws](Pick::draw) the endpoints it needs from a [`ReadySet`] of those last found eligible,
//! and only those are read. [`WeightedRoundRobin`] moves every endpoint's current weight on
//! every pick, as nginx does, but endpoints of equal weight move together: it keeps one current
//! weight per weight, so a pick costs the number of distinct weights (a handful), not of
//! endpoints.
//!
//! # The contract every picker keeps
//!
//! 1. An endpoint is *eligible* when it is available and its weight is not zero
//!    ([`EndpointView::is_eligible`]). Only eligible endpoints are chosen; weight 0 drains an
//!    endpoint under every balancer, not only the weighted ones.
//! 2. When no endpoint is eligible, the pick fails with [`Code::Unavailable`](crate::Code) and a
//!    message saying why: `no endpoints to pick from`, `all 3 endpoints are unavailable`,
//!    `every endpoint has weight 0`, or a count of each when both reasons apply. No input
//!    panics.
//! 3. A pinned address ([`Hints::pin`]) is chosen when it is present and eligible, whatever the
//!    exclusions; otherwise the pin is ignored and the pick proceeds normally.
//! 4. Excluded addresses ([`Hints::exclude`]: the endpoints a retry already tried) are skipped
//!    while an eligible endpoint that is not excluded remains. When every eligible endpoint is
//!    excluded the picker chooses among the excluded ones, by its usual rule: a retry may revisit
//!    an endpoint rather than fail for want of a fresh one.
//! 5. The returned index is below `endpoints.len()`.
//!
//! [`Candidates`] implements points 1 to 4, so a custom picker only decides among the endpoints it
//! is handed; see [`Pick`] for an example.
//!
//! # Endpoint sets that change
//!
//! Pickers identify endpoints by address, never by their index in an earlier slice. The layer
//! calls [`Pick::update`] when discovery changes the set, so stateful pickers can rebuild off the
//! hot path; a picker handed a set it has not seen rebuilds then, so a missing `update` costs time,
//! never correctness.

/// Whether an endpoint's service can take calls now, as the balancing layer asks before each
/// pick: a connection that is down and backing off, or a circuit breaker that is open, says no,
/// and the endpoint is not picked.
///
/// Layers that wrap an endpoint's service pass the question on to what they wrap and add their
/// own answer (a breaker: `!self.is_open() && self.inner.is_available()`).
pub trait Available {
    /// `true` when a call sent now has a chance of being processed.
    fn is_available(&self) -> bool;

    /// A number that changes whenever the endpoint's connection is made anew, so that what was
    /// learnt about the old one (its latency) is forgotten. Constant by default.
    fn generation(&self) -> u64 {
        0
    }

    /// `true` while nothing is known of the endpoint yet: it has never connected, and its first
    /// attempt has not failed either. The balancing layer sends calls to such an endpoint only
    /// when no endpoint is known to be up, so that an address nobody listens on (a stale
    /// registry entry) fails a [`probe`](Available::probe), not a caller's call. `false` by
    /// default: a service that does not connect is as good as proven.
    fn is_unproven(&self) -> bool {
        false
    }

    /// Starts finding out, in the background and without a call, whether the endpoint is up
    /// (a connection attempt), and returns a future that resolves once the answer is in
    /// (connected, or failed): the balancing layer probes every endpoint discovery reports, as
    /// it arrives, and takes one that connected into the draw as soon as it resolves. `None`,
    /// the default, when there is nothing to find out.
    fn probe(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// Either of two services, as `tower::util::Either` chooses one (an optional layer).
impl<A: Available, B: Available> Available for tower::util::Either<A, B> {
    fn is_available(&self) -> bool {
        match self {
            tower::util::Either::Left(a) => a.is_available(),
            tower::util::Either::Right(b) => b.is_available(),
        }
    }

    fn generation(&self) -> u64 {
        match self {
            tower::util::Either::Left(a) => a.generation(),
            tower::util::Either::Right(b) => b.generation(),
        }
    }

    fn is_unproven(&self) -> bool {
        match self {
            tower::util::Either::Left(a) => a.is_unproven(),
            tower::util::Either::Right(b) => b.is_unproven(),
        }
    }

    fn probe(&self) -> Option<BoxFuture<'static, ()>> {
        match self {
            tower::util::Either::Left(a) => a.probe(),
            tower::util::Either::Right(b) => b.probe(),
        }
    }
}

mod consistent_hash;
mod endpoint;
mod least_active;
mod p2c;
mod random;
mod ready;
mod rng;
mod round_robin;
mod service;
mod weighted_round_robin;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use consistent_hash::ConsistentHash;
pub use endpoint::EndpointView;
pub use least_active::LeastActive;
pub use p2c::P2c;
pub use random::Random;
pub use ready::{Drawn, ReadySet};
pub use round_robin::RoundRobin;
pub use service::{Balance, Connect, EndpointSnapshot, LATENCY_DECAY, READY_REFRESH, ResponseFuture};
pub use weighted_round_robin::WeightedRoundRobin;

use crate::context::Hints;
use crate::request::Request;
use crate::status::Status;
/// How many endpoints a pick keeps on the stack (drawn positions, their views): the most any
/// built-in picker draws ([`LeastActive::DRAWN`]) and a usual cluster's size, so that a pick
/// allocates nothing (`benches/tests/allocations.rs`).
pub(crate) const ON_STACK: usize = 16;

/// For other modules' tests that want a seeded, repeatable sequence.
#[cfg(test)]
pub(crate) use rng::SharedRng;
pub(crate) use rng::mix64;

/// A load-balancing policy: picks one endpoint for a call.
///
/// The trait is object safe, so a client can hold any policy as `Box<dyn Pick>` or
/// `Arc<dyn Pick>`, both of which implement it too. `pick` takes `&self` and may be called from
/// many threads at once: state lives behind atomics or locks.
///
/// # Examples
///
/// A custom picker that prefers endpoints in the local zone and otherwise takes the first one;
/// [`Candidates`] takes care of availability, weights, the pin and exclusions.
///
/// ```
/// use zrpc_core::Status;
/// use zrpc_core::balance::{Candidates, EndpointView, Pick, PickContext};
///
/// #[derive(Debug)]
/// struct SameZone(&'static str);
///
/// impl Pick for SameZone {
///     fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
///         let candidates = Candidates::new(endpoints, ctx)?;
///         if let Some(pinned) = candidates.pinned() {
///             return Ok(pinned);
///         }
///         let local = candidates.iter().find(|&i| endpoints[i].address.starts_with(self.0));
///         Ok(local.unwrap_or(candidates.first()))
///     }
/// }
///
/// let endpoints = [EndpointView::new("10.1.0.1:7070"), EndpointView::new("10.2.0.1:7070")];
/// let picker: Box<dyn Pick> = Box::new(SameZone("10.2."));
/// assert_eq!(picker.pick(&endpoints, &PickContext::new()), Ok(1));
/// ```
pub trait Pick: fmt::Debug + Send + Sync + 'static {
    /// The index into `endpoints` of the endpoint to send the call to.
    ///
    /// # Errors
    ///
    /// [`Code::Unavailable`](crate::Code::Unavailable) when no endpoint is eligible: the slice is
    /// empty, or every endpoint is unavailable or has weight 0. The message says which.
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status>;

    /// Called by the layer when the endpoint set or a weight changes, before the next `pick` sees
    /// it; stateful pickers rebuild here. The default does nothing.
    fn update(&self, endpoints: &[EndpointView<'_>]) {
        let _ = endpoints;
    }

    /// Draws, from the endpoints the layer last found eligible, the few this pick needs to
    /// see, and returns `true`; the layer then reads the live state (calls in flight, latency)
    /// of just those and hands their views, in the order drawn, to [`pick`](Pick::pick). When
    /// one endpoint is drawn and is still eligible, it is the pick and `pick` is not called.
    /// A draw costs O(1) or O(log n), so a pick costs the same for 2 endpoints and for 2,000.
    ///
    /// A draw leaves out the endpoints `ctx` excludes; when it draws nothing (every one
    /// excluded) or what it drew went down meanwhile, the layer falls back to handing `pick`
    /// the whole set, as it does for a pinned call. The default draws nothing and returns
    /// `false`: every pick sees every endpoint.
    ///
    /// # Examples
    ///
    /// A picker that sends each call to the first endpoint in its set that is not excluded,
    /// without reading the others:
    ///
    /// ```
    /// use zrpc_core::Status;
    /// use zrpc_core::balance::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
    ///
    /// #[derive(Debug)]
    /// struct First;
    ///
    /// impl Pick for First {
    ///     fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
    ///         let candidates = Candidates::new(endpoints, ctx)?;
    ///         Ok(candidates.pinned().unwrap_or(candidates.first()))
    ///     }
    ///
    ///     fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
    ///         if let Some(first) = (0..ready.len()).find(|&p| !ctx.is_excluded(ready.address(p))) {
    ///             drawn.push(first);
    ///         }
    ///         true
    ///     }
    /// }
    ///
    /// let endpoints = [EndpointView::new("a").with_available(false), EndpointView::new("b")];
    /// let mut drawn = Drawn::new();
    /// assert!(First.draw(&ReadySet::new(&endpoints), &PickContext::new(), &mut drawn));
    /// assert_eq!(drawn.positions(), [0], "position 0 of the eligible ones: b");
    /// ```
    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        let _ = (ready, ctx, drawn);
        false
    }
}

impl<P: Pick + ?Sized> Pick for Box<P> {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        (**self).pick(endpoints, ctx)
    }

    fn update(&self, endpoints: &[EndpointView<'_>]) {
        (**self).update(endpoints);
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        (**self).draw(ready, ctx, drawn)
    }
}

impl<P: Pick + ?Sized> Pick for Arc<P> {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        (**self).pick(endpoints, ctx)
    }

    fn update(&self, endpoints: &[EndpointView<'_>]) {
        (**self).update(endpoints);
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        (**self).draw(ready, ctx, drawn)
    }
}

/// What a picker knows about the call: the balancing hints, and the method and payload from
/// which [`ConsistentHash`] derives a key when the caller set none.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use zrpc_core::balance::PickContext;
///
/// let tried: [Arc<str>; 1] = ["10.0.0.1:7070".into()];
/// let ctx = PickContext::new().with_exclude(&tried).with_hash_key(42);
/// assert!(ctx.is_excluded("10.0.0.1:7070"));
/// assert_eq!(ctx.key(), 42);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PickContext<'a> {
    hash_key: Option<u64>,
    exclude: &'a [Arc<str>],
    pin: Option<&'a str>,
    method: &'a str,
    payload: &'a [u8],
}

impl<'a> PickContext<'a> {
    /// A context without hints, method or payload.
    pub const fn new() -> PickContext<'a> {
        PickContext { hash_key: None, exclude: &[], pin: None, method: "", payload: &[] }
    }

    /// The context for `request`: the hints of its [`Context`](crate::Context), its method and
    /// its payload.
    pub fn for_request(request: &'a Request) -> PickContext<'a> {
        PickContext::new().with_hints(request.ctx().hints()).with_call(request.method().as_str(), request.payload())
    }

    /// Takes the hash key, exclusions and pin from `hints`.
    pub fn with_hints(mut self, hints: &'a Hints) -> PickContext<'a> {
        self.hash_key = hints.hash_key;
        self.exclude = &hints.exclude;
        self.pin = hints.pin.as_deref();
        self
    }

    /// Sets the method name and payload, hashed for a consistent-hash key when no hash key is set.
    pub const fn with_call(mut self, method: &'a str, payload: &'a [u8]) -> PickContext<'a> {
        self.method = method;
        self.payload = payload;
        self
    }

    /// Sets the consistent-hash key.
    pub const fn with_hash_key(mut self, key: u64) -> PickContext<'a> {
        self.hash_key = Some(key);
        self
    }

    /// Sets the addresses not to pick while others remain.
    pub const fn with_exclude(mut self, exclude: &'a [Arc<str>]) -> PickContext<'a> {
        self.exclude = exclude;
        self
    }

    /// Sets the address to pick when it is eligible.
    pub const fn with_pin(mut self, pin: &'a str) -> PickContext<'a> {
        self.pin = Some(pin);
        self
    }

    /// The caller's consistent-hash key, if any.
    pub const fn hash_key(&self) -> Option<u64> {
        self.hash_key
    }

    /// The addresses to avoid.
    pub const fn exclude(&self) -> &'a [Arc<str>] {
        self.exclude
    }

    /// The address to prefer.
    pub const fn pin(&self) -> Option<&'a str> {
        self.pin
    }

    /// The method's wire name, `""` when not set.
    pub const fn method(&self) -> &'a str {
        self.method
    }

    /// The encoded arguments, empty when not set.
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Whether `address` is among the exclusions.
    pub fn is_excluded(&self, address: &str) -> bool {
        self.exclude.iter().any(|excluded| **excluded == *address)
    }

    /// The key that identifies the call for hashing: the hash key when set, else a stable hash
    /// (64-bit FNV-1a) of the method name and the payload.
    ///
    /// The hash is the same on every run, platform and version of this crate, so the same call
    /// lands on the same endpoint from every client. It reads the whole payload: with large
    /// payloads, set a hash key.
    pub fn key(&self) -> u64 {
        match self.hash_key {
            Some(key) => key,
            None => {
                use consistent_hash::{FNV_OFFSET, fnv1a};
                // 0xff never occurs in UTF-8, so the method/payload boundary is unambiguous.
                let method = fnv1a(FNV_OFFSET, self.method.as_bytes());
                fnv1a(fnv1a(method, &[0xff]), self.payload)
            }
        }
    }
}

/// The endpoints a pick may choose from, after availability, weights, the pin and exclusions.
///
/// Built by [`Candidates::new`], which fails exactly when the pick must; a custom [`Pick`]
/// builds one first and then only decides among [`iter`](Candidates::iter). It never holds
/// fewer than one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Candidates<'a> {
    endpoints: &'a [EndpointView<'a>],
    ctx: &'a PickContext<'a>,
    /// False when every eligible endpoint is excluded and the pick revisits them.
    honour_exclude: bool,
    count: usize,
    first: usize,
    pinned: Option<usize>,
}

impl<'a> Candidates<'a> {
    /// The eligible endpoints of `endpoints`, minus the excluded ones unless that leaves none.
    ///
    /// # Errors
    ///
    /// [`Code::Unavailable`](crate::Code::Unavailable) when no endpoint is eligible, with a
    /// message saying why.
    pub fn new(endpoints: &'a [EndpointView<'a>], ctx: &'a PickContext<'a>) -> Result<Candidates<'a>, Status> {
        let check_exclude = !ctx.exclude.is_empty();
        let (mut eligible, mut fresh) = (0usize, 0usize);
        let (mut first_eligible, mut first_fresh) = (None, None);
        for (i, endpoint) in endpoints.iter().enumerate() {
            if !endpoint.is_eligible() {
                continue;
            }
            eligible += 1;
            first_eligible.get_or_insert(i);
            if !check_exclude || !ctx.is_excluded(endpoint.address) {
                fresh += 1;
                first_fresh.get_or_insert(i);
            }
        }
        let (honour_exclude, count, first) = match (first_fresh, first_eligible) {
            (Some(first), _) => (true, fresh, first),
            (None, Some(first)) => (false, eligible, first),
            (None, None) => return Err(no_eligible_endpoint(endpoints)),
        };
        let pinned = ctx.pin.and_then(|pin| endpoints.iter().position(|e| e.address == pin && e.is_eligible()));
        Ok(Candidates { endpoints, ctx, honour_exclude, count, first, pinned })
    }

    /// The pinned endpoint, when the context pins one and it is eligible. A picker returns it
    /// before anything else.
    pub const fn pinned(&self) -> Option<usize> {
        self.pinned
    }

    /// How many endpoints there are to choose from; at least 1.
    pub const fn count(&self) -> usize {
        self.count
    }

    /// The index of the first candidate.
    pub const fn first(&self) -> usize {
        self.first
    }

    /// Whether every eligible endpoint was excluded, so the candidates are the excluded ones.
    pub const fn is_revisiting(&self) -> bool {
        !self.honour_exclude
    }

    /// Whether `endpoints[index]` is a candidate.
    pub fn contains(&self, index: usize) -> bool {
        self.endpoints.get(index).is_some_and(|e| self.admits(e))
    }

    /// The indexes of the candidates, in slice order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + Clone + 'a {
        let this = *self;
        self.endpoints.iter().enumerate().filter(move |(_, e)| this.admits(e)).map(|(i, _)| i)
    }

    /// The index of the `n`-th candidate (from 0) in slice order, `n` taken modulo
    /// [`count`](Candidates::count).
    pub fn nth(&self, n: usize) -> usize {
        let n = n % self.count;
        // Every endpoint is a candidate: the common case, answered without a scan.
        if self.count == self.endpoints.len() {
            return n;
        }
        self.iter().nth(n).unwrap_or(self.first)
    }

    fn admits(&self, endpoint: &EndpointView<'_>) -> bool {
        endpoint.is_eligible() && !(self.honour_exclude && self.ctx.is_excluded(endpoint.address))
    }
}

/// The `Unavailable` status for a set with no eligible endpoint, saying why.
fn no_eligible_endpoint(endpoints: &[EndpointView<'_>]) -> Status {
    let total = endpoints.len();
    let unavailable = endpoints.iter().filter(|e| !e.available).count();
    let drained = total - unavailable;
    let message = match (total, unavailable) {
        (0, _) => "no endpoints to pick from".to_owned(),
        (1, 1) => format!("the only endpoint, {}, is unavailable", endpoints[0].address),
        (1, _) => format!("the only endpoint, {}, has weight 0", endpoints[0].address),
        (_, u) if u == total => format!("all {total} endpoints are unavailable"),
        (_, 0) => "every endpoint has weight 0".to_owned(),
        _ => format!(
            "no endpoint can take calls: {unavailable} of {total} are unavailable and the other {drained} have weight 0"
        ),
    };
    Status::unavailable(message)
}

#[cfg(test)]
mod tests;
