//! The value stored under an instance's key: the instance as JSON.
//!
//! ```json
//! {"address":"tcp://10.0.0.7:4000","name":"greeter-1","weight":1,"group":"","version":"",
//!  "state":"up","metadata":{}}
//! ```
//!
//! Only `address` is required when reading, and it must parse as an address; the other fields
//! default (weight 1, empty strings, up, no metadata), and unknown fields are ignored, so that
//! other writers and newer versions can add to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zrpc_core::discover::{Instance, InstanceState};

use crate::address::Address;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    address: String,
    #[serde(default)]
    name: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default = "up")]
    state: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

fn up() -> String {
    InstanceState::Up.to_string()
}

/// The JSON value for `instance`.
pub(super) fn encode(instance: &Instance) -> Vec<u8> {
    let record = Record {
        address: instance.address.to_string(),
        name: instance.name.clone(),
        weight: instance.weight,
        group: instance.group.clone(),
        version: instance.version.clone(),
        state: instance.state.to_string(),
        metadata: instance.metadata.clone(),
    };
    // A struct of strings, numbers and a string map always serializes.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The instance a stored value describes, or why it describes none.
pub(super) fn decode(value: &[u8]) -> Result<Instance, String> {
    let record: Record = serde_json::from_slice(value).map_err(|e| format!("not an instance record: {e}"))?;
    let address: Address = record.address.parse().map_err(|e| format!("{e}"))?;
    let state = match record.state.as_str() {
        "up" => InstanceState::Up,
        "draining" => InstanceState::Draining,
        other => return Err(format!("unknown state {other:?}")),
    };
    let mut instance = Instance::from(address)
        .with_name(record.name)
        .with_weight(record.weight)
        .with_group(record.group)
        .with_version(record.version)
        .with_state(state);
    instance.metadata = record.metadata;
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let mut instance = Instance::new("tcp://10.0.0.7:4000")
            .with_name("greeter-1")
            .with_weight(3)
            .with_group("canary")
            .with_version("2.1")
            .with_state(InstanceState::Draining);
        instance.metadata.insert("zone".into(), "eu-1".into());
        let decoded = decode(&encode(&instance)).expect("decodes");
        assert_eq!(decoded, instance);
    }

    #[test]
    fn only_the_address_is_required() {
        let decoded = decode(br#"{"address":"tcp://10.0.0.7:4000","extra":[1,2]}"#).expect("decodes");
        assert_eq!(decoded, Instance::new("tcp://10.0.0.7:4000"));
    }

    #[test]
    fn malformed_values_are_errors() {
        for value in [
            &b"not json"[..],
            br#"{"name":"no address"}"#,
            br#"{"address":"ftp://x:1"}"#,
            br#"{"address":"tcp://x:1","weight":-1}"#,
            br#"{"address":"tcp://x:1","state":"sleeping"}"#,
            b"",
        ] {
            assert!(decode(value).is_err(), "{:?} decoded", String::from_utf8_lossy(value));
        }
    }
}
