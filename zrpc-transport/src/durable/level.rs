//! How far a durable write has gone when the call that made it returns.

/// How far a durable write has gone before the call that made it returns (an append at the
/// sender) or the message is acknowledged (a record at the receiver).
///
/// Each end chooses its own; a message survives what both ends survive. See the module docs,
/// "Durability levels", for what each costs on this project's machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Written to the operating system (one `write` per batch), not synced: survives the process
    /// being killed (`kill -9`, the OOM killer, a panic that aborts), not a kernel crash or a
    /// power loss, which lose what the page cache had not written back yet.
    #[default]
    Process,
    /// Written and synced (`fdatasync`) before returning: survives a power loss too. Concurrent
    /// writers share one sync (group commit), so the rate is far above the disk's syncs per
    /// second, at the cost of each write waiting for the sync in progress to finish.
    Power,
}
