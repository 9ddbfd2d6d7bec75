//! What can go wrong in an outbox or an inbox.

use std::path::PathBuf;

/// A durable log refused or failed an operation.
///
/// As a [`Status`](zrpc_core::Status) (what a caller of a generated client sees):
///
/// | variant | code | unprocessed |
/// |---|---|---|
/// | `Full`, `TooManyStreams` | `ResourceExhausted` | yes: nothing was logged |
/// | `NotOneway`, `TooLarge`, `InvalidName`, `InvalidSequence` | `InvalidArgument` | yes |
/// | `Closed`, `Busy` | `Unavailable` | yes |
/// | `Locked`, `Io` | `Unavailable` | yes for an append that failed before its write; an `Io` on the sync of a group fails every call of the group, whose records may or may not be on disk |
/// | `Corrupt` | `DataLoss` | – (at open, not per call) |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// The log holds its configured limit of undelivered (outbox) or unhandled (inbox) bytes;
    /// nothing was dropped to make room.
    #[error("durable log {} is full: {used} bytes waiting, limit {limit}", path.display())]
    Full {
        /// The log's directory.
        path: PathBuf,
        /// Bytes of messages waiting.
        used: u64,
        /// The configured limit.
        limit: u64,
    },
    /// An inbox tracks its configured limit of streams (sender, outbox) and a message would
    /// start another; nothing was recorded. Streams with nothing unhandled are forgotten after
    /// the inbox's `stream_retention`, which makes room.
    #[error("durable inbox {} tracks its limit of {limit} streams", path.display())]
    TooManyStreams {
        /// The inbox's directory.
        path: PathBuf,
        /// The configured limit.
        limit: usize,
    },
    /// A call that expects a response was sent through an outbox, which answers once the
    /// message is logged, long before any response could exist.
    #[error("{method} is not oneway: only `#[zrpc(oneway)]` methods can be sent through a durable outbox")]
    NotOneway {
        /// The method's wire name.
        method: String,
    },
    /// A message larger than a durable log takes (16 MiB, the protocol's default frame limit,
    /// since it must fit in one request to be delivered).
    #[error("a durable message of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A sender or destination name that a log cannot record: names are 1 to 255 bytes of
    /// UTF-8 (as endpoint names in a HELLO).
    #[error("durable log names are 1 to 255 bytes, not {len}: {name:?}")]
    InvalidName {
        /// The name, as given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A sequence past the last a durable log holds (2^63 − 1): a peer's message, or the next
    /// of a destination whose log says it is there (no outbox gets that far; a log it was
    /// written to by something else may say so).
    #[error("durable sequence {sequence} is past the last a durable log holds")]
    InvalidSequence {
        /// The sequence.
        sequence: u64,
    },
    /// The log's writer has stopped: the outbox was closed, or its thread could not start.
    #[error("durable log {} is closed", path.display())]
    Closed {
        /// The log's directory.
        path: PathBuf,
    },
    /// The log's writer has more commands queued than its bound: try again later.
    #[error("durable log {} is busy: its queue of commands is full", path.display())]
    Busy {
        /// The log's directory.
        path: PathBuf,
    },
    /// Another process has the log open: two writers would interleave sequences.
    #[error("durable log {} is open in another process", path.display())]
    Locked {
        /// The log's directory.
        path: PathBuf,
    },
    /// A record other than a torn tail failed its checksum: the log does not open, since
    /// skipping it would silently lose a message that was acknowledged.
    #[error("durable log {} is corrupt: {what}", path.display())]
    Corrupt {
        /// The log's directory.
        path: PathBuf,
        /// Which file, at which offset, and what was wrong.
        what: String,
    },
    /// Reading, writing or syncing the log failed.
    #[error("durable log {} could not be read or written", path.display())]
    Io {
        /// The log's directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<DurableError> for zrpc_core::Status {
    /// The status a caller sees, by the table in [`DurableError`]'s docs.
    fn from(e: DurableError) -> zrpc_core::Status {
        use zrpc_core::Status;
        let message = e.to_string();
        match e {
            DurableError::Full { .. } | DurableError::TooManyStreams { .. } => {
                Status::resource_exhausted(message).mark_unprocessed()
            }
            DurableError::NotOneway { .. }
            | DurableError::TooLarge { .. }
            | DurableError::InvalidName { .. }
            | DurableError::InvalidSequence { .. } => Status::invalid_argument(message).mark_unprocessed(),
            DurableError::Closed { .. } | DurableError::Busy { .. } | DurableError::Locked { .. } => {
                Status::unavailable(message).mark_unprocessed()
            }
            DurableError::Io { .. } => Status::unavailable(message),
            DurableError::Corrupt { .. } => Status::data_loss(message),
        }
    }
}

/// The same failure again, for the next caller of a failed batch (an I/O error is not `Clone`).
pub(crate) fn again(e: &DurableError) -> DurableError {
    match e {
        DurableError::Io { path, source } => {
            DurableError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        DurableError::Corrupt { path, what } => DurableError::Corrupt { path: path.clone(), what: what.clone() },
        other => DurableError::Io { path: Default::default(), source: std::io::Error::other(other.to_string()) },
    }
}
