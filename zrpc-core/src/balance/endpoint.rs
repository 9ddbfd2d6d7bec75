//! What a balancer sees of one endpoint: a borrowed, read-only snapshot.
//!
//! The balancing layer owns the connections and keeps the live numbers (in-flight count, latency
//! EWMA, health); for each call it lends the picker a slice of [`EndpointView`]s read from that
//! state. A view borrows the address instead of owning it, so building the slice costs loads and
//! no reference-count traffic.

/// One endpoint as a [`Pick`](super::Pick) sees it.
///
/// An endpoint is *eligible* when it is available and its weight is not zero; pickers only ever
/// choose eligible endpoints. Weight 0 is how an endpoint is drained: it keeps its connections
/// and in-flight calls but receives no new ones, under every balancer.
///
/// # Examples
///
/// ```
/// use zrpc_core::balance::EndpointView;
///
/// let view = EndpointView::new("10.0.0.7:7070").with_weight(3).with_in_flight(2);
/// assert_eq!(view.address, "10.0.0.7:7070");
/// assert!(view.is_eligible());
/// assert!(!view.with_weight(0).is_eligible());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct EndpointView<'a> {
    /// The endpoint's address, as the discovery layer names it; hints refer to it.
    pub address: &'a str,
    /// Relative weight; 1 unless discovery says otherwise, 0 to drain.
    pub weight: u32,
    /// Calls sent to this endpoint that have not completed yet.
    pub in_flight: u64,
    /// Exponentially weighted moving average of call latency in nanoseconds; 0 when unknown
    /// (no call has completed yet).
    pub latency_ewma_ns: u64,
    /// Whether the endpoint can take calls now: connected and not held open by a circuit
    /// breaker.
    pub available: bool,
}

impl<'a> EndpointView<'a> {
    /// An available endpoint of weight 1 with no calls in flight and unknown latency.
    pub const fn new(address: &'a str) -> EndpointView<'a> {
        EndpointView { address, weight: 1, in_flight: 0, latency_ewma_ns: 0, available: true }
    }

    /// Sets the weight.
    pub const fn with_weight(mut self, weight: u32) -> EndpointView<'a> {
        self.weight = weight;
        self
    }

    /// Sets the number of calls in flight.
    pub const fn with_in_flight(mut self, in_flight: u64) -> EndpointView<'a> {
        self.in_flight = in_flight;
        self
    }

    /// Sets the latency EWMA, in nanoseconds (0 = unknown).
    pub const fn with_latency_ewma_ns(mut self, latency_ewma_ns: u64) -> EndpointView<'a> {
        self.latency_ewma_ns = latency_ewma_ns;
        self
    }

    /// Sets whether the endpoint is available.
    pub const fn with_available(mut self, available: bool) -> EndpointView<'a> {
        self.available = available;
        self
    }

    /// Whether a picker may choose this endpoint: available and of non-zero weight.
    pub const fn is_eligible(&self) -> bool {
        self.available && self.weight > 0
    }
}
