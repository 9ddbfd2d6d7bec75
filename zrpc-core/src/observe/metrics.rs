//! The `metrics` side of observing calls: handles per method, kept per connection, and the
//! events that are not calls (connections, retries, breaker transitions).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};

use super::Side;
use crate::request::Method;
use crate::status::Code;

/// The most methods a connection keeps the handles of; calls of further methods (a process
/// defining that many) ask the recorder for their handles each time.
pub const MAX_CACHED: usize = 1024;

/// Status codes are `u8`s below this.
const CODES: usize = 17;

/// The handles of one method on one side (and, for a client, one endpoint).
#[derive(Debug)]
pub(crate) struct CallMetrics {
    side: Side,
    labels: Vec<Label>,
    /// `calls_total` by code, taken from the recorder on the code's first call.
    calls: [OnceLock<Counter>; CODES],
    duration: Histogram,
    in_flight: Gauge,
}

impl CallMetrics {
    fn new(side: Side, labels: Vec<Label>) -> CallMetrics {
        let (duration, in_flight) = match side {
            Side::Client => ("zrpc_client_call_duration_seconds", "zrpc_client_calls_in_flight"),
            Side::Server => ("zrpc_server_call_duration_seconds", "zrpc_server_calls_in_flight"),
        };
        CallMetrics {
            side,
            duration: metrics::histogram!(duration, labels.iter()),
            in_flight: metrics::gauge!(in_flight, labels.iter()),
            labels,
            calls: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub(crate) fn started(&self) {
        self.in_flight.increment(1.0);
    }

    pub(crate) fn finished(&self, code: Code, elapsed: Duration) {
        self.in_flight.decrement(1.0);
        self.duration.record(elapsed.as_secs_f64());
        let calls = self.calls[usize::from(code.as_u8()).min(CODES - 1)].get_or_init(|| {
            let name = match self.side {
                Side::Client => "zrpc_client_calls_total",
                Side::Server => "zrpc_server_calls_total",
            };
            let labels = self.labels.iter().cloned().chain([Label::new("code", code.name())]);
            metrics::counter!(name, labels.collect::<Vec<_>>())
        });
        calls.increment(1);
    }
}

/// The metric handles of the methods one side of one connection has seen; see the
/// [module docs](super) for which methods get labels of their own.
#[derive(Debug)]
pub struct MetricsCache {
    side: Side,
    endpoint: Option<Arc<str>>,
    methods: HashMap<StaticName, Arc<CallMetrics>, BuildHasherDefault<AddressHasher>>,
    /// The calls of methods named at run time.
    other: Option<Arc<CallMetrics>>,
}

impl MetricsCache {
    /// A cache for one side of one connection; `endpoint` labels a client's calls.
    pub fn new(side: Side, endpoint: Option<Arc<str>>) -> MetricsCache {
        MetricsCache { side, endpoint, methods: HashMap::default(), other: None }
    }

    pub(crate) fn get(&mut self, method: &Method) -> Arc<CallMetrics> {
        let Some(name) = method.as_static() else {
            let other = match self.side {
                Side::Client => "other",
                Side::Server => "unknown",
            };
            let (side, labels) = (self.side, self.labels(other, other));
            return self.other.get_or_insert_with(|| Arc::new(CallMetrics::new(side, labels))).clone();
        };
        if let Some(known) = self.methods.get(&StaticName(name)) {
            return known.clone();
        }
        let method = Method::from(name);
        let made = Arc::new(CallMetrics::new(self.side, self.labels(method.service(), method.name())));
        if self.methods.len() < MAX_CACHED {
            self.methods.insert(StaticName(name), made.clone());
        }
        made
    }

    fn labels(&self, service: &str, method: &str) -> Vec<Label> {
        let mut labels = vec![Label::new("service", service.to_owned()), Label::new("method", method.to_owned())];
        if let (Side::Client, Some(endpoint)) = (self.side, &self.endpoint) {
            labels.push(Label::new("endpoint", endpoint.to_string()));
        }
        labels
    }
}

/// A method name of the program's own, compared and hashed by where it is, not by its bytes:
/// a lookup per call costs a multiplication, not a hash of the name. One name stored at two
/// addresses (two crates' copies of a literal) gets two entries with the same labels, which
/// the recorder resolves to the same metrics.
#[derive(Clone, Copy, Debug)]
struct StaticName(&'static str);

impl PartialEq for StaticName {
    fn eq(&self, other: &StaticName) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for StaticName {}

impl Hash for StaticName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.as_ptr() as usize);
    }
}

/// Hashes a [`StaticName`]'s address: a multiplication by an odd constant (Fibonacci hashing),
/// its high half folded into the low one, which the table indexes by.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Records that a connection opened on `side`.
pub fn connection_opened(side: Side) {
    metrics::counter!("zrpc_connections_opened_total", "side" => side.as_str()).increment(1);
    metrics::gauge!("zrpc_connections", "side" => side.as_str()).increment(1.0);
}

/// Records that a connection on `side` closed.
pub fn connection_closed(side: Side) {
    metrics::gauge!("zrpc_connections", "side" => side.as_str()).decrement(1.0);
}

/// Records that a server closed a connection still in its handshake to make room for a newer
/// one (its `max_handshakes`).
pub fn record_handshake_evicted() {
    metrics::counter!("zrpc_server_handshakes_evicted_total").increment(1);
}

/// Records that a server refused a connection because its `max_connections` were open.
pub fn record_connection_refused() {
    metrics::counter!("zrpc_server_connections_refused_total").increment(1);
}

/// Records that the retry layer resent a call of `method`.
pub fn record_retry(method: &Method) {
    let (service, name) = match method.as_static() {
        Some(_) => (method.service().to_owned(), method.name().to_owned()),
        None => ("other".to_owned(), "other".to_owned()),
    };
    metrics::counter!("zrpc_client_retries_total", "service" => service, "method" => name).increment(1);
}

/// Records that the breaker of `endpoint` moved to `state` (`open`, `half_open`, `closed`).
pub fn record_breaker(endpoint: &str, state: &'static str) {
    metrics::counter!("zrpc_breaker_transitions_total", "endpoint" => endpoint.to_owned(), "state" => state)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_is_found_by_its_name_s_address_and_the_cache_stops_at_its_bound() {
        let mut cache = MetricsCache::new(Side::Server, None);
        let name: &'static str = "Greeter.hello";
        let first = cache.get(&Method::from(name));
        assert!(Arc::ptr_eq(&first, &cache.get(&Method::from(name))), "the same handles for the same name");

        // A program defining more methods than the bound: the cache keeps MAX_CACHED of them and
        // the others still get handles, made afresh each call.
        let names: Vec<&'static str> =
            (0..MAX_CACHED + 10).map(|i| &*Box::leak(format!("Many.m{i}").into_boxed_str())).collect();
        for &name in &names {
            let _ = cache.get(&Method::from(name));
        }
        assert_eq!(cache.methods.len(), MAX_CACHED);
        let last = names[names.len() - 1];
        assert!(!Arc::ptr_eq(&cache.get(&Method::from(last)), &cache.get(&Method::from(last))), "not cached");

        // Names made at run time share one entry, whatever they are: a peer cannot grow it.
        let unknown = cache.get(&Method::from(String::from("Anything.at_all")));
        assert!(Arc::ptr_eq(&unknown, &cache.get(&Method::from(String::from("Other.name")))));
        assert_eq!(cache.methods.len(), MAX_CACHED);
    }
}
