//! fjall: an LSM tree with a journal.
//!
//! A write batch goes to the journal; `PersistMode::Buffer` hands it to the OS (survives a
//! killed process), `PersistMode::SyncData` fdatasyncs it. Removal writes tombstones, which
//! compaction drops later, in the background.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::store::{Key, Level, Recovered, Store, split};
use crate::BoxError;

/// A fjall database with one keyspace.
pub(crate) struct Fjall {
    db: Database,
    outbox: Keyspace,
}

impl std::fmt::Debug for Fjall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fjall").finish_non_exhaustive()
    }
}

impl Fjall {
    /// Opens or creates the database in `dir/fjall`.
    pub(crate) fn open(dir: &Path) -> Result<Fjall, BoxError> {
        let db = Database::builder(dir.join("fjall")).open()?;
        let outbox = db.keyspace("outbox", KeyspaceCreateOptions::default)?;
        Ok(Fjall { db, outbox })
    }
}

fn mode(level: Level) -> PersistMode {
    match level {
        Level::Process => PersistMode::Buffer,
        Level::Power => PersistMode::SyncData,
    }
}

impl Store for Fjall {
    fn append(&mut self, batch: &[(Key, &[u8])], level: Level) -> Result<(), BoxError> {
        let mut write = self.db.batch().durability(Some(mode(level)));
        for (key, payload) in batch {
            write.insert(&self.outbox, key.as_slice(), *payload);
        }
        write.commit()?;
        Ok(())
    }

    fn remove(&mut self, keys: &[Key], level: Level) -> Result<(), BoxError> {
        let mut write = self.db.batch().durability(Some(mode(level)));
        for key in keys {
            write.remove(&self.outbox, key.as_slice());
        }
        write.commit()?;
        Ok(())
    }

    fn recover(&mut self) -> Result<Recovered, BoxError> {
        let mut destinations = 0;
        let mut from: Vec<u8> = Vec::new();
        while let Some(first) = self.outbox.range(from.as_slice()..).next() {
            let first = first.key()?;
            let Some((dest, _)) = split(&first) else { break };
            let bound = dest.saturating_add(1).to_be_bytes();
            if let Some(last) = self.outbox.range(first.as_ref()..bound.as_slice()).next_back() {
                last.key()?;
            }
            destinations += 1;
            from = bound.to_vec();
        }
        Ok(Recovered { destinations, messages: None })
    }

    fn scan(&mut self) -> Result<u64, BoxError> {
        let mut n = 0;
        for entry in self.outbox.iter() {
            std::hint::black_box(entry.value()?);
            n += 1;
        }
        Ok(n)
    }
}
