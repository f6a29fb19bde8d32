//! The seam between the store and durable storage.
//!
//! The store façade, the in-flight map and the sweeper talk to storage only through
//! [`Engine`]: read one record, apply operations durably, scan a key range, list due expiry
//! entries. Each operation is decided by [`decision::transition`](crate::decision::transition),
//! so an engine only has to apply the change it returns atomically with the read it was
//! decided on. The redb engine (group commit on one writer thread) is one implementation; a
//! journaled engine or a distributed one can replace it without touching anything else.

use crate::decision::{Operation, Outcome};
use crate::error::Result;
use crate::record::Record;
use crate::time::Timestamp;

mod open;
mod redb_engine;
mod tables;
mod writer;

pub(crate) use open::{DbFactory, OpenOptions, Opener, corrupt_from_panic};
pub(crate) use redb_engine::{CommitSettings, RedbEngine};
// For the offline maintenance tools (`crate::maintenance`), which read the tables directly.
pub(crate) use tables::{EXPIRY, RECORDS, index_key, split_index_key};

/// One operation on one storage key.
pub(crate) type KeyedOp = (Vec<u8>, Operation);

/// A record found by a scan: its storage key, and the record or why it could not be decoded.
pub(crate) type ScannedRecord = (Vec<u8>, Result<Record>);

/// Durable storage for records, as the store needs it.
pub(crate) trait Engine: Send + Sync + 'static {
    /// The record under `key` as last committed (expired or not). Never waits for writes.
    fn read(&self, key: &[u8]) -> Result<Option<Record>>;

    /// Applies the operations in order, each decided against the latest state including the
    /// earlier operations, and returns once their changes are durable (as configured). One
    /// result per operation: an operation can fail alone (a corrupt record), or all fail
    /// together (a failed commit: none of them took effect).
    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>>;

    /// Up to `limit` records with keys in `[start, end)` (`end` `None`: to the last key), in
    /// key order, as last committed.
    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<ScannedRecord>>;

    /// Up to `limit` expiry-index entries due at `now` (sweep instant ≤ `now`), oldest first.
    fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Timestamp, Vec<u8>)>>;

    /// Counters of the engine's own work.
    fn stats(&self) -> EngineStats;

    /// Finishes queued work, makes everything durable, and releases the storage. Later calls
    /// fail with [`Error::Closed`](crate::Error::Closed).
    fn close(&self) -> Result<()>;
}

impl dyn Engine {
    /// Applies one operation.
    pub(crate) fn apply_one(&self, key: Vec<u8>, op: Operation) -> Result<Outcome> {
        self.apply(vec![(key, op)])
            .pop()
            .unwrap_or(Err(crate::Error::Closed))
    }
}

/// What an engine has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EngineStats {
    pub(crate) commits: u64,
    pub(crate) committed_ops: u64,
    pub(crate) largest_batch: u64,
    pub(crate) failed_commits: u64,
    pub(crate) reopens: u64,
}
