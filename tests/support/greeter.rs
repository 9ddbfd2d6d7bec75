//! The service of `docs/PROTOCOL.md` §9's worked examples, which the payload tests and the
//! Python client call: no arguments, one, several; a unit, a string, an application error, an
//! option, a `u64` beyond 2^53, bytes.

use serde::{Deserialize, Serialize};
use zrpc::Blob;

/// Why an addition failed.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum MathError {
    /// The sum does not fit an `i64`.
    Overflow,
}

/// The worked examples' service.
#[zrpc::service]
pub trait Greeter {
    /// No arguments, nothing back.
    async fn ping(&self);
    /// `"hello, " + name`.
    async fn hello(&self, name: String) -> String;
    /// `a + b`, or an application error on overflow.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// `Some("max")` for `u64::MAX`, `None` for any other key.
    async fn lookup(&self, key: u64) -> Option<String>;
    /// The bytes reversed.
    async fn reverse(&self, data: Blob) -> Blob;
}

/// The implementation the worked examples' answers come from.
pub(crate) struct Hello;

impl Greeter for Hello {
    async fn ping(&self) {}

    async fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }

    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }

    async fn lookup(&self, key: u64) -> Option<String> {
        (key == u64::MAX).then(|| "max".to_owned())
    }

    async fn reverse(&self, data: Blob) -> Blob {
        data.iter().rev().copied().collect::<Vec<u8>>().into()
    }
}
