//! A named endpoint that serves and calls on every connection: a [`Node`].
//!
//! The model of the small Go framework zrpc descends from: every endpoint is a peer with a
//! name. A node listens (optionally), dials any number of other nodes, serves its services on
//! every connection in both directions, and calls any connected peer by the name it announced,
//! whichever side opened the connection. A function nobody registered is refused with
//! `NotFound`, as on any server.
//!
//! ```no_run
//! # use zrpc_transport::Node;
//! # async fn run() -> std::io::Result<()> {
//! let alice = Node::builder("alice")
//!     // .add_service(GreeterServer::new(Greeter)) — served to every peer, both ways
//!     .listen("tcp://127.0.0.1:7001")
//!     .start()
//!     .await?;
//! let bob = Node::builder("bob").connect("tcp://127.0.0.1:7001").start().await?;
//!
//! let alice_seen_by_bob = bob.peers().wait_for("alice").await;
//! let bob_seen_by_alice = alice.peers().wait_for("bob").await;
//! // GreeterClient::new(bob.peer("alice")).hello(..): bob calls alice by name, and
//! // GreeterClient::new(alice.peer("bob")).hello(..): alice calls bob back on bob's connection.
//! # let _ = (alice_seen_by_bob, bob_seen_by_alice);
//! # Ok(()) }
//! ```
//!
//! Underneath, a node is a [`Server`] (when it listens) and a [`Channel`] per peer it dials,
//! sharing one name, one set of services and one directory ([`Node::peers`]). Dialed
//! connections are made again after they are lost, with the channel's backoff; each new
//! connection is listed anew. Two connections between the same two nodes (each dialed the
//! other) are both used: the newest answers to the name (see
//! [`peers`](crate::peers#two-connections-with-one-name)).
//!
//! With an inbox ([`NodeBuilder::inbox`], feature `durable`), a node records the durable
//! calls peers' outboxes send to its name on every connection, accepted or dialed, and runs
//! their handlers once per message.
//!
//! Settings beyond these go through [`NodeBuilder::server`] and [`NodeBuilder::channel`], which
//! configure the underlying builders as on a plain server or channel (limits, heartbeat, TLS,
//! default deadlines).

use std::fmt;
use std::io;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tower::Service;
use tower::layer::Layer;
use zrpc_core::{Peer, Request, Response, Routable, Router, Status};

use crate::address::{Address, ToAddress};
use crate::channel::{BoxService, Channel, ChannelBuilder, Layers, Served, ServedStack};
use crate::peers::Peers;
use crate::server::{Server, ServerBuilder, ServerHandle};

type ConfigureServer = Box<dyn FnOnce(ServerBuilder) -> ServerBuilder + Send>;
type ConfigureChannel = Arc<dyn Fn(ChannelBuilder) -> ChannelBuilder + Send + Sync>;

/// Builds a [`Node`]; see [`Node::builder`].
pub struct NodeBuilder {
    name: String,
    served: Served,
    listen: Option<Result<Address, String>>,
    dial: Vec<Result<Address, String>>,
    server: Option<ConfigureServer>,
    channel: Option<ConfigureChannel>,
    reflection: bool,
    #[cfg(feature = "durable")]
    inbox: Option<crate::durable::Inbox>,
}

impl NodeBuilder {
    /// Serves `service` on every connection, accepted or dialed: any number may be added.
    pub fn add_service<S: Routable>(mut self, service: S) -> NodeBuilder {
        self.served.router = self.served.router.add_service(service);
        self
    }

    /// Wraps the services in `layer` on every connection; the first layer added is the
    /// outermost. Each layer's service is boxed, as on a [`ChannelBuilder::layer`].
    pub fn layer<L>(mut self, layer: L) -> NodeBuilder
    where
        L: Layer<BoxService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.served.layers.push(layer);
        self
    }

    /// Serves the built-in reflection service, `zrpc.Reflection`, on every connection (the
    /// default), or not (`false`); see [`ServerBuilder::reflection`].
    pub fn reflection(mut self, on: bool) -> NodeBuilder {
        self.reflection = on;
        self
    }

    /// Records the durable calls peers send to this node's name in `inbox`, on every
    /// connection, accepted or dialed, and runs their handlers with the node's services, once
    /// per message (see [`durable`](crate::durable)): peers' outboxes reach the node whichever
    /// side dialed. One dispatcher runs for the node (its server's, when it listens).
    #[cfg(feature = "durable")]
    pub fn inbox(mut self, inbox: crate::durable::Inbox) -> NodeBuilder {
        self.inbox = Some(inbox);
        self
    }

    /// Listens at `address` for peers that dial this node (port 0 picks a free one; see
    /// [`Node::local_addr`]). A node that does not listen only dials.
    pub fn listen(mut self, address: impl ToAddress) -> NodeBuilder {
        self.listen = Some(address.to_address().map_err(|e| e.to_string()));
        self
    }

    /// Dials the node at `address`, and again whenever the connection is lost; any number of
    /// peers may be dialed.
    pub fn connect(mut self, address: impl ToAddress) -> NodeBuilder {
        self.dial.push(address.to_address().map_err(|e| e.to_string()));
        self
    }

    /// Configures the server the node listens with (limits, heartbeat, TLS...). Its name, services,
    /// layers and reflection are the node's.
    pub fn server(mut self, configure: impl FnOnce(ServerBuilder) -> ServerBuilder + Send + 'static) -> NodeBuilder {
        self.server = Some(Box::new(configure));
        self
    }

    /// Configures each channel the node dials with (backoff, limits, TLS...). Its name, services
    /// and layers are the node's.
    pub fn channel(
        mut self,
        configure: impl Fn(ChannelBuilder) -> ChannelBuilder + Send + Sync + 'static,
    ) -> NodeBuilder {
        self.channel = Some(Arc::new(configure));
        self
    }

    /// Binds the listener, if any, and starts serving and dialing. Dialing goes on in the
    /// background: a peer that is not up yet is dialed again with backoff, and listed when it
    /// connects ([`Peers::wait_for`]).
    ///
    /// # Errors
    /// An address that does not parse (`InvalidInput`), or the bind's I/O error.
    pub async fn start(self) -> io::Result<Node> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let dial = self.dial.into_iter().collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        let peers = Peers::new();
        let mut served = self.served;
        if self.reflection {
            served.router = crate::reflection::serve(served.router);
        }
        let mut listening = None;
        if let Some(address) = self.listen {
            let builder = match self.server {
                Some(configure) => configure(Server::builder()),
                None => Server::builder(),
            };
            let builder = builder.name(self.name.clone()).for_node(served.router.clone(), peers.clone());
            #[cfg(feature = "durable")]
            let builder = match &self.inbox {
                Some(inbox) => builder.inbox(inbox.clone()),
                None => builder,
            };
            let server: Server<ServedStack> =
                builder.with_layer(served.layers.clone()).bind(address.map_err(invalid)?).await?;
            let local = server.local_addr().clone();
            let handle = server.handle();
            listening = Some(Listening { local, handle, serving: tokio::spawn(server.serve()) });
        }
        let channels = dial
            .into_iter()
            .map(|address| {
                let builder = match &self.channel {
                    Some(configure) => configure(Channel::builder(address)),
                    None => Channel::builder(address),
                };
                let builder = builder.name(self.name.clone()).served(served.clone()).listed_in(peers.clone());
                #[cfg(feature = "durable")]
                let builder = match &self.inbox {
                    Some(inbox) => builder.records_in(inbox.clone()),
                    None => builder,
                };
                let channel = builder.connect_lazy();
                channel.start();
                channel
            })
            .collect();
        // A node that listens has its server run the inbox's handlers; one that only dials
        // runs them itself.
        #[cfg(feature = "durable")]
        let dispatching = match (&self.inbox, &listening) {
            (Some(inbox), None) => Some(crate::durable::Dispatching::spawn(inbox.clone(), &served, &self.name)),
            _ => None,
        };
        Ok(Node {
            name: self.name.into(),
            peers,
            listening,
            channels,
            #[cfg(feature = "durable")]
            dispatching,
        })
    }
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("served", &self.served)
            .field("listen", &self.listen)
            .field("dial", &self.dial)
            .field("reflection", &self.reflection)
            .finish_non_exhaustive()
    }
}

/// A named endpoint that listens, dials, serves on every connection and calls any peer by name;
/// see the [module docs](self).
pub struct Node {
    name: Arc<str>,
    peers: Peers,
    listening: Option<Listening>,
    channels: Vec<Channel>,
    /// The inbox's handlers, run by the node itself when it does not listen.
    #[cfg(feature = "durable")]
    dispatching: Option<crate::durable::Dispatching>,
}

struct Listening {
    local: Address,
    handle: ServerHandle,
    serving: JoinHandle<io::Result<()>>,
}

impl Node {
    /// Starts building a node that announces itself as `name`.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            served: Served { router: Router::new(), layers: Layers::default() },
            listen: None,
            dial: Vec::new(),
            server: None,
            channel: None,
            reflection: true,
            #[cfg(feature = "durable")]
            inbox: None,
        }
    }

    /// The name this node announces.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address the node listens on, with the real port when bound to port 0; `None` when
    /// it does not listen.
    pub fn local_addr(&self) -> Option<&Address> {
        self.listening.as_ref().map(|listening| &listening.local)
    }

    /// Every connected peer, dialed or accepted, by the name it announced.
    pub fn peers(&self) -> Peers {
        self.peers.clone()
    }

    /// The peer named `name`, to call through a generated client; resolved at each call
    /// ([`Peers::named`]).
    pub fn peer(&self, name: impl Into<Arc<str>>) -> Peer {
        self.peers.named(name)
    }

    /// The channels to the peers this node dials, in the order they were configured.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// Leaves gracefully: the node starts no new calls and takes none (GOAWAY on every
    /// connection), lets calls in progress either way finish (for up to the server's drain
    /// timeout on accepted connections), then closes. Returns once the listener's serving has
    /// ended.
    pub async fn shutdown(self) {
        // Dropping the last clone of a channel drains its connection (see `Channel`).
        drop(self.channels);
        if let Some(listening) = self.listening {
            listening.handle.shutdown();
            let _ = listening.serving.await;
        }
        // An inbox's handlers still running finish; its messages then wait for the next start.
        #[cfg(feature = "durable")]
        if let Some(dispatching) = self.dispatching {
            dispatching.stop().await;
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr())
            .field("peers", &self.peers)
            .field("channels", &self.channels.len())
            .finish()
    }
}
