//! redb: a copy-on-write B-tree in one file.
//!
//! redb has two durabilities: `Immediate` (fsync at commit) and `None`, which keeps the commit in
//! the process's memory until a later `Immediate` commit; a killed process loses every `None`
//! commit since the last `Immediate` one. So both of the outbox's levels need `Immediate`; the
//! `redb-none` rows are shown only as what redb costs without its fsync.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{Key, Level, Recovered, Store, split};
use crate::BoxError;

const TABLE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("outbox");

/// A redb database; `unsafe_none` commits process-level writes with `Durability::None`.
#[derive(Debug)]
pub(crate) struct Redb {
    db: Database,
    unsafe_none: bool,
}

impl Redb {
    /// Opens or creates `dir/outbox.redb`.
    pub(crate) fn open(dir: &Path, unsafe_none: bool) -> Result<Redb, BoxError> {
        let db = Database::create(dir.join("outbox.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        Ok(Redb { db, unsafe_none })
    }

    fn durability(&self, level: Level) -> Durability {
        if level == Level::Process && self.unsafe_none { Durability::None } else { Durability::Immediate }
    }
}

impl Store for Redb {
    fn append(&mut self, batch: &[(Key, &[u8])], level: Level) -> Result<(), BoxError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability(level))?;
        {
            let mut table = txn.open_table(TABLE)?;
            for (key, payload) in batch {
                table.insert(key.as_slice(), *payload)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn remove(&mut self, keys: &[Key], level: Level) -> Result<(), BoxError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability(level))?;
        {
            let mut table = txn.open_table(TABLE)?;
            for key in keys {
                table.remove(key.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn recover(&mut self) -> Result<Recovered, BoxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut destinations = 0;
        let mut from: Vec<u8> = Vec::new();
        // First key of each destination, then the last below the next destination.
        while let Some(entry) = table.range(from.as_slice()..)?.next() {
            let (first, _) = entry?;
            let Some((dest, _)) = split(first.value()) else { break };
            let bound = dest.saturating_add(1).to_be_bytes();
            if let Some(last) = table.range(first.value()..bound.as_slice())?.next_back() {
                last?;
            }
            destinations += 1;
            from = bound.to_vec();
        }
        Ok(Recovered { destinations, messages: None })
    }

    fn scan(&mut self) -> Result<u64, BoxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut n = 0;
        for entry in table.iter()? {
            let (_, value) = entry?;
            std::hint::black_box(value.value());
            n += 1;
        }
        Ok(n)
    }
}
