//! The journaled engine: writes are group-committed to the journal by one writer thread,
//! published to the memtable, and folded into the redb tables in large batches by a folder
//! thread. Reads look in the memtable, then in a cached redb snapshot; they never wait for
//! a write.
//!
//! The engine is four parts, each shared by the threads that use it: the [`Database`] and
//! its read path, the [`JournalState`], the [`FoldState`] and the [`CommitState`]. The
//! writer takes all four, a fold the first three, a sweep the database alone.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::codec;
use crate::decision::Outcome;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::answer;
use crate::storage::check::{self, CheckReport};
use crate::storage::database::{Database, Snapshot};
use crate::storage::fold::FoldState;
use crate::storage::generations::Filters;
use crate::storage::journal::frame::FileHeader;
use crate::storage::journal::{Journal, MIN_CAPACITY};
use crate::storage::journal_state::JournalState;
use crate::storage::open::Opener;
use crate::storage::poison::Poison;
use crate::storage::tables::{self, Checkpoint};
use crate::storage::unsynced::UnsyncedWrites;
use crate::storage::writer::{self, CommitState, Job, WriterParts};
use crate::storage::{Applying, CommitSettings, Engine, EngineStats, KeyedOp, ScanPage, SweepPass};
use crate::storage::{fold, sweep};
use crate::time::{Clock, Timestamp};

/// The engine handle the store talks to.
pub(crate) struct JournaledEngine {
    parts: WriterParts,
    jobs: Sender<Job>,
    /// Shared with the futures of async callers, which look at it after the writer is gone.
    closed: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    folder: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
    close_result: Mutex<Option<Result<()>>>,
    /// Opened for a short process: a close leaves the checkpoint marked unclean, so the
    /// next process may leave its folds to the journal too.
    short_process: bool,
    /// This session reads the database through an in-memory overlay: a fold would only
    /// write to memory, so the close does not fold.
    overlay: bool,
}

impl JournaledEngine {
    /// Opens the database and the journal, recovers what the journal holds beyond the last
    /// fold, and starts the writer and folder threads.
    pub(crate) fn open(
        opener: Opener,
        clock: Arc<dyn Clock>,
        commit: CommitSettings,
    ) -> Result<JournaledEngine> {
        let short_process = opener.overlay();
        let (opener, db, filters, journal, replay) = open_session(opener, commit)?;
        let opener = opener.for_reopens();
        let overlay = opener.overlay();
        let poison = Arc::new(Poison::default());
        let database = Database::new(
            db,
            opener,
            filters,
            commit.record_cache_size,
            Arc::clone(&poison),
        );
        // A short-process session replays the journal into memory, not into the database.
        if let Some((lsn, changes)) = replay {
            database.memtable.publish(
                lsn,
                changes
                    .into_iter()
                    .map(|(key, value)| (key, value.map(Arc::from)))
                    .collect(),
            );
        }
        let parts = WriterParts {
            database: Arc::new(database),
            journal: Arc::new(JournalState::new(journal)),
            folds: Arc::new(FoldState::new(commit)),
            commits: Arc::new(CommitState::new(commit, clock)),
            poison,
        };
        let (jobs, queue) = crossbeam_channel::unbounded();
        let writer = writer::spawn(parts.clone(), queue).map_err(Error::from_io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let folder = fold::spawn_folder(
            Arc::clone(&parts.database),
            Arc::clone(&parts.journal),
            Arc::clone(&parts.folds),
            Arc::clone(&parts.poison),
            Arc::clone(&stop),
        )
        .map_err(Error::from_io)?;
        Ok(JournaledEngine {
            parts,
            jobs,
            closed: Arc::new(AtomicBool::new(false)),
            writer: Mutex::new(Some(writer)),
            folder: Mutex::new(Some((stop, folder))),
            close_result: Mutex::new(None),
            short_process,
            overlay,
        })
    }

    /// Folds everything in the memtable now.
    fn fold_now(&self, clean: bool) -> Result<usize> {
        let p = &self.parts;
        fold::fold_once(&p.database, &p.journal, &p.folds, clean)
    }

    /// Why the engine stopped answering: the poison if a thread panicked, else the close.
    fn stopped(&self) -> Error {
        self.parts.poison.get().unwrap_or(Error::Closed)
    }

    /// Refuses a call to a poisoned or closed engine.
    fn check_running(&self) -> Result<()> {
        self.parts.poison.check()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The error for an answer the writer thread never gave: it only drops one while it
    /// unwinds from a panic (a close answers everything queued), a moment before the panic
    /// poisons the engine.
    fn unanswered(&self) -> Error {
        if self.closed.load(Ordering::Acquire) {
            return self.stopped();
        }
        self.parts
            .poison
            .wait(UNANSWERED_WAIT)
            .unwrap_or(Error::Closed)
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
            self.parts.folds.wanted.notify();
            if handle.join().is_err() {
                tracing::error!("the idemdb folder thread panicked");
            }
        }
        // A caller committing on its own thread finishes before the last fold.
        let _commits = self.parts.commits.lock.lock();
        let poisoned = self.parts.poison.get();
        let folded = if written.is_ok() && poisoned.is_none() && !self.overlay {
            self.fold_now(!self.short_process).map(drop)
        } else {
            // Never mark a journal clean after a failed write, or after a panic left
            // idemdb's state in doubt: recovery must look at the journal. An overlay
            // session's fold would only reach memory: the next open replays the journal.
            Ok(())
        };
        let journal_closed = self
            .parts
            .journal
            .ring
            .lock()
            .close()
            .map_err(Error::from_io);
        let db_closed = self.parts.database.shut_down();
        if let Some(poisoned) = poisoned {
            return Err(poisoned);
        }
        written.and(folded).and(journal_closed).and(db_closed)
    }
}

/// How long a caller whose answer the writer dropped waits for the panic that dropped it to
/// poison the engine (it takes the time the writer thread needs to unwind).
const UNANSWERED_WAIT: Duration = Duration::from_secs(5);

/// How much unfolded journal a short-process session replays into memory before it folds
/// for real instead: every open reads it, so it bounds what an open costs.
const SHORT_PROCESS_UNFOLDED: u64 = 1024 * 1024;

/// Opens the database and the journal for a session. A short-process opener reads the
/// database through an in-memory overlay (see `Opener::open_overlay_on`) when the file's
/// checkpoint says the journal holds what was not folded and the journal holds less than
/// [`SHORT_PROCESS_UNFOLDED`] (or a quarter of its size) unfolded; otherwise the session
/// writes the database file for real. The file's lock is taken once, before anything is
/// judged, and held through the fallback from the overlay to the writing open.
fn open_session(opener: Opener, commit: CommitSettings) -> Result<Session> {
    if !opener.overlay() {
        let db = opener.open_database()?;
        return writing_session(opener, db, commit);
    }
    let held = opener.lock_file()?;
    let Some(db) = opener.open_overlay_on(&held)? else {
        let opener = opener.writing();
        let db = opener.open_writing_on(&held, false)?;
        return writing_session(opener, db, commit);
    };
    if tables::read_checkpoint(&db)?.is_none_or(|cp| cp.clean) {
        drop(db);
        let opener = opener.writing();
        let db = opener.open_writing_on(&held, true)?;
        return writing_session(opener, db, commit);
    }
    let filters = Filters::load_none(&db, commit.generation_keys)?;
    let (journal, replay) = open_journal(&opener, &db, commit, &filters)?;
    if journal.used() > SHORT_PROCESS_UNFOLDED.min(journal.area() / 4) {
        drop(journal);
        drop(db);
        let opener = opener.writing();
        let db = opener.open_writing_on(&held, true)?;
        return writing_session(opener, db, commit);
    }
    Ok((opener, db, filters, journal, replay))
}

/// What [`open_session`] opens: the opener the session reopens with, the database, its
/// filters, the journal, and what a short-process session replays into memory.
type Session = (Opener, redb::Database, Filters, Journal, Option<Replay>);

/// The rest of a session's open once the database is open for writing.
fn writing_session(opener: Opener, db: redb::Database, commit: CommitSettings) -> Result<Session> {
    let filters = Filters::load_sealed(&db, commit.generation_keys)?;
    let (journal, replay) = open_journal(&opener, &db, commit, &filters)?;
    Ok((opener, db, filters, journal, replay))
}

/// The changes a short-process session replays into memory: the last frame's LSN and the
/// latest state of each key the unfolded frames hold.
type Replay = (u64, Vec<(Vec<u8>, Option<Vec<u8>>)>);

/// Opens or creates the journal, recovering frames newer than the last checkpoint, and
/// records a fresh (not clean) checkpoint.
fn open_journal(
    opener: &Opener,
    db: &redb::Database,
    commit: CommitSettings,
    filters: &Filters,
) -> Result<(Journal, Option<Replay>)> {
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
    let mut replay = None;
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
            if opener.overlay() {
                let (journal, changes) =
                    replay_unfolded(io, &header, &cp).map_err(|e| opener.name_journal(e))?;
                replay = Some(changes);
                // The checkpoint on disk stays as it is (not clean): nothing to record.
                return Ok((journal, replay));
            }
            recover(io, &header, &cp, db, commit, filters).map_err(|e| opener.name_journal(e))?
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
    Ok((journal, replay))
}

/// A short-process session's recovery: the frames after the checkpoint, as the latest
/// state of each key, to be read into memory; the journal continues after them and keeps
/// them (no fold of this process reaches the database file).
fn replay_unfolded(
    io: Box<dyn redb::StorageBackend>,
    header: &FileHeader,
    checkpoint: &Checkpoint,
) -> Result<(Journal, Replay)> {
    let mut recovered =
        Journal::recover_quick(io.as_ref(), header, checkpoint.tail, checkpoint.folded_lsn)?;
    let latest = recovered.take_latest_states();
    let journal = Journal::resume_unfolded(
        io,
        header,
        checkpoint.tail,
        recovered.head,
        recovered.last_lsn,
    )?;
    Ok((journal, (recovered.last_lsn, latest.into_iter().collect())))
}

fn recover(
    io: Box<dyn redb::StorageBackend>,
    header: &FileHeader,
    checkpoint: &Checkpoint,
    db: &redb::Database,
    commit: CommitSettings,
    filters: &Filters,
) -> Result<Journal> {
    let mut recovered =
        Journal::recover(io.as_ref(), header, checkpoint.tail, checkpoint.folded_lsn)?;
    if !recovered.frames.is_empty() {
        let frames = recovered.frames.len();
        let latest = recovered.take_latest_states();
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
    database: &Database,
    table: &Snapshot,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<ScanPage> {
    let (stored, next) = catch_unwind(AssertUnwindSafe(|| table.page(start, end, limit)))
        .unwrap_or_else(|panic| {
            Err(database.caught("reading a page of a scan panicked", panic.as_ref()))
        })?;
    // The page covers keys up to where `next` starts; the memtable is merged over the same
    // span, so the next page starts right after it.
    let merge_end = next.as_deref().or(end);
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
    for (key, entry) in database.memtable.range(start, merge_end) {
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
        self.check_running()?;
        self.parts.database.read(key)
    }

    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>> {
        let n = ops.len();
        let refuse = |error: Error| (0..n).map(|_| Err(error.clone())).collect();
        if let Err(e) = self.check_running() {
            return refuse(e);
        }
        // Nothing running or queued, and the writer thread idle: commit here rather than
        // hand over to the writer.
        let commits = &self.parts.commits;
        if commits.settings.durable
            && !commits.settings.defer_claim_sync
            && self.jobs.is_empty()
            && !commits.writer_busy.load(Ordering::SeqCst)
            && let Some(_commits) = commits.lock.try_lock()
        {
            // Checked under the lock: a close waits for this commit, or it sees the close.
            if let Err(e) = self.check_running() {
                return refuse(e);
            }
            return writer::commit_here(&self.parts, ops);
        }
        let (reply, answer) = answer::pair();
        if self.jobs.send(Job::Apply { ops, reply }).is_err() {
            return refuse(self.unanswered());
        }
        answer.wait().unwrap_or_else(|| refuse(self.unanswered()))
    }

    fn submit(&self, ops: Vec<KeyedOp>) -> Applying {
        let n = ops.len();
        let refuse = move |error: Error| (0..n).map(|_| Err(error.clone())).collect::<Vec<_>>();
        if let Err(e) = self.check_running() {
            return Box::pin(std::future::ready(refuse(e)));
        }
        // Always through the writer thread: unlike `apply`, never a commit on the caller's
        // thread, which may be an async runtime's.
        let (reply, answer) = answer::pair();
        if self.jobs.send(Job::Apply { ops, reply }).is_err() {
            return Box::pin(std::future::ready(refuse(self.unanswered())));
        }
        let poison = Arc::clone(&self.parts.poison);
        Box::pin(async move {
            match answer.await {
                Some(results) => results,
                // As in `unanswered`, but the wait for the poison is a timer, not a thread.
                None => refuse(
                    poison
                        .wait_async(UNANSWERED_WAIT)
                        .await
                        .unwrap_or(Error::Closed),
                ),
            }
        })
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<ScanPage> {
        self.parts.poison.check()?;
        let database = &self.parts.database;
        for _ in 0..3 {
            let (epoch, table) = database.snapshot_at()?;
            let page = scan_page(database, &table, start, end, limit)?;
            // A fold that committed after the snapshot may have taken entries out of the
            // memtable before they were merged: the page could miss them. Read again. (Other
            // commits, sweeps, also move the epoch; they remove nothing from the memtable.)
            if database.epoch() == epoch {
                return Ok(page);
            }
        }
        // Still racing: hold folds off for one read, so nothing leaves the memtable meanwhile.
        let _folding = self.parts.folds.lock.lock();
        let table = database.snapshot()?;
        scan_page(database, &table, start, end, limit)
    }

    fn sweep(&self, now: Timestamp, limit: usize, from: Option<&[u8]>) -> Result<SweepPass> {
        self.check_running()?;
        let p = &self.parts;
        let sweeping = || {
            // Tombstones wait in the memtable until a fold: a long sweep folds as it goes,
            // so memory stays bounded (and it then runs at the fold's pace).
            if p.database.memtable.len() >= fold::FOLD_AT_KEYS {
                self.fold_now(false)?;
            }
            let max_payload = p.journal.max_payload;
            sweep::run_pass(&p.database, max_payload, &self.jobs, now, limit, from)
        };
        let swept = catch_unwind(AssertUnwindSafe(sweeping))
            .unwrap_or_else(|panic| Err(p.poison.poison("a sweep panicked", panic.as_ref())));
        match swept {
            // A job the writer dropped while it panicked.
            Err(Error::Closed) => Err(self.unanswered()),
            other => other,
        }
    }

    fn stats(&self) -> EngineStats {
        let WriterParts {
            database,
            journal,
            folds,
            commits,
            poison: _,
        } = &self.parts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            commits: get(&commits.commits),
            committed_ops: get(&commits.committed_ops),
            largest_batch: get(&commits.largest_batch),
            failed_commits: get(&commits.failed_commits),
            reopens: database.reopens(),
            folds: get(&folds.folds),
            folded_records: get(&folds.folded_records),
            failed_folds: get(&folds.failed_folds),
            memtable_records: database.memtable.len() as u64,
            journal_bytes_used: journal.used(),
            generations: database.filters.count() as u64,
        }
    }

    fn flush(&self) -> Result<()> {
        self.check_running()?;
        self.fold_now(false).map(|_| ())
    }

    fn check(&self, report: &mut CheckReport) -> Result<()> {
        self.check_running()?;
        self.fold_now(false)?;
        let db = self.parts.database.db()?;
        let database = &self.parts.database;
        catch_unwind(AssertUnwindSafe(|| check::check_tables(&db, report))).unwrap_or_else(
            |panic| Err(database.caught("checking the tables panicked", panic.as_ref())),
        )
    }

    fn close(&self) -> Result<()> {
        let mut result = self.close_result.lock();
        if let Some(r) = result.as_ref() {
            // A second close reports success (the store is closed either way), unless the
            // store is poisoned: that stays reported.
            return match r {
                Err(e @ Error::Poisoned { .. }) => Err(e.clone()),
                _ => Ok(()),
            };
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
