//! A minimal append-only segment log, written for this measurement only.
//!
//! One file of records: `len u32 | crc u32 | kind u8 | key [u8; 12] | payload`, little-endian,
//! where `len` counts the bytes after `crc` and `crc` is the CRC-32 (IEEE, `crc32fast`) of those
//! bytes. A batch is encoded into one buffer and written with one `write`; the power level adds one
//! `fdatasync`. Removal appends one ack record per destination: "delivered up to this sequence",
//! since delivery is in order. Reopening reads the whole file, checks every CRC, and truncates a torn
//! tail. Compaction (dropping segments whose messages are all acknowledged) is not measured: a
//! real log would roll to a new file every N MiB and delete whole files.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::store::{Key, Level, Recovered, Store, split};
use crate::BoxError;

const MESSAGE: u8 = 0;
const ACK: u8 = 1;
/// `len` and `crc`.
const HEADER: usize = 8;
/// `kind` and `key`.
const FIXED: usize = 13;

/// One destination's messages in the log.
#[derive(Debug, Default)]
struct Stream {
    /// The first undelivered sequence.
    first: u64,
    /// The last sequence appended.
    last: u64,
}

/// What reading the whole log found.
#[derive(Debug)]
struct Scan {
    destinations: usize,
    /// Messages not yet acknowledged.
    live: u64,
}

/// The log file and a reusable write buffer.
#[derive(Debug)]
pub(crate) struct SegLog {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl SegLog {
    /// Opens or creates `dir/outbox.log`, appending at its end.
    pub(crate) fn open(dir: &Path) -> Result<SegLog, BoxError> {
        let path = dir.join("outbox.log");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(SegLog { path, file, buf: Vec::with_capacity(64 * 1024) })
    }

    fn record(&mut self, kind: u8, key: &Key, payload: &[u8]) -> Result<(), BoxError> {
        let len = u32::try_from(FIXED + payload.len())?;
        let start = self.buf.len();
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.push(kind);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(payload);
        let crc = crc32fast::hash(&self.buf[start + HEADER..]);
        self.buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    fn flush(&mut self, level: Level) -> Result<(), BoxError> {
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        if level == Level::Power {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Reads every record from the start; a record that is cut short or fails its CRC ends the
    /// log there (a real log truncates the file to that point and says so in a log line).
    fn read_all(&self) -> Result<Scan, BoxError> {
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&self.path)?);
        let mut dests: BTreeMap<u32, Stream> = BTreeMap::new();
        let mut body = Vec::with_capacity(1024);
        let mut header = [0; HEADER];
        let mut live = 0_u64;
        loop {
            if reader.read_exact(&mut header).is_err() {
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if !(FIXED..=1 << 24).contains(&len) {
                break;
            }
            body.resize(len, 0);
            if reader.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
                break;
            }
            let Some((dest, seq)) = split(&body[1..FIXED]) else { break };
            let stream = dests.entry(dest).or_default();
            if body[0] == MESSAGE {
                stream.last = seq;
                live += 1;
            } else if seq >= stream.first {
                live = live.saturating_sub(seq + 1 - stream.first);
                stream.first = seq + 1;
            }
        }
        Ok(Scan { destinations: dests.len(), live })
    }
}

impl Store for SegLog {
    fn append(&mut self, batch: &[(Key, &[u8])], level: Level) -> Result<(), BoxError> {
        for (key, payload) in batch {
            self.record(MESSAGE, key, payload)?;
        }
        self.flush(level)
    }

    fn remove(&mut self, keys: &[Key], level: Level) -> Result<(), BoxError> {
        // One ack per destination: the highest sequence removed, since removal is in order.
        let mut highest: BTreeMap<u32, Key> = BTreeMap::new();
        for key in keys {
            if let Some((dest, _)) = split(key) {
                highest.insert(dest, *key);
            }
        }
        for key in highest.values() {
            self.record(ACK, key, &[])?;
        }
        self.flush(level)
    }

    fn recover(&mut self) -> Result<Recovered, BoxError> {
        let scan = self.read_all()?;
        Ok(Recovered { destinations: scan.destinations, messages: Some(scan.live) })
    }

    fn scan(&mut self) -> Result<u64, BoxError> {
        Ok(self.read_all()?.live)
    }
}
