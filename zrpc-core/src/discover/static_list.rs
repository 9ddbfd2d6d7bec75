//! A fixed list of endpoints.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use super::{Change, Instance};
use crate::Status;

/// Discovery from a fixed list: yields every instance once, then nothing.
#[derive(Clone, Debug)]
pub struct Static {
    pending: std::vec::IntoIter<Instance>,
}

impl Static {
    /// The given endpoints: addresses (`"tcp://127.0.0.1:4000"`) or [`Instance`]s.
    pub fn new<I, T>(endpoints: I) -> Static
    where
        I: IntoIterator<Item = T>,
        T: Into<Instance>,
    {
        Static { pending: endpoints.into_iter().map(Into::into).collect::<Vec<_>>().into_iter() }
    }
}

impl Stream for Static {
    type Item = Result<Change, Status>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.pending.next() {
            Some(instance) => Poll::Ready(Some(Ok(Change::Insert(instance.address.clone(), instance)))),
            // The list never changes: stay open, so the set is kept rather than ended.
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;

    #[tokio::test]
    async fn yields_each_instance_then_waits() {
        let mut source = Static::new(["tcp://a:1", "tcp://b:2"]);
        let mut seen = Vec::new();
        while let Some(Some(Ok(Change::Insert(address, instance)))) = source.next().now_or_never() {
            assert_eq!(address, instance.address);
            seen.push(address.to_string());
        }
        assert_eq!(seen, ["tcp://a:1", "tcp://b:2"]);
        assert!(source.next().now_or_never().is_none(), "then pending, not ended");
    }
}
