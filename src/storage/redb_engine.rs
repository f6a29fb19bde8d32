//! The redb engine: reads straight from redb, writes through one group-commit writer thread.

use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use redb::ReadableDatabase;

use crate::codec;
use crate::decision::Outcome;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::open::{Opener, corrupt_from_panic};
use crate::storage::tables::{self, EXPIRY, RECORDS};
use crate::storage::writer::{self, Job};
use crate::storage::{Engine, EngineStats, KeyedOp, ScannedRecord};
use crate::time::{Clock, Timestamp};

/// How each write transaction commits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitSettings {
    /// `false`: commits are durable only once a later durable commit (or close) happens.
    pub(crate) durable: bool,
    pub(crate) two_phase: bool,
    pub(crate) quick_repair: bool,
    /// Most operations applied in one write transaction.
    pub(crate) max_batch: usize,
}

/// State shared by the engine handle, the writer thread and readers.
pub(crate) struct Shared {
    /// The open database; `None` while a reopen after a failure has not succeeded yet.
    db: RwLock<Option<Arc<redb::Database>>>,
    /// Why the database is not open, and when opening it last failed.
    unavailable: Mutex<Option<(Error, Instant)>>,
    /// Set by shutdown: nothing reopens the database after it.
    shut: AtomicBool,
    opener: Opener,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) commit: CommitSettings,
    pub(crate) counters: Counters,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) committed_ops: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) reopens: AtomicU64,
}

// Readers clone the database handle and hold no lock while reading. A reopen waits this long
// for the clones in flight to finish before closing the old handle.
const READER_DRAIN_LIMIT: Duration = Duration::from_secs(5);

// While the database cannot be reopened (a broken device), readers retry this often.
const READER_REOPEN_INTERVAL: Duration = Duration::from_millis(100);

impl Shared {
    /// The open database, for reading. If an earlier failure left it closed, a reader tries
    /// to reopen it too (at most every [`READER_REOPEN_INTERVAL`]), so reads recover once
    /// the fault is gone even when nothing writes.
    pub(crate) fn db(&self) -> Result<Arc<redb::Database>> {
        if let Some(db) = self.db.read().as_ref() {
            return Ok(Arc::clone(db));
        }
        if let Some((error, failed_at)) = self.unavailable.lock().as_ref()
            && failed_at.elapsed() < READER_REOPEN_INTERVAL
        {
            return Err(error.clone());
        }
        self.writable_db()
    }

    /// The open database, reopening it first if an earlier failure closed it.
    pub(crate) fn writable_db(&self) -> Result<Arc<redb::Database>> {
        if let Some(db) = self.db.read().as_ref() {
            return Ok(Arc::clone(db));
        }
        let mut slot = self.db.write();
        // Another thread may have reopened it while this one waited for the lock.
        if let Some(db) = slot.as_ref() {
            return Ok(Arc::clone(db));
        }
        self.open_into(&mut slot)
    }

    /// Closes the database (redb refuses writes after a failed commit until it is reopened)
    /// and opens it again.
    pub(crate) fn reopen(&self) -> Result<()> {
        let mut slot = self.db.write();
        if let Some(old) = slot.take() {
            // The old handle's error is moot: its last commit already failed.
            let _ = close_when_unshared(old);
        }
        self.open_into(&mut slot).map(drop)
    }

    fn open_into(&self, slot: &mut Option<Arc<redb::Database>>) -> Result<Arc<redb::Database>> {
        if self.shut.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.counters.reopens.fetch_add(1, Ordering::Relaxed);
        match self.opener.open() {
            Ok(db) => {
                let db = Arc::new(db);
                *slot = Some(Arc::clone(&db));
                *self.unavailable.lock() = None;
                Ok(db)
            }
            Err(e) => {
                *self.unavailable.lock() = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    /// Makes everything durable and closes the database.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.shut.store(true, Ordering::Release);
        let mut slot = self.db.write();
        let Some(db) = slot.take() else {
            return Ok(());
        };
        let flushed = if self.commit.durable {
            Ok(())
        } else {
            // Non-durable commits reach the disk with the next durable commit: make one.
            db.begin_write()
                .map_err(Error::from_redb)
                .and_then(|w| w.commit().map_err(Error::from_redb))
        };
        let closed = close_when_unshared(db);
        flushed.and(closed)
    }
}

fn close_when_unshared(db: Arc<redb::Database>) -> Result<()> {
    let started = Instant::now();
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return db.close().map_err(Error::from_redb),
            Err(shared) if started.elapsed() < READER_DRAIN_LIMIT => {
                db = shared;
                std::thread::sleep(Duration::from_micros(200));
            }
            // A reader is stuck: the database closes when it lets go.
            Err(_) => return Ok(()),
        }
    }
}

/// The engine handle the store talks to.
pub(crate) struct RedbEngine {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl RedbEngine {
    /// Opens the database and starts the writer thread.
    pub(crate) fn open(
        opener: Opener,
        clock: Arc<dyn Clock>,
        commit: CommitSettings,
    ) -> Result<RedbEngine> {
        let db = opener.open()?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            unavailable: Mutex::new(None),
            shut: AtomicBool::new(false),
            opener,
            clock,
            commit,
            counters: Counters::default(),
        });
        let (jobs, queue) = crossbeam_channel::unbounded();
        let handle = writer::spawn(Arc::clone(&shared), queue).map_err(Error::from_io)?;
        Ok(RedbEngine {
            shared,
            jobs,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Runs a read-only closure against the last committed state, reporting a panic inside
    /// redb (damaged data) as corruption.
    fn read_with<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let db = self.shared.db()?;
        catch_unwind(AssertUnwindSafe(|| {
            let txn = db.begin_read().map_err(Error::from_redb)?;
            f(&txn)
        }))
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))
    }
}

impl Engine for RedbEngine {
    fn read(&self, key: &[u8]) -> Result<Option<Record>> {
        self.read_with(|txn| {
            let table = txn.open_table(RECORDS).map_err(Error::from_redb)?;
            match table.get(key).map_err(Error::from_redb)? {
                Some(bytes) => codec::decode(bytes.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>> {
        let n = ops.len();
        let closed = || (0..n).map(|_| Err(Error::Closed)).collect();
        if self.closed.load(Ordering::Acquire) {
            return closed();
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.jobs.send(Job::Apply { ops, reply }).is_err() {
            return closed();
        }
        answer.recv().unwrap_or_else(|_| closed())
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<ScannedRecord>> {
        self.read_with(|txn| {
            let table = txn.open_table(RECORDS).map_err(Error::from_redb)?;
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            let range = table
                .range::<&[u8]>((Bound::Included(start), upper))
                .map_err(Error::from_redb)?;
            let mut out = Vec::new();
            for entry in range.take(limit) {
                let (key, value) = entry.map_err(Error::from_redb)?;
                out.push((key.value().to_vec(), codec::decode(value.value())));
            }
            Ok(out)
        })
    }

    fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Timestamp, Vec<u8>)>> {
        self.read_with(|txn| {
            let table = txn.open_table(EXPIRY).map_err(Error::from_redb)?;
            // Everything swept at an instant ≤ now sorts below the first key of now + 1.
            let bound = now
                .as_millis()
                .checked_add(1)
                .map(|next| next.to_be_bytes().to_vec());
            let upper = bound.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let range = table
                .range::<&[u8]>((Bound::Unbounded, upper))
                .map_err(Error::from_redb)?;
            let mut out = Vec::new();
            for entry in range.take(limit) {
                let (key, _) = entry.map_err(Error::from_redb)?;
                let (at, storage_key) =
                    tables::split_index_key(key.value()).ok_or_else(|| Error::Corrupt {
                        detail: "malformed expiry index entry".to_owned(),
                    })?;
                out.push((at, storage_key.to_vec()));
            }
            Ok(out)
        })
    }

    fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        EngineStats {
            commits: c.commits.load(Ordering::Relaxed),
            committed_ops: c.committed_ops.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            failed_commits: c.failed_commits.load(Ordering::Relaxed),
            reopens: c.reopens.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let result = if self.jobs.send(Job::Close { reply }).is_ok() {
            answer.recv().unwrap_or(Err(Error::Closed))
        } else {
            Err(Error::Closed)
        };
        if let Some(handle) = self.writer.lock().take()
            && handle.join().is_err()
        {
            tracing::error!("the idemdb writer thread panicked");
        }
        result
    }
}

impl Drop for RedbEngine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the idemdb store failed");
        }
    }
}
