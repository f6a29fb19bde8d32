//! The redb database behind the journaled engine and the read path into it: the memtable of
//! unfolded changes first, then the record cache, then a cached redb snapshot. The
//! database is reopened after a failure (redb refuses writes after a failed commit), and
//! every redb commit moves an epoch that tells readers their snapshot is stale.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redb::ReadableDatabase;

use crate::codec;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::generations::{Filters, RecordsView};
use crate::storage::memtable::Memtable;
use crate::storage::open::Opener;
use crate::storage::poison::Poison;
use crate::storage::record_cache::RecordCache;

/// A view of the records tables as of one redb commit, shared by readers until the next.
pub(crate) type Snapshot = Arc<RecordsView>;

// While the database cannot be reopened (a broken device), readers retry this often.
const READER_REOPEN_INTERVAL: Duration = Duration::from_millis(100);
// A reopen waits this long for readers holding the old handle.
const READER_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The database, the memtable in front of it, and what readers cache.
pub(crate) struct Database {
    handle: RwLock<Option<Arc<redb::Database>>>,
    /// Why the database is not open, and when opening it last failed.
    unavailable: Mutex<Option<(Error, Instant)>>,
    /// Set by shutdown: nothing reopens the database after it.
    shut: AtomicBool,
    opener: Opener,
    /// Bumped after every redb commit, so cached snapshots are refreshed.
    epoch: AtomicU64,
    snapshot: RwLock<Option<(u64, Snapshot)>>,
    /// How often the database was (re)opened since the engine started.
    reopens: AtomicU64,
    /// Changes journaled but not yet folded into redb.
    pub(crate) memtable: Memtable,
    /// The key filters of the record generations.
    pub(crate) filters: Filters,
    /// Records read from redb (see [`RecordCache`]).
    pub(crate) cache: RecordCache,
    /// The engine's poison flag, raised by a panic while reading.
    poison: Arc<Poison>,
}

impl Database {
    /// Wraps a database just opened by `opener`, which reopens it when needed.
    pub(crate) fn new(
        db: redb::Database,
        opener: Opener,
        filters: Filters,
        record_cache_size: usize,
        poison: Arc<Poison>,
    ) -> Database {
        Database {
            handle: RwLock::new(Some(Arc::new(db))),
            unavailable: Mutex::new(None),
            shut: AtomicBool::new(false),
            opener,
            epoch: AtomicU64::new(0),
            snapshot: RwLock::new(None),
            reopens: AtomicU64::new(0),
            memtable: Memtable::new(),
            filters,
            cache: RecordCache::new(record_cache_size),
            poison,
        }
    }

    /// The error for a panic caught while reading the database at `place`: damage if the
    /// file was never verified, otherwise a bug that poisons the engine.
    pub(crate) fn caught(&self, place: &str, payload: &(dyn std::any::Any + Send)) -> Error {
        self.poison.caught(place, payload, self.opener.verifies())
    }

    /// The error for a panic caught while writing the database (a fold): it always poisons
    /// the engine, since idemdb's own state is in doubt. On a file that was never verified
    /// the message says damage may be the cause, and how to tell.
    pub(crate) fn caught_writing(
        &self,
        place: &str,
        payload: &(dyn std::any::Any + Send),
    ) -> Error {
        let note = if self.opener.verifies() {
            ""
        } else {
            " (the file was not verified when it was opened: if `check` finds it damaged, \
             damage is the cause rather than a bug)"
        };
        self.poison.poison_noting(place, payload, note)
    }

    /// How often the database was reopened after a failure.
    pub(crate) fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// The open database. If an earlier failure left it closed, try to reopen it (readers at
    /// most every [`READER_REOPEN_INTERVAL`]), so service resumes once the fault is gone.
    pub(crate) fn db(&self) -> Result<Arc<redb::Database>> {
        if let Some(db) = self.handle.read().as_ref() {
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
        if let Some(db) = self.handle.read().as_ref() {
            return Ok(Arc::clone(db));
        }
        let mut slot = self.handle.write();
        if let Some(db) = slot.as_ref() {
            return Ok(Arc::clone(db));
        }
        self.open_into(&mut slot)
    }

    /// Closes the database (redb refuses writes after a failed commit until it is reopened)
    /// and opens it again.
    pub(crate) fn reopen(&self) -> Result<()> {
        let mut slot = self.handle.write();
        self.drop_snapshot();
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
        self.reopens.fetch_add(1, Ordering::Relaxed);
        match self.opener.open_database() {
            Ok(db) => {
                let db = Arc::new(db);
                *slot = Some(Arc::clone(&db));
                *self.unavailable.lock() = None;
                self.committed();
                Ok(db)
            }
            Err(e) => {
                *self.unavailable.lock() = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    fn drop_snapshot(&self) {
        *self.snapshot.write() = None;
    }

    /// Called after every redb commit: cached snapshots are stale from now on. A fold calls
    /// it before it forgets the folded memtable entries, so a reader that misses the
    /// memtable always reads a snapshot that has them.
    pub(crate) fn committed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// How many redb commits this store has made: a snapshot opened after reading it holds
    /// everything committed up to it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A snapshot of the records table as of the last redb commit, shared by readers until
    /// the next one.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        self.snapshot_at().map(|(_, table)| table)
    }

    /// [`snapshot`](Self::snapshot), with the epoch it is at least as new as.
    pub(crate) fn snapshot_at(&self) -> Result<(u64, Snapshot)> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some((e, table)) = self.snapshot.read().as_ref()
            && *e == epoch
        {
            return Ok((epoch, Arc::clone(table)));
        }
        let db = self.db()?;
        let table = catch_unwind(AssertUnwindSafe(|| -> Result<Snapshot> {
            let txn = db.begin_read().map_err(Error::from_redb)?;
            Ok(Arc::new(RecordsView::open(&txn, &self.filters)?))
        }))
        .unwrap_or_else(|panic| Err(self.caught("opening a snapshot panicked", panic.as_ref())))?;
        let mut slot = self.snapshot.write();
        if slot.as_ref().is_none_or(|(e, _)| *e < epoch) {
            *slot = Some((epoch, Arc::clone(&table)));
        }
        Ok((epoch, table))
    }

    /// The current record of `key`: the memtable's, else redb's (from the record cache if
    /// it knows the key, present or absent).
    pub(crate) fn read(&self, key: &[u8]) -> Result<Option<Record>> {
        if let Some(state) = self.memtable.get(key) {
            return state.as_deref().map(codec::decode).transpose();
        }
        if let Some(cached) = self.cache.get(key) {
            return Ok(cached.map(|record| Record::clone(&record)));
        }
        let (epoch, table) = self.snapshot_at()?;
        let record = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Record>> {
            let bytes = table.get(key)?;
            bytes.map(|b| codec::decode(&b)).transpose()
        }))
        .unwrap_or_else(|panic| Err(self.caught("reading a record panicked", panic.as_ref())))?;
        self.cache
            .insert(key, record.as_ref(), epoch, || self.epoch());
        Ok(record)
    }

    /// Makes everything durable and closes the database; nothing reopens it afterwards.
    pub(crate) fn shut_down(&self) -> Result<()> {
        self.shut.store(true, Ordering::Release);
        let mut slot = self.handle.write();
        self.drop_snapshot();
        match slot.take() {
            Some(db) => close_when_unshared(db),
            None => Ok(()),
        }
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
