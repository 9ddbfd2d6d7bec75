//! SQLite (rusqlite, bundled) in WAL mode.
//!
//! `synchronous = OFF` writes the WAL at commit without syncing it (survives a killed process);
//! `synchronous = FULL` fsyncs the WAL at every commit. The table is `WITHOUT ROWID`, keyed by
//! (destination, sequence), so that messages are stored in delivery order.

use std::path::Path;

use rusqlite::Connection;

use super::store::{Key, Level, Recovered, Store, split};
use crate::BoxError;

/// A SQLite database in WAL mode.
#[derive(Debug)]
pub(crate) struct Sqlite {
    conn: Connection,
    level: Option<Level>,
}

impl Sqlite {
    /// Opens or creates `dir/outbox.sqlite`.
    pub(crate) fn open(dir: &Path) -> Result<Sqlite, BoxError> {
        let conn = Connection::open(dir.join("outbox.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                dest INTEGER NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
                PRIMARY KEY (dest, seq)) WITHOUT ROWID",
        )?;
        Ok(Sqlite { conn, level: None })
    }

    fn set_level(&mut self, level: Level) -> Result<(), BoxError> {
        if self.level != Some(level) {
            let synchronous = if level == Level::Power { "FULL" } else { "OFF" };
            self.conn.pragma_update(None, "synchronous", synchronous)?;
            self.level = Some(level);
        }
        Ok(())
    }
}

/// A key as the two SQL integers; sequences stay below 2^63 in any run.
fn columns(key: &Key) -> Result<(i64, i64), BoxError> {
    let (dest, seq) = split(key).ok_or("a key is 12 bytes")?;
    Ok((i64::from(dest), i64::try_from(seq)?))
}

impl Store for Sqlite {
    fn append(&mut self, batch: &[(Key, &[u8])], level: Level) -> Result<(), BoxError> {
        self.set_level(level)?;
        let txn = self.conn.transaction()?;
        {
            let mut insert = txn.prepare_cached("INSERT INTO outbox (dest, seq, body) VALUES (?1, ?2, ?3)")?;
            for (key, payload) in batch {
                let (dest, seq) = columns(key)?;
                insert.execute((dest, seq, payload))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn remove(&mut self, keys: &[Key], level: Level) -> Result<(), BoxError> {
        self.set_level(level)?;
        let txn = self.conn.transaction()?;
        {
            let mut delete = txn.prepare_cached("DELETE FROM outbox WHERE dest = ?1 AND seq = ?2")?;
            for key in keys {
                delete.execute(columns(key)?)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn recover(&mut self) -> Result<Recovered, BoxError> {
        // Each destination's first and last sequence through the primary key (two index
        // lookups), as the other engines do; `GROUP BY dest` would read every row.
        let mut first =
            self.conn.prepare("SELECT dest, seq FROM outbox WHERE dest >= ?1 ORDER BY dest, seq LIMIT 1")?;
        let mut last = self.conn.prepare("SELECT MAX(seq) FROM outbox WHERE dest = ?1")?;
        let (mut destinations, mut from) = (0, 0_i64);
        while let Some((dest, seq)) = first
            .query_row([from], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?
        {
            let max: i64 = last.query_row([dest], |row| row.get(0))?;
            std::hint::black_box((seq, max));
            destinations += 1;
            from = dest + 1;
        }
        Ok(Recovered { destinations, messages: None })
    }

    fn scan(&mut self) -> Result<u64, BoxError> {
        let mut query = self.conn.prepare("SELECT dest, seq, body FROM outbox")?;
        let mut rows = query.query(())?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            std::hint::black_box(row.get_ref(2)?.as_blob()?);
            n += 1;
        }
        Ok(n)
    }
}
