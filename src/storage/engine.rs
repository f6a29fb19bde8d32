//! The journaled engine: writes are group-committed to the journal by one writer thread,
//! published to the memtable, and folded into the redb tables in large batches by a folder
//! thread. Reads look in the memtable, then in a cached redb snapshot; they never wait for
//! a write.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};
use redb::ReadableDatabase;

use crate::codec;
use crate::decision::Outcome;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::answer;
use crate::storage::generations::{Filters, RecordsView};
use crate::storage::journal::frame::FileHeader;
use crate::storage::journal::{Journal, MIN_CAPACITY};
use crate::storage::memtable::Memtable;
use crate::storage::open::{Opener, corrupt_from_panic};
use crate::storage::record_cache::RecordCache;
use crate::storage::tables::{self, Checkpoint};
use crate::storage::unsynced::UnsyncedWrites;
use crate::storage::writer::{self, Job};
use crate::storage::{Engine, EngineStats, KeyedOp, ScanPage, SweepPass};
use crate::storage::{fold, sweep};
use crate::time::{Clock, Timestamp};

/// How the engine commits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitSettings {
    /// Sync the journal before acknowledging (`false`: [`Durability::None`](crate::Durability)).
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

type Snapshot = Arc<RecordsView>;

/// A counter that threads can wait on for a change.
#[derive(Default)]
pub(crate) struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Waits until the generation differs from `seen`, or `timeout` passes.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let mut generation = self.generation.lock();
        let deadline = Instant::now() + timeout;
        while *generation == seen {
            if self
                .changed
                .wait_until(&mut generation, deadline)
                .timed_out()
            {
                return;
            }
        }
    }
}

/// The last frame whose changes are in the memtable: a fold may record everything up to it
/// as folded, once the memtable's contents are in redb.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Published {
    pub(crate) lsn: u64,
    /// Where the frame after it starts.
    pub(crate) end: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) committed_ops: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) reopens: AtomicU64,
    pub(crate) folds: AtomicU64,
    pub(crate) folded_records: AtomicU64,
    pub(crate) failed_folds: AtomicU64,
}

/// State shared by the engine handle, its threads and readers.
pub(crate) struct Shared {
    db: RwLock<Option<Arc<redb::Database>>>,
    /// Why the database is not open, and when opening it last failed.
    unavailable: Mutex<Option<(Error, Instant)>>,
    /// Set by shutdown: nothing reopens the database after it.
    shut: AtomicBool,
    opener: Opener,
    /// Bumped after every redb commit, so cached snapshots are refreshed.
    epoch: AtomicU64,
    snapshot: RwLock<Option<(u64, Snapshot)>>,
    pub(crate) memtable: Memtable,
    /// The key filters of the record generations.
    pub(crate) filters: Filters,
    /// Records read from redb (see [`RecordCache`]).
    pub(crate) cache: RecordCache,
    /// Held by the writer across an append and its sync: read the figures below instead.
    pub(crate) journal: Mutex<Journal>,
    pub(crate) journal_id: u128,
    /// Bytes of the journal ring, and how many hold unfolded frames (mirrors of the journal's
    /// own figures, readable without waiting for a sync).
    pub(crate) journal_area: u64,
    pub(crate) journal_used: AtomicU64,
    pub(crate) published: Mutex<Published>,
    /// Asks the folder for a fold.
    pub(crate) fold_wanted: Signal,
    /// Tells the writer a fold freed journal space.
    pub(crate) space_freed: Signal,
    /// Serialises folds (the folder thread, and the final fold at close).
    pub(crate) fold_lock: Mutex<()>,
    /// Held across each commit's decisions, journal append and publication: by the writer
    /// thread, or by a caller committing on its own thread (see `writer::commit_here`).
    pub(crate) commit_lock: Mutex<()>,
    /// Set while the writer thread has a batch to commit: callers then queue for it.
    pub(crate) writer_busy: AtomicBool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) commit: CommitSettings,
    pub(crate) counters: Counters,
    /// The largest frame payload the journal takes.
    pub(crate) max_payload: usize,
    /// Why the last fold failed, until one succeeds: a full journal waits for folds only
    /// while they can succeed.
    pub(crate) fold_error: Mutex<Option<Error>>,
}

// While the database cannot be reopened (a broken device), readers retry this often.
const READER_REOPEN_INTERVAL: Duration = Duration::from_millis(100);
// A reopen waits this long for readers holding the old handle.
const READER_DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl Shared {
    /// The open database. If an earlier failure left it closed, try to reopen it (readers at
    /// most every [`READER_REOPEN_INTERVAL`]), so service resumes once the fault is gone.
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
        if let Some(db) = slot.as_ref() {
            return Ok(Arc::clone(db));
        }
        self.open_into(&mut slot)
    }

    /// Closes the database (redb refuses writes after a failed commit until it is reopened)
    /// and opens it again.
    pub(crate) fn reopen(&self) -> Result<()> {
        let mut slot = self.db.write();
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
        self.counters.reopens.fetch_add(1, Ordering::Relaxed);
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
    fn snapshot(&self) -> Result<Snapshot> {
        self.snapshot_at().map(|(_, table)| table)
    }

    /// [`snapshot`](Self::snapshot), with the epoch it is at least as new as.
    fn snapshot_at(&self) -> Result<(u64, Snapshot)> {
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
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))?;
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
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))?;
        self.cache
            .insert(key, record.as_ref(), epoch, || self.epoch());
        Ok(record)
    }

    /// Makes everything durable and closes the database.
    fn shutdown_database(&self) -> Result<()> {
        self.shut.store(true, Ordering::Release);
        let mut slot = self.db.write();
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

/// The engine handle the store talks to.
pub(crate) struct JournaledEngine {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    folder: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
    close_result: Mutex<Option<Result<()>>>,
}

impl JournaledEngine {
    /// Opens the database and the journal, recovers what the journal holds beyond the last
    /// fold, and starts the writer and folder threads.
    pub(crate) fn open(
        opener: Opener,
        clock: Arc<dyn Clock>,
        commit: CommitSettings,
    ) -> Result<JournaledEngine> {
        let db = opener.open_database()?;
        let filters = Filters::load(&db, commit.generation_keys)?;
        let journal = open_journal(&opener, &db, commit, &filters)?;
        let max_payload = journal.max_payload();
        let (journal_id, journal_area, journal_used) =
            (journal.id(), journal.area(), journal.used());
        let published = Published {
            lsn: journal.last_lsn(),
            end: journal.head(),
        };
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            unavailable: Mutex::new(None),
            shut: AtomicBool::new(false),
            opener,
            epoch: AtomicU64::new(0),
            snapshot: RwLock::new(None),
            memtable: Memtable::new(),
            filters,
            cache: RecordCache::new(commit.record_cache_size),
            journal: Mutex::new(journal),
            journal_id,
            journal_area,
            journal_used: AtomicU64::new(journal_used),
            published: Mutex::new(published),
            fold_wanted: Signal::default(),
            space_freed: Signal::default(),
            fold_lock: Mutex::new(()),
            commit_lock: Mutex::new(()),
            writer_busy: AtomicBool::new(false),
            clock,
            commit,
            counters: Counters::default(),
            max_payload,
            fold_error: Mutex::new(None),
        });
        let (jobs, queue) = crossbeam_channel::unbounded();
        let writer = writer::spawn(Arc::clone(&shared), queue).map_err(Error::from_io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let folder =
            fold::spawn_folder(Arc::clone(&shared), Arc::clone(&stop)).map_err(Error::from_io)?;
        Ok(JournaledEngine {
            shared,
            jobs,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
            folder: Mutex::new(Some((stop, folder))),
            close_result: Mutex::new(None),
        })
    }

    fn shut_down(&self) -> Result<()> {
        // 1. The writer finishes what is queued, syncs, and stops.
        let (reply, answer) = answer::pair();
        let written = if self.jobs.send(Job::Close { reply }).is_ok() {
            answer.wait().unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        if let Some(handle) = self.writer.lock().take()
            && handle.join().is_err()
        {
            tracing::error!("the idemdb writer thread panicked");
        }
        // 2. The folder stops; the last fold moves everything into redb and marks the
        //    journal clean, so the next open has nothing to recover.
        if let Some((stop, handle)) = self.folder.lock().take() {
            stop.store(true, Ordering::Release);
            self.shared.fold_wanted.notify();
            if handle.join().is_err() {
                tracing::error!("the idemdb folder thread panicked");
            }
        }
        // A caller committing on its own thread finishes before the last fold.
        let _commits = self.shared.commit_lock.lock();
        let folded = if written.is_ok() {
            fold::fold_once(&self.shared, true).map(drop)
        } else {
            // Never mark a journal clean after a failed write: recovery must look at it.
            Ok(())
        };
        let journal_closed = self.shared.journal.lock().close().map_err(Error::from_io);
        let db_closed = self.shared.shutdown_database();
        written.and(folded).and(journal_closed).and(db_closed)
    }
}

/// Opens or creates the journal, recovering frames newer than the last checkpoint, and
/// records a fresh (not clean) checkpoint.
fn open_journal(
    opener: &Opener,
    db: &redb::Database,
    commit: CommitSettings,
    filters: &Filters,
) -> Result<Journal> {
    let checkpoint = tables::read_checkpoint(db)?;
    let io = opener.open_journal()?;
    // A durable store's frames are kept until a sync succeeds (see `unsynced`): frames
    // written without a sync (a sweep's, deferred claims) must not leave a hole that a
    // failed sync dropped under later, synced frames, where recovery would stop. A store
    // that never syncs promises nothing across a crash, and would keep its frames for ever.
    let io: Box<dyn redb::StorageBackend> = if commit.durable {
        Box::new(UnsyncedWrites::default().wrap(io))
    } else {
        io
    };
    let has_file = io.len().map_err(Error::from_io)? > 0;
    let header = has_file.then(|| Journal::read_header(io.as_ref()));
    let capacity = commit.journal_size.max(MIN_CAPACITY);
    let journal = match checkpoint {
        // A new store, or one from before the journal: nothing can be in a journal file.
        None => Journal::create(io, capacity, 0)?,
        Some(cp) if cp.clean => match header {
            Some(Ok(h)) if h.journal_id == cp.journal_id && h.capacity == capacity => {
                Journal::resume(io, &h, cp.tail, cp.folded_lsn)?
            }
            _ => Journal::create(io, capacity, cp.folded_lsn)?,
        },
        Some(cp) => {
            let header = match header {
                None => {
                    return Err(Error::Corrupt {
                        detail: format!(
                            "{}: the journal is missing, but the store was not closed cleanly: acknowledged operations would be lost",
                            opener.path().display()
                        ),
                    });
                }
                Some(h) => h?,
            };
            if header.journal_id != cp.journal_id {
                return Err(Error::Corrupt {
                    detail: format!(
                        "{}: the journal belongs to another store",
                        opener.path().display()
                    ),
                });
            }
            recover(io, &header, &cp, db, commit, filters)?
        }
    };
    let write = db.begin_write().map_err(Error::from_redb)?;
    tables::write_checkpoint(
        &write,
        &Checkpoint {
            journal_id: journal.id(),
            folded_lsn: journal.last_lsn(),
            tail: journal.head(),
            clean: false,
        },
    )?;
    write.commit().map_err(Error::from_redb)?;
    Ok(journal)
}

fn recover(
    io: Box<dyn redb::StorageBackend>,
    header: &FileHeader,
    checkpoint: &Checkpoint,
    db: &redb::Database,
    commit: CommitSettings,
    filters: &Filters,
) -> Result<Journal> {
    let recovered = Journal::recover(io.as_ref(), header, checkpoint.tail, checkpoint.folded_lsn)?;
    if !recovered.frames.is_empty() {
        // Later frames win: keep the last state of each key.
        let mut latest: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let frames = recovered.frames.len();
        for (_, changes) in recovered.frames {
            for (key, value) in changes {
                latest.insert(key, value);
            }
        }
        let write = fold::begin_fold_txn(db, commit)?;
        fold::apply_changes(
            &write,
            filters,
            latest.len(),
            latest.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        tables::write_checkpoint(
            &write,
            &Checkpoint {
                journal_id: header.journal_id,
                folded_lsn: recovered.last_lsn,
                tail: recovered.head,
                clean: false,
            },
        )?;
        write.commit().map_err(Error::from_redb)?;
        tracing::info!(
            frames,
            keys = latest.len(),
            "idemdb recovered journaled operations"
        );
    }
    Journal::resume(io, header, recovered.head, recovered.last_lsn)
}

/// One page of a scan: up to `limit` stored rows from `table`, merged with the memtable
/// over the same span.
fn scan_page(
    shared: &Shared,
    table: &Snapshot,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<ScanPage> {
    let (stored, next) = catch_unwind(AssertUnwindSafe(|| table.page(start, end, limit)))
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))?;
    // The page covers keys up to where `next` starts; the memtable is merged over the same
    // span, so the next page starts right after it.
    let merge_end = next.as_deref().or(end);
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
    for (key, entry) in shared.memtable.range(start, merge_end) {
        match entry.value {
            Some(value) => merged.insert(key.into_vec(), value.to_vec()),
            None => merged.remove(&*key),
        };
    }
    let rows = merged
        .into_iter()
        .map(|(k, v)| {
            let record = codec::decode(&v);
            (k, record)
        })
        .collect();
    Ok(ScanPage { rows, next })
}

impl Engine for JournaledEngine {
    fn read(&self, key: &[u8]) -> Result<Option<Record>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.shared.read(key)
    }

    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>> {
        let n = ops.len();
        let closed = || (0..n).map(|_| Err(Error::Closed)).collect();
        if self.closed.load(Ordering::Acquire) {
            return closed();
        }
        // Nothing running or queued, and the writer thread idle: commit here rather than
        // hand over to the writer.
        let commit = self.shared.commit;
        if commit.durable
            && !commit.defer_claim_sync
            && self.jobs.is_empty()
            && !self.shared.writer_busy.load(Ordering::SeqCst)
            && let Some(_commits) = self.shared.commit_lock.try_lock()
        {
            // Checked under the lock: a close waits for this commit, or it sees the close.
            if self.closed.load(Ordering::Acquire) {
                return closed();
            }
            return writer::commit_here(&self.shared, ops);
        }
        let (reply, answer) = answer::pair();
        if self.jobs.send(Job::Apply { ops, reply }).is_err() {
            return closed();
        }
        answer.wait().unwrap_or_else(closed)
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<ScanPage> {
        let shared = &self.shared;
        for _ in 0..3 {
            let (epoch, table) = shared.snapshot_at()?;
            let page = scan_page(shared, &table, start, end, limit)?;
            // A fold that committed after the snapshot may have taken entries out of the
            // memtable before they were merged: the page could miss them. Read again. (Other
            // commits, sweeps, also move the epoch; they remove nothing from the memtable.)
            if shared.epoch.load(Ordering::SeqCst) == epoch {
                return Ok(page);
            }
        }
        // Still racing: hold folds off for one read, so nothing leaves the memtable meanwhile.
        let _folding = shared.fold_lock.lock();
        let table = shared.snapshot()?;
        scan_page(shared, &table, start, end, limit)
    }

    fn sweep(&self, now: Timestamp, limit: usize, from: Option<&[u8]>) -> Result<SweepPass> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let shared = &self.shared;
        // Tombstones wait in the memtable until a fold: a long sweep folds as it goes, so
        // memory stays bounded (and it then runs at the fold's pace).
        if shared.memtable.len() >= fold::FOLD_AT_KEYS {
            fold::fold_once(shared, false)?;
        }
        sweep::run_pass(shared, &self.jobs, now, limit, from)
    }

    fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            commits: get(&c.commits),
            committed_ops: get(&c.committed_ops),
            largest_batch: get(&c.largest_batch),
            failed_commits: get(&c.failed_commits),
            reopens: get(&c.reopens),
            folds: get(&c.folds),
            folded_records: get(&c.folded_records),
            failed_folds: get(&c.failed_folds),
            memtable_records: self.shared.memtable.len() as u64,
            journal_bytes_used: self.shared.journal_used.load(Ordering::Relaxed),
            generations: self.shared.filters.count() as u64,
        }
    }

    fn flush(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        fold::fold_once(&self.shared, false).map(|_| ())
    }

    fn check(&self, report: &mut crate::maintenance::CheckReport) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        fold::fold_once(&self.shared, false)?;
        let db = self.shared.db()?;
        crate::maintenance::guarded(|| crate::maintenance::check_tables(&db, report))
    }

    fn close(&self) -> Result<()> {
        let mut result = self.close_result.lock();
        if let Some(r) = result.as_ref() {
            // A second close reports success: the store is closed either way.
            return r.as_ref().map(|_| ()).or(Ok(()));
        }
        self.closed.store(true, Ordering::Release);
        let r = self.shut_down();
        *result = Some(r.clone());
        r
    }
}

impl Drop for JournaledEngine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the idemdb store failed");
        }
    }
}
