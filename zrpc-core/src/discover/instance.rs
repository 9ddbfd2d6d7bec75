//! What discovery knows about one endpoint.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Whether an instance should receive calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InstanceState {
    /// Serving.
    #[default]
    Up,
    /// Shutting down or taken out of rotation: finish calls, start none.
    Draining,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Up => "up",
            InstanceState::Draining => "draining",
        })
    }
}

/// One endpoint of a service: its address and what a client may filter or weigh it by.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// Where to connect, e.g. `tcp://10.0.0.7:4000`.
    pub address: Arc<str>,
    /// The endpoint's name (its server name), for messages.
    pub name: String,
    /// Relative share of calls for weighted balancers; 0 drains it.
    pub weight: u32,
    /// Deployment group (e.g. a region or a canary set).
    pub group: String,
    /// Version of the service it runs.
    pub version: String,
    /// Whether it takes calls.
    pub state: InstanceState,
    /// Anything else the registry carries.
    pub metadata: BTreeMap<String, String>,
}

impl Instance {
    /// An instance at `address` with weight 1, no group or version, up.
    pub fn new(address: impl Into<Arc<str>>) -> Instance {
        Instance {
            address: address.into(),
            name: String::new(),
            weight: 1,
            group: String::new(),
            version: String::new(),
            state: InstanceState::Up,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight;
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Instance {
        self.name = name.into();
        self
    }

    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Instance {
        self.group = group.into();
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Instance {
        self.version = version.into();
        self
    }

    /// Sets the state.
    pub fn with_state(mut self, state: InstanceState) -> Instance {
        self.state = state;
        self
    }
}

impl From<&str> for Instance {
    fn from(address: &str) -> Instance {
        Instance::new(address)
    }
}

impl From<String> for Instance {
    fn from(address: String) -> Instance {
        Instance::new(address)
    }
}
