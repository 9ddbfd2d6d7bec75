//! Service discovery: where the endpoints of a service are, and how that changes.
//!
//! A discovery source is a stream of [`Change`]s keyed by address: an [`Instance`] appears
//! (`Insert`, also used to update one), or leaves (`Remove`). The balancing layer consumes it in
//! the background, connects to new endpoints, and drops the connections of those that left.
//! Sources yield whatever is known at once in their first poll, so that a client's first call
//! does not race an empty set.
//!
//! | source | where endpoints come from |
//! |---|---|
//! | [`Static`] | a fixed list |
//! | `zrpc_transport::Dns` | a name's addresses, resolved again on an interval |
//! | `zrpc_transport::etcd::Etcd` | a prefix in etcd, watched (feature `etcd`) |
//! | your own | any `Stream` of `Result<Change, Status>`: [`Discover`] is implemented for every one |
//!
//! Your own source can be as small as a channel your code feeds, since any such stream is a
//! [`Discover`]:
//!
//! ```
//! use futures::channel::mpsc;
//! use zrpc_core::discover::{Change, Discover, Instance};
//!
//! let (changes, source) = mpsc::unbounded::<Result<Change, zrpc_core::Status>>();
//! let instance = Instance::new("tcp://10.0.0.7:7000");
//! changes.unbounded_send(Ok(Change::Insert(instance.address.clone(), instance))).expect("open");
//! fn accepts(_: impl Discover) {}
//! accepts(source); // e.g. `Client::builder().discover(source)`
//! ```
//!
//! Clients may keep only some instances with a [`Filter`] on group, version and state.

mod filter;
mod instance;
mod static_list;

use futures::Stream;

pub use filter::Filter;
pub use instance::{Instance, InstanceState};
pub use static_list::Static;

use crate::Status;

/// A change to the set of endpoints, keyed by address; re-exported from tower.
pub type Change = tower::discover::Change<std::sync::Arc<str>, Instance>;

/// A source of endpoint changes. Errors are logged by the consumer, which keeps the endpoints it
/// has; a source that can recover (a lost watch) keeps going after yielding one.
pub trait Discover: Stream<Item = Result<Change, Status>> + Send + Unpin + 'static {}

impl<T: Stream<Item = Result<Change, Status>> + Send + Unpin + 'static> Discover for T {}
