//! The balancing service: owns the endpoints discovery reports and sends each call to one.
//!
//! [`Balance`] is the layer between the retry layer above it and the endpoints' own stacks (a
//! circuit breaker over a connection) below. Its behaviour:
//!
//! 1. On its first call it starts a background task that reads the discovery source. Each
//!    batch of changes that is ready at once is applied together: new instances that pass the
//!    [`Filter`] are made with [`Connect::connect`] and probed at once ([`Available::probe`]:
//!    a channel starts connecting in the background, as gRPC's `round_robin` connects every
//!    address), so that an address nobody listens on is found out by its probe rather than by
//!    a caller's call; updated ones keep their connection and counters, and removed ones (or ones the filter now
//!    rejects) are dropped, which closes their connections once their calls finish. The picker
//!    is told of every new set ([`Pick::update`]).
//! 2. The first call waits (up to its deadline) until the discovery task has applied what the
//!    source knows at once (its first poll, possibly nothing), so a client used right after it
//!    is built does not race its first set.
//! 3. Per call: the picker draws the few endpoints it needs to see ([`Pick::draw`]) from a
//!    [`ReadySet`] of those last found eligible (rebuilt when the set changes, when a drawn
//!    endpoint is found down, and after [`READY_REFRESH`]); their live state (weight, calls in
//!    flight, latency EWMA, [`Available::is_available`]) is read into [`EndpointView`]s and
//!    the picker chooses among them, honouring the hints of the call's
//!    [`Context`](crate::Context). While any endpoint is proven up, the ready set leaves out
//!    those still unproven ([`Available::is_unproven`]: never connected, first attempt under
//!    way), whose probes will bring them in at a rebuild once they connect; with none proven
//!    (a client's very first calls) the unproven are drawn, and a call waits for its
//!    endpoint's first connection. Every built-in picker draws, so a pick costs the same at
//!    2,000 endpoints as at 2, and endpoints that are down are not drawn at all; a picker that
//!    does not draw is handed every endpoint of the ready set. A pinned call finds its address
//!    in the ready set by lookup. A draw of nothing (every endpoint excluded) or of endpoints
//!    gone down, and a pin not in the ready set, read every endpoint instead. The chosen address is written into the call's
//!    [`PickRecord`](crate::PickRecord), if it has one, before the call is sent.
//! 4. A durable call (its [`Context`](crate::Context) carries a
//!    [`Durable`](crate::durable::Durable)) goes to the endpoint discovery names as its
//!    destination ([`Instance::name`]), whatever the picker: only that server's inbox holds the
//!    message's stream, and any other would refuse it. It is found by a lookup by name in the
//!    ready set's endpoints (built on the first durable call), not a scan. When discovery names
//!    no endpoint so (a source that carries no names: static addresses, DNS), the endpoints it
//!    names not at all are tried, and the connection checks the name the server announces.
//!    Among several of that name (one server at two addresses), the first up and not excluded.
//! 5. A pick that fails (no endpoint, all unavailable) is `Unavailable` and marked
//!    unprocessed: the call went nowhere.
//! 6. Latency EWMA: each successful call's duration updates its endpoint's average with weight
//!    1/5 (an exponentially weighted moving average); failures do not, so an endpoint failing
//!    fast does not look attractive to P2C. Between samples the average decays toward zero
//!    with a time constant of [`LATENCY_DECAY`], as in Finagle's peak-EWMA balancer: an
//!    endpoint that once looked slow and so stopped being picked is tried again, instead of
//!    being starved of the samples that would clear its name. An endpoint whose connection is
//!    made anew ([`Available::generation`] changed: the server may have restarted) starts with
//!    no average at all.
//! 7. When the last clone of the service is dropped, the discovery task ends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use smallvec::SmallVec;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;
use tower::util::Oneshot;

use super::{Available, Drawn, EndpointView, ON_STACK, Pick, PickContext, ReadySet};
use crate::discover::{Change, Discover, Filter, Instance};
use crate::{Request, Response, Status};

/// Makes the service that carries calls to one endpoint (a connection, usually wrapped in a
/// circuit breaker). Implemented for closures `Fn(&Instance) -> S`.
pub trait Connect: Send + Sync + 'static {
    /// The per-endpoint service.
    type Service: Service<Request, Response = Response, Error = Status, Future: Send>
        + Available
        + Clone
        + Send
        + Sync
        + 'static;

    /// A service for `instance`. Called when discovery reports it; must not block.
    fn connect(&self, instance: &Instance) -> Self::Service;
}

impl<F, S> Connect for F
where
    F: Fn(&Instance) -> S + Send + Sync + 'static,
    S: Service<Request, Response = Response, Error = Status, Future: Send> + Available + Clone + Send + Sync + 'static,
{
    type Service = S;

    fn connect(&self, instance: &Instance) -> S {
        self(instance)
    }
}

/// Sends each call to one of the endpoints discovery reports.
///
/// Starts a background task on its first call that applies discovery changes (connecting new
/// endpoints lazily, dropping those that left); per call it reads every endpoint's weight, calls
/// in flight, latency EWMA and availability, asks the picker, notes the pick in the call's
/// [`PickRecord`](crate::PickRecord) and sends the call. A pick that fails is `Unavailable`,
/// marked unprocessed. See the [`balance`](crate::balance) module for the pickers.
pub struct Balance<C: Connect, P> {
    shared: Arc<Shared<C, P>>,
}

struct Shared<C: Connect, P> {
    connect: C,
    picker: P,
    filter: Filter,
    endpoints: RwLock<Endpoints<C::Service>>,
    /// Taken by the discovery task when it starts.
    discover: Mutex<Option<Box<dyn Discover>>>,
    started: AtomicBool,
    /// Origin of the endpoints' sample times.
    epoch: Instant,
    /// `true` once the source's first batch is applied; dropped with the service, which tells
    /// the discovery task to stop.
    synced: watch::Sender<bool>,
    /// The endpoints that were eligible when last looked at, for a picker that draws
    /// ([`Pick::draw`]) and for pinned calls: see [`Ready`].
    ready: RwLock<Arc<Ready<C::Service>>>,
    /// Bumped when discovery publishes a new set, after publishing it: a [`Ready`] built from
    /// an older one is stale.
    set_version: AtomicU64,
    /// Set when a drawn endpoint turned out not to be eligible: the next pick rebuilds.
    ready_stale: AtomicBool,
    /// Held by the one pick that rebuilds [`Ready`]; the others use the old one meanwhile.
    rebuilding: AtomicBool,
}

/// The longest the set of eligible endpoints a picker draws from ([`Pick::draw`]) is used
/// before it is rebuilt, so that an endpoint that came up (its channel's probe connected)
/// joins the draw within this time.
pub const READY_REFRESH: Duration = Duration::from_millis(100);

/// The eligible endpoints (available, weight above zero) of one set, as they were at
/// `built_ns`: what a picker draws from, so that a pick costs the same for 2 endpoints and for
/// 2,000. Rebuilt, in O(n) by one caller while the others go on with the old one, when
/// discovery changes the set, when a drawn endpoint is found not eligible, and after
/// [`READY_REFRESH`]. Endpoints that are down stay out of it, so none of the callers pays for
/// them; their channels' own tasks probe them, and a probe that connects brings them back at
/// the next rebuild. So do endpoints not yet proven up, while another one is.
struct Ready<S> {
    endpoints: Endpoints<S>,
    /// The eligible ones; their indexes are into `endpoints`.
    set: ReadySet,
    set_version: u64,
    built_ns: u64,
    /// Indexes into `endpoints` by [`Instance::name`], for durable calls; built on the first.
    by_name: OnceLock<HashMap<Box<str>, Vec<usize>>>,
}

/// Clears a flag when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<S: Available> Ready<S> {
    /// The eligible endpoints; only those proven up ([`Available::is_unproven`] false) when there
    /// is one, since the others' probes are still finding out whether anyone listens.
    fn build(endpoints: Endpoints<S>, set_version: u64, now_ns: u64) -> Ready<S> {
        let eligible: Vec<(usize, bool)> = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.view(now_ns).is_eligible())
            .map(|(i, e)| (i, e.service.is_unproven()))
            .collect();
        let any_proven = eligible.iter().any(|&(_, unproven)| !unproven);
        let chosen = eligible.into_iter().filter(|&(_, unproven)| !(any_proven && unproven));
        let set = ReadySet::from_eligible(
            chosen.filter_map(|(i, _)| endpoints.get(i).map(|e| (e.instance.address.clone(), e.instance.weight, i))),
        );
        Ready { endpoints, set, set_version, built_ns: now_ns, by_name: OnceLock::new() }
    }

    /// Indexes into `endpoints` of those discovery names `name`, or, when it names none so,
    /// of those it names not at all.
    fn named(&self, name: &str) -> &[usize] {
        let by_name = self.by_name.get_or_init(|| {
            let mut by_name: HashMap<Box<str>, Vec<usize>> = HashMap::new();
            for (index, endpoint) in self.endpoints.iter().enumerate() {
                by_name.entry(endpoint.instance.name.as_str().into()).or_default().push(index);
            }
            by_name
        });
        by_name.get(name).or_else(|| by_name.get("")).map_or(&[], Vec::as_slice)
    }

    /// The endpoint at `position` of the ready set; `None` past its end (a picker's mistake).
    fn endpoint(&self, position: usize) -> Option<&Arc<Endpoint<S>>> {
        let index = (position < self.set.len()).then(|| self.set.index(position))?;
        self.endpoints.get(index)
    }
}

/// How fast an endpoint's latency average decays between samples: by a factor of e per
/// `LATENCY_DECAY` (Finagle uses 10 s; a shorter constant lets a recovered endpoint back in
/// sooner).
pub const LATENCY_DECAY: std::time::Duration = std::time::Duration::from_secs(5);

/// One endpoint of a [`Balance`] as it is now, from [`Balance::snapshot`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointSnapshot<S> {
    /// The address discovery gave it.
    pub address: Arc<str>,
    /// Its weight; 0 when it is being drained.
    pub weight: u32,
    /// Calls sent to it that have not completed.
    pub in_flight: u64,
    /// The moving average of its calls' latency, decayed while it is idle; `None` until a call
    /// has succeeded (or since its connection was replaced).
    pub latency: Option<Duration>,
    /// Whether it can take calls now (connected or worth connecting, breaker not open).
    pub available: bool,
    /// Its service, for what the balancer does not know (its connections, its breaker).
    pub service: S,
}

/// An immutable set, replaced whole when discovery changes it, so a call reads it with one
/// lock and one reference count.
type Endpoints<S> = Arc<[Arc<Endpoint<S>>]>;

struct Endpoint<S> {
    instance: Instance,
    service: S,
    in_flight: AtomicU64,
    latency_ewma_ns: AtomicU64,
    /// When the average last took a sample, in nanoseconds since the balancer's epoch.
    sampled_at_ns: AtomicU64,
    /// The service's connection generation at the last look, to notice a new connection.
    generation: AtomicU64,
}

impl<S: Available> Endpoint<S> {
    fn new(instance: Instance, service: S) -> Endpoint<S> {
        Endpoint {
            instance,
            in_flight: AtomicU64::new(0),
            latency_ewma_ns: AtomicU64::new(0),
            sampled_at_ns: AtomicU64::new(0),
            generation: AtomicU64::new(service.generation()),
            service,
        }
    }

    fn view(&self, now_ns: u64) -> EndpointView<'_> {
        let available = self.service.is_available();
        // A new connection may lead to a restarted or different server: forget the old
        // latency. Only a change is written, since every caller reads these lines.
        let generation = self.service.generation();
        if generation != self.generation.load(Ordering::Relaxed) {
            self.generation.store(generation, Ordering::Relaxed);
            self.latency_ewma_ns.store(0, Ordering::Relaxed);
        }
        EndpointView::new(&self.instance.address)
            .with_weight(self.instance.weight)
            .with_in_flight(self.in_flight.load(Ordering::Relaxed))
            .with_latency_ewma_ns(self.decayed_latency_ns(now_ns))
            .with_available(available)
    }

    fn decayed_latency_ns(&self, now_ns: u64) -> u64 {
        let ewma = self.latency_ewma_ns.load(Ordering::Relaxed);
        if ewma == 0 {
            return 0;
        }
        let idle = now_ns.saturating_sub(self.sampled_at_ns.load(Ordering::Relaxed)) as f64;
        let decayed = ewma as f64 * (-idle / LATENCY_DECAY.as_nanos() as f64).exp();
        // Never 0, which means "unknown" to the pickers.
        (decayed as u64).max(1)
    }

    fn observe(&self, elapsed: std::time::Duration, now_ns: u64) {
        let sample = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.decayed_latency_ns(now_ns);
        // Racing updates may lose a sample; an average does not need every one.
        let new = if old == 0 { sample } else { old - old / 5 + sample / 5 };
        self.latency_ewma_ns.store(new, Ordering::Relaxed);
        self.sampled_at_ns.store(now_ns, Ordering::Relaxed);
    }
}

/// Nanoseconds from `epoch` to now: the time of an endpoint's latency sample.
fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A call sent to an endpoint: counted in its in-flight calls for as long as this lives, and
/// timed for its latency average when it succeeds.
struct Sent<S> {
    endpoint: Arc<Endpoint<S>>,
    started: Instant,
    /// The balancer's epoch, for the sample's time.
    epoch: Instant,
}

impl<S> Sent<S> {
    fn start(endpoint: Arc<Endpoint<S>>, epoch: Instant) -> Sent<S> {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Sent { endpoint, started: Instant::now(), epoch }
    }
}

impl<S: Available> Sent<S> {
    fn succeeded(&self) {
        self.endpoint.observe(self.started.elapsed(), nanos_since(self.epoch));
    }
}

impl<S> Drop for Sent<S> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<C: Connect, P: Pick> Balance<C, P> {
    /// Balances calls with `picker` over the endpoints `discover` reports that pass `filter`,
    /// reaching each through the service `connect` makes for it.
    pub fn new(discover: impl Discover, connect: C, picker: P, filter: Filter) -> Balance<C, P> {
        let (synced, _) = watch::channel(false);
        Balance {
            shared: Arc::new(Shared {
                connect,
                picker,
                filter,
                endpoints: RwLock::new(Arc::from(Vec::new())),
                discover: Mutex::new(Some(Box::new(discover))),
                started: AtomicBool::new(false),
                epoch: Instant::now(),
                ready: RwLock::new(Arc::new(Ready {
                    endpoints: Arc::from(Vec::new()),
                    set: ReadySet::default(),
                    set_version: 0,
                    built_ns: 0,
                    by_name: OnceLock::new(),
                })),
                set_version: AtomicU64::new(0),
                ready_stale: AtomicBool::new(false),
                rebuilding: AtomicBool::new(false),
                synced,
            }),
        }
    }

    /// The addresses of the endpoints currently in use.
    pub fn addresses(&self) -> Vec<Arc<str>> {
        self.shared.snapshot().iter().map(|e| e.instance.address.clone()).collect()
    }

    /// Starts discovery, if no call has, and resolves once its first set of endpoints is applied
    /// (at once if it was).
    pub async fn first_set(&self) {
        self.shared.start();
        let mut synced = self.shared.synced.subscribe();
        // Fails only once the balancer is gone, which `self` rules out.
        let _ = synced.wait_for(|done| *done).await;
    }

    /// [`first_set`](Balance::first_set), then waits until no endpoint of the set is unproven
    /// ([`Available::is_unproven`]): each has connected or failed its first attempt, so calls
    /// are spread over the endpoints found up. A set that changes meanwhile is waited for too.
    pub async fn probed(&self) {
        self.first_set().await;
        let mut changes = self.shared.synced.subscribe();
        loop {
            changes.borrow_and_update();
            if self.shared.snapshot().iter().all(|endpoint| !endpoint.service.is_unproven()) {
                return;
            }
            // A probe's answer and a new set both mark a change; the balancer outlives `self`.
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Starts discovery, if the first call has not, and waits up to `req`'s deadline until its
    /// first set of endpoints is applied: for calls that address every endpoint rather than
    /// pick one.
    ///
    /// # Errors
    /// `Unavailable`, unprocessed, when the deadline passes first.
    pub async fn discovered(&self, req: &Request) -> Result<(), Status> {
        self.shared.start();
        if self.shared.is_synced() {
            return Ok(());
        }
        self.shared.synced(req).await
    }

    /// The endpoints currently in use with their services, by address: the balancer's own set,
    /// for calls that address every endpoint (a broadcast) rather than pick one.
    pub fn services(&self) -> Vec<(Arc<str>, C::Service)>
    where
        C::Service: Clone,
    {
        self.shared.snapshot().iter().map(|e| (e.instance.address.clone(), e.service.clone())).collect()
    }

    /// Every endpoint in use as the balancer sees it now (weight, calls in flight, latency
    /// average, availability), with its service: for operations, not for picking.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot<C::Service>>
    where
        C::Service: Clone,
    {
        let now_ns = nanos_since(self.shared.epoch);
        self.shared
            .snapshot()
            .iter()
            .map(|endpoint| {
                let view = endpoint.view(now_ns);
                EndpointSnapshot {
                    address: endpoint.instance.address.clone(),
                    weight: view.weight,
                    in_flight: view.in_flight,
                    latency: (view.latency_ewma_ns > 0).then(|| Duration::from_nanos(view.latency_ewma_ns)),
                    available: view.available,
                    service: endpoint.service.clone(),
                }
            })
            .collect()
    }

    /// A receiver that sees a change each time discovery changes the set of endpoints (and when
    /// the first set is applied), and each time an endpoint's probe has its answer (its first
    /// connection attempt connected or failed), for tests and operations that wait for one.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.shared.synced.subscribe()
    }
}

impl<C: Connect, P: Pick> Shared<C, P> {
    fn snapshot(&self) -> Endpoints<C::Service> {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn start(self: &Arc<Self>) {
        // A plain load first: the swap is a write to a line every caller reads.
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let source = self.discover.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(source) = source {
            tokio::spawn(discover_task(Arc::downgrade(self), source, self.synced.subscribe()));
        }
    }

    fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits, up to the call's deadline, until discovery's first set is applied.
    async fn synced(&self, req: &Request) -> Result<(), Status> {
        let mut synced = self.synced.subscribe();
        let wait = synced.wait_for(|done| *done);
        let waited = match req.ctx().deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, wait).await.ok().map(|r| r.is_ok()),
            None => Some(wait.await.is_ok()),
        };
        if waited == Some(true) {
            return Ok(());
        }
        let message = format!("no endpoints discovered in time for {}", req.method());
        Err(Status::unavailable(message).mark_unprocessed())
    }

    /// Picks an endpoint for `req`, notes it in the call's record and sends the call there.
    fn send(&self, req: Request) -> ResponseFuture<C::Service> {
        match self.pick(&req) {
            Ok(endpoint) => {
                if let Some(record) = req.ctx().pick_record() {
                    record.set(endpoint.instance.address.clone());
                }
                let call = Oneshot::new(endpoint.service.clone(), req);
                ResponseFuture { kind: Kind::Sent { call, sent: Sent::start(endpoint, self.epoch) } }
            }
            Err(status) => ResponseFuture { kind: Kind::Failed { status: Some(status) } },
        }
    }

    fn pick(&self, req: &Request) -> Result<Arc<Endpoint<C::Service>>, Status> {
        let ctx = PickContext::for_request(req);
        let now = self.now_ns();
        let ready = self.ready(now);
        if let Some(durable) = req.ctx().durable() {
            return Self::destination(&ready, &durable.destination, &ctx, now).ok_or_else(|| {
                let message = format!(
                    "{} not sent: none of the {} endpoints discovered is {} and up",
                    req.method(),
                    ready.endpoints.len(),
                    durable.destination
                );
                Status::unavailable(message).mark_unprocessed()
            });
        }
        let picked = match ctx.pin() {
            Some(pin) => Self::pinned(&ready, pin, now),
            None => self.pick_ready(&ready, &ctx, now),
        };
        if let Some(endpoint) = picked {
            return Ok(endpoint);
        }
        drop(ready);
        let endpoints = self.snapshot();
        // On the stack for the usual cluster size: building the views costs no allocation.
        let views: SmallVec<[EndpointView<'_>; ON_STACK]> = endpoints.iter().map(|e| e.view(now)).collect();
        match self.picker.pick(&views, &ctx) {
            Ok(index) => endpoints.get(index).cloned().ok_or_else(|| {
                Status::internal(format!("the balancer picked endpoint {index} of {}", endpoints.len()))
            }),
            Err(status) => {
                let message = format!("{} not sent: {status}", req.method());
                Err(Status::new(status.code(), message).mark_unprocessed())
            }
        }
    }

    /// A durable call's endpoint: the first eligible one named `name` (see [`Ready::named`])
    /// that the call does not exclude, else the first eligible one it excludes (a retry may
    /// only go back there); `None` when none is eligible.
    fn destination(
        ready: &Ready<C::Service>,
        name: &str,
        ctx: &PickContext<'_>,
        now: u64,
    ) -> Option<Arc<Endpoint<C::Service>>> {
        let mut excluded = None;
        for endpoint in ready.named(name).iter().filter_map(|&index| ready.endpoints.get(index)) {
            if !endpoint.view(now).is_eligible() {
                continue;
            }
            if !ctx.is_excluded(&endpoint.instance.address) {
                return Some(endpoint.clone());
            }
            excluded.get_or_insert(endpoint);
        }
        excluded.cloned()
    }

    /// The pinned endpoint, when it is in the ready set and still eligible: O(1). `None`
    /// sends the call down the whole set's path, which honours or ignores the pin as the
    /// picker's contract says.
    fn pinned(ready: &Ready<C::Service>, pin: &str, now: u64) -> Option<Arc<Endpoint<C::Service>>> {
        let endpoint = ready.endpoint(ready.set.position(pin)?)?;
        endpoint.view(now).is_eligible().then(|| endpoint.clone())
    }

    /// A pick among the endpoints of the [`Ready`] set: those the picker draws
    /// ([`Pick::draw`]), in O(1) or O(log n) of the set's size, or, for a picker that does not
    /// draw, all of them (fewer than the whole set when some are down). `None` when it cannot
    /// decide (nothing eligible is known, everything drawable is excluded, or the endpoints
    /// went down): the caller then picks from the whole set, which also words the error.
    fn pick_ready(
        &self,
        ready: &Ready<C::Service>,
        ctx: &PickContext<'_>,
        now: u64,
    ) -> Option<Arc<Endpoint<C::Service>>> {
        if ready.set.is_empty() {
            return None;
        }
        let mut drawn = Drawn::new();
        let draws = self.picker.draw(&ready.set, ctx, &mut drawn);
        let endpoints: SmallVec<[&Arc<Endpoint<C::Service>>; ON_STACK]> = if draws {
            drawn.positions().iter().map(|&position| ready.endpoint(position)).collect::<Option<_>>()?
        } else {
            (0..ready.set.len()).map(|position| ready.endpoint(position)).collect::<Option<_>>()?
        };
        let views: SmallVec<[EndpointView<'_>; ON_STACK]> =
            endpoints.iter().map(|endpoint| endpoint.view(now)).collect();
        if views.iter().any(|view| !view.is_eligible()) {
            self.ready_stale.store(true, Ordering::Relaxed);
        }
        let chosen = match views.len() {
            0 => return None,
            // One drawn: nothing to decide, if it is still up.
            1 if draws => views[0].is_eligible().then_some(0)?,
            _ => self.picker.pick(&views, ctx).ok()?,
        };
        endpoints.get(chosen).map(|&endpoint| endpoint.clone())
    }

    /// The [`Ready`] set, rebuilt first if it is stale and no other pick is rebuilding it.
    fn ready(&self, now: u64) -> Arc<Ready<C::Service>> {
        let ready = self.ready.read().unwrap_or_else(|p| p.into_inner()).clone();
        let stale = ready.set_version != self.set_version.load(Ordering::Acquire)
            || now.saturating_sub(ready.built_ns) >= READY_REFRESH.as_nanos() as u64
            || self.ready_stale.load(Ordering::Relaxed);
        if !stale || self.rebuilding.swap(true, Ordering::Acquire) {
            return ready;
        }
        // Released however the build ends: a service's `is_available` that panics must not
        // stop every later rebuild.
        let _rebuilding = Release(&self.rebuilding);
        self.ready_stale.store(false, Ordering::Relaxed);
        // The version first: a set published meanwhile makes this one stale again.
        let version = self.set_version.load(Ordering::Acquire);
        let mut fresh = Ready::build(self.snapshot(), version, now);
        fresh.set.carry_id(&ready.set);
        let fresh = Arc::new(fresh);
        let mut slot = self.ready.write().unwrap_or_else(|p| p.into_inner());
        // Not over the ready set of a newer set, which `apply` stores: this one would keep the
        // endpoints that left alive (and their connections open) until the next pick.
        if self.set_version.load(Ordering::Acquire) == version {
            *slot = fresh.clone();
        }
        fresh
    }

    fn now_ns(&self) -> u64 {
        nanos_since(self.epoch)
    }

    /// An endpoint's probe has its answer: the ready set is rebuilt at the next pick, taking it
    /// in if it connected, and watchers of [`Balance::changes`] are told.
    fn proven(&self) {
        self.ready_stale.store(true, Ordering::Relaxed);
        self.synced.send_if_modified(|synced| *synced);
    }

    /// Applies a batch of changes and publishes the new set.
    fn apply(self: &Arc<Self>, changes: Vec<Change>) {
        let current = self.snapshot();
        let mut by_address: HashMap<Arc<str>, Arc<Endpoint<C::Service>>> =
            current.iter().map(|e| (e.instance.address.clone(), e.clone())).collect();
        let mut order: Vec<Arc<str>> = current.iter().map(|e| e.instance.address.clone()).collect();
        for change in changes {
            match change {
                Change::Insert(address, instance) if self.filter.accepts(&instance) => {
                    let endpoint = match by_address.get(&address) {
                        // Same address, new details (weight, state): keep the connection and counters.
                        Some(old) => {
                            let updated = Endpoint::new(instance, old.service.clone());
                            updated.in_flight.store(old.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
                            let ewma = old.latency_ewma_ns.load(Ordering::Relaxed);
                            updated.latency_ewma_ns.store(ewma, Ordering::Relaxed);
                            let sampled_at = old.sampled_at_ns.load(Ordering::Relaxed);
                            updated.sampled_at_ns.store(sampled_at, Ordering::Relaxed);
                            Arc::new(updated)
                        }
                        None => {
                            order.push(address.clone());
                            let service = self.connect.connect(&instance);
                            // Found out now, in the background, rather than by a caller's call.
                            if let Some(answer) = service.probe() {
                                let shared = Arc::downgrade(self);
                                tokio::spawn(async move {
                                    answer.await;
                                    if let Some(shared) = shared.upgrade() {
                                        shared.proven();
                                    }
                                });
                            }
                            Arc::new(Endpoint::new(instance, service))
                        }
                    };
                    by_address.insert(address, endpoint);
                }
                Change::Insert(address, _) | Change::Remove(address) => {
                    by_address.remove(&address);
                }
            }
        }
        let next: Endpoints<C::Service> = order.iter().filter_map(|address| by_address.get(address).cloned()).collect();
        let now = self.now_ns();
        let views: Vec<EndpointView<'_>> = next.iter().map(|e| e.view(now)).collect();
        self.picker.update(&views);
        drop(views);
        *self.endpoints.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        let version = self.set_version.fetch_add(1, Ordering::Release) + 1;
        // The ready set is rebuilt here, not at the next pick: until then it would hold the
        // endpoints that left, and so their connections.
        let ready = Arc::new(Ready::build(next, version, now));
        *self.ready.write().unwrap_or_else(|p| p.into_inner()) = ready;
        // `send_replace` marks a change even when the value stays `true`.
        self.synced.send_replace(true);
    }
}

/// Reads the discovery source until it ends or the service is dropped.
async fn discover_task<C: Connect, P: Pick>(
    shared: Weak<Shared<C, P>>,
    mut source: Box<dyn Discover>,
    mut alive: watch::Receiver<bool>,
) {
    // What the source knows at once is the first set, even if it is empty: a source that must
    // fetch its first set (a registry) fetches it before it is handed over.
    let initial = ready_changes(&mut source, None);
    match shared.upgrade() {
        Some(shared) => shared.apply(initial),
        None => return,
    }
    loop {
        let first = tokio::select! {
            change = source.next() => change,
            // The sender lives in the service: an error here means it was dropped.
            closed = alive.changed() => match closed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let Some(first) = first else {
            tracing::debug!("discovery source ended; keeping the endpoints it reported");
            return;
        };
        let batch = ready_changes(&mut source, Some(first));
        let Some(shared) = shared.upgrade() else { return };
        shared.apply(batch);
    }
}

/// `first` and every change the source has ready now, so that a burst is applied at once.
fn ready_changes(source: &mut Box<dyn Discover>, first: Option<Result<Change, Status>>) -> Vec<Change> {
    let mut batch = Vec::new();
    let mut next = first.or_else(|| futures::FutureExt::now_or_never(source.next()).flatten());
    while let Some(item) = next {
        match item {
            Ok(change) => batch.push(change),
            Err(status) => tracing::warn!(%status, "discovery source failed; keeping the current endpoints"),
        }
        next = futures::FutureExt::now_or_never(source.next()).flatten();
    }
    batch
}

impl<C: Connect, P> Clone for Balance<C, P> {
    fn clone(&self) -> Balance<C, P> {
        Balance { shared: self.shared.clone() }
    }
}

impl<C: Connect, P: Pick> Service<Request> for Balance<C, P> {
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture<C::Service>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        // Readiness is per endpoint and decided per call by the picker.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> ResponseFuture<C::Service> {
        self.shared.start();
        if self.shared.is_synced() {
            return self.shared.send(req);
        }
        let shared = self.shared.clone();
        let call = async move {
            shared.synced(&req).await?;
            shared.send(req).await
        };
        ResponseFuture { kind: Kind::Waiting { call: Box::pin(call) } }
    }
}

pin_project_lite::pin_project! {
    /// The answer of the endpoint a [`Balance`] picked for a call.
    ///
    /// Once discovery has reported its first set (every call but the first few) the pick is
    /// made when the call is made, and this future is the endpoint's own call, unboxed.
    pub struct ResponseFuture<S: Service<Request>> {
        #[pin]
        kind: Kind<S>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProjection]
    enum Kind<S: Service<Request>> {
        Sent { #[pin] call: Oneshot<S, Request>, sent: Sent<S> },
        /// Waiting for discovery's first set, then picking.
        Waiting { call: BoxFuture<'static, Result<Response, Status>> },
        /// No endpoint could be picked.
        Failed { status: Option<Status> },
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = Status> + Available,
{
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProjection::Sent { call, sent } => {
                let result = std::task::ready!(call.poll(cx));
                if result.is_ok() {
                    sent.succeeded();
                }
                Poll::Ready(result)
            }
            KindProjection::Waiting { call } => call.as_mut().poll(cx),
            KindProjection::Failed { status } => {
                Poll::Ready(Err(status.take().expect("a balance::ResponseFuture is not polled after it completed")))
            }
        }
    }
}

impl<S: Service<Request>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<C: Connect, P: fmt::Debug> fmt::Debug for Balance<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints = self.shared.endpoints.read().unwrap_or_else(|p| p.into_inner()).clone();
        let addresses: Vec<&str> = endpoints.iter().map(|e| &*e.instance.address).collect();
        f.debug_struct("Balance").field("picker", &self.shared.picker).field("endpoints", &addresses).finish()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::channel::mpsc;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::balance::{Candidates, ConsistentHash, LeastActive, P2c, Random, RoundRobin, WeightedRoundRobin};
    use tower::ServiceExt;

    use crate::{Code, Context, PickRecord};

    /// An endpoint's service that answers with its own address, optionally waiting for a gate.
    #[derive(Clone)]
    struct Mock {
        address: Arc<str>,
        calls: Arc<AtomicUsize>,
        gate: Arc<tokio::sync::Semaphore>,
        _alive: Arc<DropCounter>,
    }

    struct DropCounter(Arc<AtomicUsize>);

    impl Drop for DropCounter {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Available for Mock {
        fn is_available(&self) -> bool {
            true
        }
    }

    impl Service<Request> for Mock {
        type Response = Response;
        type Error = Status;
        type Future = BoxFuture<'static, Result<Response, Status>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (address, gate) = (self.address.clone(), self.gate.clone());
            Box::pin(async move {
                let _permit = gate.acquire().await.map_err(|_| Status::internal("gate closed"))?;
                Ok(Response::new(Bytes::copy_from_slice(address.as_bytes())))
            })
        }
    }

    /// Connects mocks and keeps a handle on each, by address.
    type Counter = (Arc<str>, Arc<AtomicUsize>);

    #[derive(Clone, Default)]
    struct Mocks {
        /// Each connected endpoint's call counter (not the mock itself, which must be droppable).
        made: Arc<Mutex<Vec<Counter>>>,
        dropped: Arc<AtomicUsize>,
        closed_gates: bool,
    }

    impl Mocks {
        fn connect(&self) -> impl Fn(&Instance) -> Mock + Send + Sync + 'static {
            let this = self.clone();
            move |instance: &Instance| {
                let permits = if this.closed_gates { 0 } else { tokio::sync::Semaphore::MAX_PERMITS };
                let mock = Mock {
                    address: instance.address.clone(),
                    calls: Arc::default(),
                    gate: Arc::new(tokio::sync::Semaphore::new(permits)),
                    _alive: Arc::new(DropCounter(this.dropped.clone())),
                };
                this.made.lock().expect("not poisoned").push((mock.address.clone(), mock.calls.clone()));
                mock
            }
        }

        fn calls(&self, address: &str) -> usize {
            let made = self.made.lock().expect("not poisoned");
            made.iter().filter(|(a, _)| &**a == address).map(|(_, calls)| calls.load(Ordering::SeqCst)).sum()
        }
    }

    fn request() -> Request {
        Request::new("Svc.m", Bytes::new())
    }

    async fn answer<S: Service<Request, Response = Response, Error = Status>>(svc: S, req: Request) -> String {
        let response = svc.oneshot(req).await.expect("answered");
        String::from_utf8(response.payload().to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn spreads_calls_and_records_each_pick() {
        let mocks = Mocks::default();
        let balance = Balance::new(
            crate::discover::Static::new(["a", "b", "c"]),
            mocks.connect(),
            RoundRobin::new(),
            Filter::default(),
        );
        let mut seen = Vec::new();
        for _ in 0..6 {
            let record = PickRecord::new();
            let mut ctx = Context::new();
            ctx.set_pick_record(Some(record.clone()));
            let answered = answer(balance.clone(), request().with_ctx(ctx)).await;
            assert_eq!(record.get().map(|a| a.to_string()), Some(answered.clone()), "the record names the endpoint");
            seen.push(answered);
        }
        seen.sort();
        assert_eq!(seen, ["a", "a", "b", "b", "c", "c"]);
    }

    /// A balancer over endpoints `(address, discovery's name)`, the set applied.
    async fn named_endpoints<'a, P: Pick>(
        mocks: &'a Mocks,
        endpoints: &[(&str, &str)],
        picker: P,
    ) -> Balance<impl Connect<Service = Mock> + use<'a, P>, P> {
        let (changes, source) = mpsc::unbounded();
        for &(address, name) in endpoints {
            let instance = Instance::new(address).with_name(name);
            changes.unbounded_send(Ok(Change::Insert(address.into(), instance))).expect("open");
        }
        let balance = Balance::new(source, mocks.connect(), picker, Filter::default());
        answer(balance.clone(), request()).await;
        // A source that ends leaves its set in place.
        drop(changes);
        balance
    }

    fn durable_to(destination: &str) -> Request {
        let mut ctx = Context::new();
        let id = crate::durable::MessageId::new("shop-1", crate::durable::OutboxId::from_u64(7), 1);
        ctx.set_durable(Some(crate::durable::Durable::new(id, 0, destination)));
        request().with_ctx(ctx)
    }

    #[tokio::test]
    async fn a_durable_call_goes_to_the_endpoint_named_as_its_destination_whatever_the_picker() {
        let (named, mocks) = ([("a", "ledger-a"), ("b", "ledger-b"), ("c", "ledger-c")], Mocks::default());
        let round_robin = named_endpoints(&mocks, &named, RoundRobin::new()).await;
        let p2c = named_endpoints(&mocks, &named, P2c::with_seed(3)).await;
        let hashed = named_endpoints(&mocks, &named, ConsistentHash::new()).await;
        for _ in 0..20 {
            assert_eq!(answer(round_robin.clone(), durable_to("ledger-b")).await, "b");
            assert_eq!(answer(p2c.clone(), durable_to("ledger-c")).await, "c");
            assert_eq!(answer(hashed.clone(), durable_to("ledger-a")).await, "a");
        }
        let mut plain: Vec<String> = Vec::new();
        for _ in 0..3 {
            plain.push(answer(round_robin.clone(), request()).await);
        }
        plain.sort();
        assert_eq!(plain, ["a", "b", "c"], "other calls are spread as before");

        let status = round_robin.clone().oneshot(durable_to("ledger-z")).await.expect_err("nobody is ledger-z");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.is_unprocessed(), "the outbox keeps the message: {status}");
        assert!(status.message().contains("ledger-z"), "{status}");
    }

    #[tokio::test]
    async fn a_durable_call_tries_unnamed_endpoints_and_goes_back_to_an_excluded_destination() {
        // Discovery that carries no names (static addresses): the connection checks the name.
        let mocks = Mocks::default();
        let unnamed = named_endpoints(&mocks, &[("a", ""), ("b", "")], RoundRobin::new()).await;
        let answered = answer(unnamed.clone(), durable_to("ledger")).await;
        assert!(answered == "a" || answered == "b", "{answered}");

        // One server at two addresses: a retry that excludes the first goes to the second; one
        // that excludes both goes back rather than nowhere.
        let twice =
            named_endpoints(&mocks, &[("tcp", "ledger"), ("unix", "ledger"), ("x", "other")], RoundRobin::new()).await;
        let excluding = |addresses: &[&str]| {
            let mut request = durable_to("ledger");
            request.ctx_mut().hints_mut().exclude = addresses.iter().map(|&a| Arc::from(a)).collect();
            request
        };
        assert_eq!(answer(twice.clone(), excluding(&[])).await, "tcp");
        assert_eq!(answer(twice.clone(), excluding(&["tcp"])).await, "unix");
        assert_eq!(answer(twice.clone(), excluding(&["tcp", "unix"])).await, "tcp");
    }

    #[tokio::test]
    async fn endpoints_that_leave_get_no_calls_and_are_dropped() {
        let mocks = Mocks::default();
        let (changes, source) = mpsc::unbounded();
        let balance = Balance::new(source, mocks.connect(), RoundRobin::new(), Filter::default());
        for address in ["a", "b"] {
            changes.unbounded_send(Ok(Change::Insert(address.into(), Instance::new(address)))).expect("open");
        }
        answer(balance.clone(), request()).await;
        assert_eq!(balance.addresses().len(), 2);

        changes.unbounded_send(Ok(Change::Remove("a".into()))).expect("open");
        // The removal is applied by the background task; wait for it by watching the set.
        while balance.addresses().len() != 1 {
            tokio::task::yield_now().await;
        }
        // Dropped at once, not at the next pick: nothing (the ready set included) keeps it.
        assert_eq!(mocks.dropped.load(Ordering::SeqCst), 1, "a's service was dropped with the set");
        let before = mocks.calls("a");
        for _ in 0..4 {
            assert_eq!(answer(balance.clone(), request()).await, "b");
        }
        assert_eq!(mocks.calls("a"), before);
        assert_eq!(mocks.dropped.load(Ordering::SeqCst), 1, "a's service was dropped");
    }

    #[tokio::test]
    async fn the_filter_keeps_only_the_wanted_group() {
        let mocks = Mocks::default();
        let source = crate::discover::Static::new([
            Instance::new("canary-1").with_group("canary"),
            Instance::new("stable-1").with_group("stable"),
        ]);
        let balance = Balance::new(source, mocks.connect(), RoundRobin::new(), Filter::default().group("stable"));
        for _ in 0..3 {
            assert_eq!(answer(balance.clone(), request()).await, "stable-1");
        }
        assert_eq!(mocks.calls("canary-1"), 0);
    }

    #[tokio::test]
    async fn no_endpoints_is_unavailable_and_unprocessed() {
        let mocks = Mocks::default();
        let balance = Balance::new(
            crate::discover::Static::new(Vec::<Instance>::new()),
            mocks.connect(),
            RoundRobin::new(),
            Filter::default(),
        );
        let status = balance.oneshot(request()).await.expect_err("nowhere to go");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.is_unprocessed());
        assert!(status.message().contains("Svc.m"), "{status}");
    }

    #[tokio::test]
    async fn what_the_source_has_ready_is_the_first_set() {
        let mocks = Mocks::default();
        let (changes, source) = mpsc::unbounded();
        changes.unbounded_send(Ok(Change::Insert("early".into(), Instance::new("early")))).expect("open");
        let balance = Balance::new(source, mocks.connect(), RoundRobin::new(), Filter::default());
        assert_eq!(answer(balance.clone(), request()).await, "early");

        // Later changes arrive in the background and are used once applied.
        changes.unbounded_send(Ok(Change::Insert("late".into(), Instance::new("late")))).expect("open");
        while balance.addresses().len() != 2 {
            tokio::task::yield_now().await;
        }
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..2 {
            seen.push(answer(balance.clone(), request()).await);
        }
        seen.sort();
        assert_eq!(seen, ["early", "late"]);
    }

    #[tokio::test]
    async fn a_source_with_nothing_yet_fails_calls_at_once_as_unprocessed() {
        let mocks = Mocks::default();
        let (_changes, source) = mpsc::unbounded::<Result<Change, Status>>();
        let balance = Balance::new(source, mocks.connect(), RoundRobin::new(), Filter::default());
        let status = balance.oneshot(request()).await.expect_err("nothing discovered");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.is_unprocessed(), "the retry layer may try again later");
    }

    #[tokio::test(start_paused = true)]
    async fn a_latency_average_fades_without_samples_and_resets_on_a_new_connection() {
        struct Reconnecting(Arc<AtomicU64>);
        impl Available for Reconnecting {
            fn is_available(&self) -> bool {
                true
            }
            fn generation(&self) -> u64 {
                self.0.load(Ordering::SeqCst)
            }
        }
        let connects = Arc::new(AtomicU64::new(1));
        let endpoint = Endpoint::new(Instance::new("a"), Reconnecting(connects.clone()));
        let second = 1_000_000_000;
        endpoint.observe(std::time::Duration::from_millis(20), 0);
        assert_eq!(endpoint.view(0).latency_ewma_ns, 20_000_000);
        // One decay constant later the average is down by a factor of e.
        let later = endpoint.view(5 * second).latency_ewma_ns;
        assert!((7_300_000..=7_400_000).contains(&later), "{later}");
        // Long silence: it fades to almost nothing, but never to 0 ("unknown").
        assert_eq!(endpoint.view(600 * second).latency_ewma_ns, 1);

        // A new sample blends into what is left: 1 + 20 ms / 5.
        endpoint.observe(std::time::Duration::from_millis(20), 600 * second);
        assert_eq!(endpoint.view(600 * second).latency_ewma_ns, 4_000_001);
        connects.fetch_add(1, Ordering::SeqCst);
        assert_eq!(endpoint.view(600 * second).latency_ewma_ns, 0, "a new connection: no average");
    }

    #[tokio::test]
    async fn calls_in_flight_steer_least_active() {
        let mocks = Mocks { closed_gates: true, ..Mocks::default() };
        let balance = Balance::new(
            crate::discover::Static::new(["a", "b"]),
            mocks.connect(),
            LeastActive::new(),
            Filter::default(),
        );
        // The first call is held at whichever endpoint it went to; the next must go to the other.
        let record = PickRecord::new();
        let mut ctx = Context::new();
        ctx.set_pick_record(Some(record.clone()));
        let held = tokio::spawn(balance.clone().oneshot(request().with_ctx(ctx)));
        while record.get().is_none() {
            tokio::task::yield_now().await;
        }
        let first = record.get().map(|a| a.to_string()).unwrap_or_default();
        let second = PickRecord::new();
        let mut ctx = Context::new();
        ctx.set_pick_record(Some(second.clone()));
        let other = tokio::spawn(balance.clone().oneshot(request().with_ctx(ctx)));
        while second.get().is_none() {
            tokio::task::yield_now().await;
        }
        assert_ne!(second.get().map(|a| a.to_string()), Some(first));
        held.abort();
        other.abort();
    }

    /// An endpoint that answers with its address, is up or down as its switch says, and counts
    /// how often the balancer asked.
    #[derive(Clone)]
    struct Switched {
        address: Arc<str>,
        up: Arc<AtomicBool>,
        looks: Arc<AtomicUsize>,
    }

    impl Available for Switched {
        fn is_available(&self) -> bool {
            self.looks.fetch_add(1, Ordering::Relaxed);
            self.up.load(Ordering::Relaxed)
        }
    }

    /// Endpoint mocks that answer every call at once with their `address`.
    macro_rules! answers_with_its_address {
        ($($mock:ty),*) => {$(
            impl Service<Request> for $mock {
                type Response = Response;
                type Error = Status;
                type Future = futures::future::Ready<Result<Response, Status>>;

                fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
                    Poll::Ready(Ok(()))
                }

                fn call(&mut self, _: Request) -> Self::Future {
                    futures::future::ready(Ok(Response::new(Bytes::copy_from_slice(self.address.as_bytes()))))
                }
            }
        )*};
    }

    answers_with_its_address!(Switched, Probed);

    /// Each endpoint's switch, by address.
    type Switches = Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>;

    /// `count` switched endpoints `e0`, `e1`, ... behind a balancer with `picker`, all up; their
    /// switches, and the one counter of looks they share.
    fn switched<P: Pick>(
        count: usize,
        picker: P,
    ) -> (Balance<impl Connect<Service = Switched>, P>, Switches, Arc<AtomicUsize>) {
        let switches = Arc::new(Mutex::new(HashMap::new()));
        let looks = Arc::new(AtomicUsize::new(0));
        let (made, counter) = (switches.clone(), looks.clone());
        let connect = move |instance: &Instance| {
            let up = Arc::new(AtomicBool::new(true));
            made.lock().expect("not poisoned").insert(instance.address.to_string(), up.clone());
            Switched { address: instance.address.clone(), up, looks: counter.clone() }
        };
        let addresses: Vec<String> = (0..count).map(|i| format!("e{i}")).collect();
        (Balance::new(crate::discover::Static::new(addresses), connect, picker, Filter::default()), switches, looks)
    }

    /// How many endpoints each of 1,000 picks through `picker` over 2,000 endpoints looks at,
    /// and how many endpoints served them.
    async fn looks_per_pick<P: Pick>(picker: P, ctx: impl Fn() -> Context) -> (usize, usize) {
        let (balance, _, looks) = switched(2_000, picker);
        answer(balance.clone(), request()).await;
        looks.store(0, Ordering::SeqCst);
        let mut served = std::collections::HashSet::new();
        for _ in 0..1_000 {
            served.insert(answer(balance.clone(), request().with_ctx(ctx())).await);
        }
        // The paused clock never makes the ready set stale, so no rebuild looks at all 2,000.
        (looks.load(Ordering::SeqCst) / 1_000, served.len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_pick_looks_at_the_endpoints_it_draws_whatever_the_set_s_size() {
        // A pick that read every endpoint would look 2,000 times.
        assert_eq!(looks_per_pick(P2c::new(), Context::new).await.0, 2);
        assert_eq!(looks_per_pick(Random::new(), Context::new).await.0, 1);
        assert_eq!(looks_per_pick(LeastActive::new(), Context::new).await.0, LeastActive::DRAWN);
        let (looks, served) = looks_per_pick(RoundRobin::new(), Context::new).await;
        assert_eq!((looks, served), (1, 1_000), "in turn: 1,000 picks, 1,000 endpoints");
        let keyed = || {
            let mut ctx = Context::new();
            ctx.hints_mut().hash_key = Some(fastrand::u64(..));
            ctx
        };
        let (looks, served) = looks_per_pick(ConsistentHash::with_replicas(16), keyed).await;
        assert_eq!(looks, 1);
        assert!(served > 300, "keys spread over the ring: {served} endpoints served");
        let (looks, served) = looks_per_pick(P2c::new(), Context::new).await;
        assert!(served > 300, "the draws cover the set: {served} endpoints served, {looks} looks each");
        let pinned = || {
            let mut ctx = Context::new();
            ctx.hints_mut().pin = Some("e1234".into());
            ctx
        };
        assert_eq!(looks_per_pick(WeightedRoundRobin::new(), pinned).await, (1, 1), "a pin is looked up");
        let (looks, served) = looks_per_pick(WeightedRoundRobin::new(), Context::new).await;
        assert_eq!((looks, served), (1, 1_000), "equal weights, in turn");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuild_that_finds_nothing_changed_keeps_a_picker_s_cycle() {
        let (balance, _, _) = switched(10, WeightedRoundRobin::new());
        let mut served = Vec::new();
        for _ in 0..3 {
            served.push(answer(balance.clone(), request()).await);
        }
        // The ready set is rebuilt at the next pick: the same endpoints, so the same set.
        tokio::time::advance(READY_REFRESH).await;
        served.push(answer(balance.clone(), request()).await);
        assert_eq!(served, ["e0", "e1", "e2", "e3"], "the rotation goes on rather than starting again");
    }

    /// A picker that does not draw: the first eligible endpoint that is not excluded.
    #[derive(Debug)]
    struct First;

    impl Pick for First {
        fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
            let candidates = Candidates::new(endpoints, ctx)?;
            Ok(candidates.pinned().unwrap_or(candidates.first()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_picker_that_does_not_draw_reads_every_ready_endpoint() {
        assert_eq!(looks_per_pick(First, Context::new).await, (2_000, 1));

        // With all but one down, the ready set is that one: one look per pick.
        let (balance, switches, looks) = switched(2_000, First);
        answer(balance.clone(), request()).await;
        for (address, switch) in switches.lock().expect("not poisoned").iter() {
            switch.store(address == "e7", Ordering::SeqCst);
        }
        tokio::time::advance(READY_REFRESH).await;
        assert_eq!(answer(balance.clone(), request()).await, "e7", "the rebuild finds e7 alone");
        looks.store(0, Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(answer(balance.clone(), request()).await, "e7");
        }
        assert_eq!(looks.load(Ordering::SeqCst), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_keyed_pick_among_1_999_dead_endpoints_looks_up_one_point_of_the_ring() {
        let picker = Arc::new(ConsistentHash::new());
        let (balance, switches, looks) = switched(2_000, picker.clone());
        answer(balance.clone(), request()).await;
        for (address, switch) in switches.lock().expect("not poisoned").iter() {
            switch.store(address == "e7", Ordering::SeqCst);
        }
        let keyed = |key: u64| {
            let mut ctx = Context::new();
            ctx.hints_mut().hash_key = Some(key);
            request().with_ctx(ctx)
        };
        tokio::time::advance(READY_REFRESH).await;
        assert_eq!(answer(balance.clone(), keyed(0)).await, "e7", "the rebuild finds e7 alone");
        let steps = picker.steps();
        looks.store(0, Ordering::SeqCst);
        for key in 1..=1_000 {
            assert_eq!(answer(balance.clone(), keyed(key)).await, "e7");
        }
        // Walking the whole ring past the dead endpoints' points would take about 2,000 a pick.
        assert_eq!(picker.steps() - steps, 1_000, "one ring point per pick");
        assert_eq!(looks.load(Ordering::SeqCst), 1_000, "one endpoint read per pick");
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_that_go_down_leave_the_draw_and_come_back_after_the_refresh() {
        let (balance, switches, looks) = switched(10, P2c::new());
        answer(balance.clone(), request()).await;
        let set = |up: bool| {
            for (address, switch) in switches.lock().expect("not poisoned").iter() {
                switch.store(up || address == "e0", Ordering::SeqCst);
            }
        };
        set(false);
        // Every call reaches the one endpoint up, whatever was drawn; a down endpoint drawn
        // makes the ready set stale, and once rebuilt it holds e0 alone.
        for _ in 0..50 {
            assert_eq!(answer(balance.clone(), request()).await, "e0");
        }
        looks.store(0, Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(answer(balance.clone(), request()).await, "e0");
        }
        assert_eq!(looks.load(Ordering::SeqCst), 10, "one look per pick: the others are out of the draw");

        // They come up; the next rebuild, at the latest after READY_REFRESH, takes them back.
        set(true);
        tokio::time::advance(READY_REFRESH).await;
        let mut served = std::collections::HashSet::new();
        for _ in 0..100 {
            served.insert(answer(balance.clone(), request()).await);
        }
        assert!(served.len() > 1, "back in the draw: {served:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sampled_pick_skips_the_endpoints_a_retry_already_tried() {
        let (balance, _, _) = switched(3, P2c::new());
        for _ in 0..50 {
            let mut ctx = Context::new();
            ctx.hints_mut().exclude = vec!["e0".into(), "e1".into()];
            assert_eq!(answer(balance.clone(), request().with_ctx(ctx)).await, "e2");
        }
    }

    /// An endpoint that answers with its address, is proven up when its flag says, counts the
    /// probes it was asked for, and says its probe has an answer when `answered` is notified.
    #[derive(Clone)]
    struct Probed {
        address: Arc<str>,
        proven: Arc<AtomicBool>,
        probes: Arc<AtomicUsize>,
        answered: Arc<tokio::sync::Notify>,
    }

    impl Available for Probed {
        fn is_available(&self) -> bool {
            true
        }

        fn is_unproven(&self) -> bool {
            !self.proven.load(Ordering::Relaxed)
        }

        fn probe(&self) -> Option<BoxFuture<'static, ()>> {
            self.probes.fetch_add(1, Ordering::Relaxed);
            let answered = self.answered.clone();
            Some(Box::pin(async move { answered.notified().await }))
        }
    }

    /// Each probed endpoint's (proven, probes, answered), by address.
    type Probes = Arc<Mutex<HashMap<String, (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<tokio::sync::Notify>)>>>;

    fn probed<P: Pick>(count: usize, picker: P) -> (Balance<impl Connect<Service = Probed>, P>, Probes) {
        let probes: Probes = Arc::default();
        let made = probes.clone();
        let connect = move |instance: &Instance| {
            let (proven, probes, answered) = (Arc::default(), Arc::default(), Arc::new(tokio::sync::Notify::new()));
            let entry = (Arc::clone(&proven), Arc::clone(&probes), Arc::clone(&answered));
            made.lock().expect("not poisoned").insert(instance.address.to_string(), entry);
            Probed { address: instance.address.clone(), proven, probes, answered }
        };
        let addresses: Vec<String> = (0..count).map(|i| format!("e{i}")).collect();
        (Balance::new(crate::discover::Static::new(addresses), connect, picker, Filter::default()), probes)
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_are_probed_as_they_arrive_and_the_proven_ones_drawn_first() {
        let (balance, probes) = probed(10, ConsistentHash::new());
        // Nothing proven yet: the key's owner on the ring takes the call, as it would anyway.
        let owner = answer(balance.clone(), request()).await;
        let counts: Vec<usize> =
            probes.lock().expect("not poisoned").values().map(|(_, p, _)| p.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, vec![1; 10], "each endpoint probed once, when discovered");

        // One other endpoint's probe connects: it is drawn at once, and while the owner is
        // unproven the key goes there.
        let proven = if owner == "e7" { "e3" } else { "e7" };
        let prove = |address: &str| {
            let probes = probes.lock().expect("not poisoned");
            probes[address].0.store(true, Ordering::Relaxed);
            probes[address].2.notify_one();
        };
        let mut changes = balance.changes();
        changes.borrow_and_update();
        prove(proven);
        changes.changed().await.expect("the balancer lives");
        for _ in 0..20 {
            assert_eq!(answer(balance.clone(), request()).await, proven);
        }
        // Every endpoint proven: the owner has its key back.
        for i in 0..10 {
            prove(&format!("e{i}"));
        }
        tokio::time::advance(READY_REFRESH).await;
        assert_eq!(answer(balance.clone(), request()).await, owner);
        let counts: Vec<usize> =
            probes.lock().expect("not poisoned").values().map(|(_, p, _)| p.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, vec![1; 10], "probed once each: picks do not probe");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_avoid_unproven_endpoints_while_any_is_proven() {
        let (balance, probes) = probed(50, P2c::new());
        answer(balance.clone(), request()).await;
        for i in [4, 9] {
            probes.lock().expect("not poisoned")[&format!("e{i}")].0.store(true, Ordering::Relaxed);
        }
        // Without their probes' answers: the periodic rebuild finds them proven too.
        tokio::time::advance(READY_REFRESH).await;
        let mut served = std::collections::BTreeSet::new();
        for _ in 0..200 {
            served.insert(answer(balance.clone(), request()).await);
        }
        assert_eq!(served, ["e4".to_owned(), "e9".to_owned()].into(), "the two proven endpoints only");
    }

    #[tokio::test(start_paused = true)]
    async fn probed_waits_until_every_probe_has_its_answer() {
        let (balance, probes) = probed(3, P2c::new());
        let prove = |address: &str| {
            let probes = probes.lock().expect("not poisoned");
            probes[address].0.store(true, Ordering::Relaxed);
            probes[address].2.notify_one();
        };
        let waiting = tokio::spawn({
            let balance = balance.clone();
            async move { balance.probed().await }
        });
        balance.first_set().await;
        prove("e0");
        prove("e1");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "e2 has no answer yet");
        prove("e2");
        waiting.await.expect("probed returns once all three answered");
    }
}
