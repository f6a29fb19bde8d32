//! The seam between the store and durable storage.
//!
//! The store façade, the in-flight map and the sweeper talk to storage only through
//! [`Engine`]: read one record, apply operations durably, scan a key range, sweep expired
//! records. Each operation is decided by
//! [`decision::transition`](crate::decision::transition), so an engine only has to apply the
//! change it returns atomically with the read it was decided on. The journaled engine (a
//! group-committed journal beside a redb file) is one implementation; a distributed one can
//! replace it without touching anything else.

use std::future::Future;
use std::pin::Pin;

use crate::decision::{Operation, Outcome};
use crate::error::Result;
use crate::record::Record;
use crate::time::Timestamp;

pub(crate) mod answer;
mod backend;
mod check;
mod compact;
mod database;
mod engine;
mod fold;
mod generations;
pub(crate) mod journal;
mod journal_state;
mod key_filter;
mod memtable;
mod open;
mod overlay;
mod poison;
mod read_only;
mod record_cache;
mod salvage;
mod signal;
mod store_file;
mod sweep;
mod tables;
mod unsynced;
mod writer;

use std::time::Duration;

pub use backend::{Backend, MemoryBackend, StorageRole};
pub use check::{
    CheckReport, DiscardedTail, JournalReport, MAX_LISTED_PROBLEMS, Problem, ProblemKind,
};
pub use compact::CompactReport;
#[cfg(feature = "testing")]
pub use poison::injected::{PanicSite, inject_panic};
pub use salvage::Salvage;
pub(crate) use salvage::salvage;

pub(crate) use backend::AsRedb;
pub(crate) use check::check_store;
pub(crate) use compact::compact_file;
pub(crate) use engine::JournaledEngine;
pub(crate) use generations::DEFAULT_GENERATION_KEYS;
pub use open::StoreFiles;
pub(crate) use open::{BackendFactory, OpenOptions, Opener};
pub(crate) use read_only::ReadOnlyEngine;
#[cfg(test)]
pub(crate) use tables::{EXPIRY, RECORDS, index_key};

/// How the engine commits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitSettings {
    /// Sync the journal before acknowledging (`false`: the store's durability is none).
    pub(crate) durable: bool,
    /// Acknowledge claims before the sync that makes them durable (the next sync does).
    pub(crate) defer_claim_sync: bool,
    pub(crate) two_phase: bool,
    pub(crate) quick_repair: bool,
    /// Most operations in one group commit.
    pub(crate) max_batch: usize,
    /// Size of the journal ring, in bytes.
    pub(crate) journal_size: u64,
    /// How long changes may wait in the memtable before a fold.
    pub(crate) fold_interval: Duration,
    /// Bytes of decoded records cached in front of redb.
    pub(crate) record_cache_size: usize,
    /// Records per generation (see `generations`).
    pub(crate) generation_keys: usize,
}

/// One operation on one storage key.
pub(crate) type KeyedOp = (Vec<u8>, Operation);

/// The results of [`Engine::submit`], once the changes are durable (as configured).
pub(crate) type Applying = Pin<Box<dyn Future<Output = Vec<Result<Outcome>>> + Send>>;

/// A record found by a scan: its storage key, and the record or why it could not be decoded.
pub(crate) type ScannedRecord = (Vec<u8>, Result<Record>);

/// One page of a scan, and where the next page starts (`None`: this was the last).
pub(crate) struct ScanPage {
    pub(crate) rows: Vec<ScannedRecord>,
    pub(crate) next: Option<Vec<u8>>,
}

/// What one sweep batch did.
#[derive(Debug, Clone, Default)]
pub(crate) struct SweepPass {
    /// Due records examined: expiry-index entries, and unfolded records found expired.
    pub(crate) found: u64,
    /// Records deleted.
    pub(crate) deleted: u64,
    /// Journal frames the deletions took (each at most `limit` records).
    pub(crate) batches: u64,
    /// Where the next batch of the same sweep starts (an expiry-index key; `None`: nothing
    /// more was due).
    pub(crate) resume: Option<Vec<u8>>,
}

/// Durable storage for records, as the store needs it.
pub(crate) trait Engine: Send + Sync + 'static {
    /// The current record under `key` (expired or not). Never waits for writes.
    fn read(&self, key: &[u8]) -> Result<Option<Record>>;

    /// Applies the operations in order, each decided against the latest state including the
    /// earlier operations, and returns once their changes are durable (as configured). One
    /// result per operation: an operation can fail alone (a damaged record), or all fail
    /// together (a failed commit: none of them took effect).
    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>>;

    /// [`apply`](Self::apply) for async callers: the engine's own threads do the work and
    /// the returned future resolves with the same results. The calling thread never waits
    /// for a lock held across I/O, a commit or a sync.
    fn submit(&self, ops: Vec<KeyedOp>) -> Applying;

    /// Records with keys in `[start, end)` (`end` `None`: to the last key), in key order:
    /// about `limit` of them, and where to continue.
    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<ScanPage>;

    /// Examines up to `limit` due expiry-index entries, from `from` (the `resume` of the
    /// previous batch of the same sweep) or the start, and durably deletes the records that
    /// are expired at `now`. A record claimed anew after it expired is never deleted.
    fn sweep(&self, now: Timestamp, limit: usize, from: Option<&[u8]>) -> Result<SweepPass>;

    /// Counters of the engine's own work.
    fn stats(&self) -> EngineStats;

    /// Folds everything acknowledged so far into the database, and returns when it is there.
    fn flush(&self) -> Result<()>;

    /// Folds what is journaled, then checks the records and the expiry index into `report`.
    fn check(&self, report: &mut CheckReport) -> Result<()>;

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

    /// Applies one operation, for an async caller (see [`Engine::submit`]).
    pub(crate) async fn submit_one(&self, key: Vec<u8>, op: Operation) -> Result<Outcome> {
        self.submit(vec![(key, op)])
            .await
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
    pub(crate) folds: u64,
    pub(crate) folded_records: u64,
    pub(crate) failed_folds: u64,
    pub(crate) memtable_records: u64,
    pub(crate) journal_bytes_used: u64,
    pub(crate) generations: u64,
}
