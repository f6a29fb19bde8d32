//! Folding: moving journaled changes into the redb tables in one large transaction, with
//! the checkpoint that frees their journal space.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{ReadableTable, WriteTransaction};

use crate::codec;
use crate::error::{Error, Result};
use crate::storage::CommitSettings;
use crate::storage::database::Database;
use crate::storage::generations::{Filters, GenerationsWriter};
use crate::storage::journal_state::JournalState;
use crate::storage::poison::Poison;
use crate::storage::signal::Signal;
use crate::storage::tables::{self, Checkpoint, EXPIRY, index_key};

/// Fold as soon as this many keys wait in the memtable.
pub(crate) const FOLD_AT_KEYS: usize = 200_000;

/// What folds share with the writer and the engine: the request for a fold, the lock that
/// serialises folds, why the last one failed, and counters.
pub(crate) struct FoldState {
    /// The store's commit settings (two-phase, quick repair, the fold interval).
    pub(crate) settings: CommitSettings,
    /// Asks the folder for a fold.
    pub(crate) wanted: Signal,
    /// Serialises folds (the folder thread, and the final fold at close); held by a scan
    /// that must not see keys leave the memtable.
    pub(crate) lock: Mutex<()>,
    /// Why the last fold failed, until one succeeds: a full journal waits for folds only
    /// while they can succeed.
    pub(crate) error: Mutex<Option<Error>>,
    pub(crate) folds: AtomicU64,
    pub(crate) folded_records: AtomicU64,
    pub(crate) failed_folds: AtomicU64,
}

impl FoldState {
    pub(crate) fn new(settings: CommitSettings) -> FoldState {
        FoldState {
            settings,
            wanted: Signal::default(),
            lock: Mutex::new(()),
            error: Mutex::new(None),
            folds: AtomicU64::new(0),
            folded_records: AtomicU64::new(0),
            failed_folds: AtomicU64::new(0),
        }
    }
}

/// Starts the folder thread: it folds when asked (the journal is filling up), when the
/// memtable grows large, and every `fold_interval` otherwise, until `stop` is set.
pub(crate) fn spawn_folder(
    database: Arc<Database>,
    journal: Arc<JournalState>,
    folds: Arc<FoldState>,
    poison: Arc<Poison>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("idemdb-folder".to_owned())
        .spawn(move || {
            let folding = || run_folder(&database, &journal, &folds, &stop);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(folding)) {
                poison.poison("the folder thread panicked", panic.as_ref());
                // A writer waiting for journal space must not wait for this thread.
                journal.space_freed.notify();
            }
        })
}

/// The folder thread's loop; see [`spawn_folder`]. Ends when `stop` is set or a fold
/// poisoned the engine.
fn run_folder(database: &Database, journal: &JournalState, folds: &FoldState, stop: &AtomicBool) {
    let interval = folds.settings.fold_interval;
    let mut last_fold = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let seen = folds.wanted.generation();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let memtable = &database.memtable;
        let due = journal.used() >= journal.area / 4
            || memtable.len() >= FOLD_AT_KEYS
            || (last_fold.elapsed() >= interval && !memtable.is_empty());
        if due {
            match fold_once(database, journal, folds, false) {
                Ok(_) => {
                    last_fold = Instant::now();
                    backoff = Duration::from_millis(50);
                }
                Err(Error::Poisoned { .. }) => return,
                Err(error) => {
                    tracing::error!(%error, "an idemdb fold failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        folds
            .wanted
            .wait(seen, interval.min(Duration::from_millis(250)));
    }
}

/// A write transaction configured for folding: always durable (the journal space it frees
/// is gone afterwards), with the store's two-phase and quick-repair settings.
pub(crate) fn begin_fold_txn(
    db: &redb::Database,
    commit: CommitSettings,
) -> Result<WriteTransaction> {
    let mut write = db.begin_write().map_err(Error::from_redb)?;
    write.set_two_phase_commit(commit.two_phase);
    write.set_quick_repair(commit.quick_repair);
    Ok(write)
}

/// Writes the latest state of each key into the generation holding it (a new key: the
/// current one), keeping the expiry index in step: the entry of the record replaced is
/// removed, the new record's is added. `incoming` is about how many changes there are.
pub(crate) fn apply_changes<'a>(
    write: &WriteTransaction,
    filters: &Filters,
    incoming: usize,
    changes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<usize> {
    let mut records = GenerationsWriter::open(write, filters, incoming)?;
    let mut expiry = write.open_table(EXPIRY).map_err(Error::from_redb)?;
    let mut n = 0;
    for (key, value) in changes {
        n += 1;
        // One descent per key: the write or removal hands back the record it replaced.
        let (old, new_sweep_at) = match value {
            Some(bytes) => {
                let new_sweep_at = codec::decode(bytes)?.sweep_at();
                let old = records.put(key, bytes)?;
                (old.map(|bytes| codec::decode(&bytes)), new_sweep_at)
            }
            None => {
                let old = records.remove(key)?;
                (old.map(|bytes| codec::decode(&bytes)), None)
            }
        };
        let old_sweep_at = match old {
            None => None,
            Some(Ok(record)) => record.sweep_at(),
            Some(Err(_)) => {
                // A damaged record's index entry cannot be computed: find it by scanning.
                // The sweeper trusts the index to match the records exactly.
                remove_index_entries_of(&mut expiry, key)?;
                None
            }
        };
        if old_sweep_at != new_sweep_at {
            if let Some(at) = old_sweep_at {
                expiry
                    .remove(index_key(at, key).as_slice())
                    .map_err(Error::from_redb)?;
            }
            if let Some(at) = new_sweep_at {
                expiry
                    .insert(index_key(at, key).as_slice(), ())
                    .map_err(Error::from_redb)?;
            }
        }
    }
    records.finish()?;
    Ok(n)
}

/// Removes every expiry-index entry of `key`: a scan of the whole index, for the rare
/// record too damaged to say where it is indexed.
fn remove_index_entries_of(expiry: &mut redb::Table<&'static [u8], ()>, key: &[u8]) -> Result<()> {
    let mut entries = Vec::new();
    for entry in expiry.iter().map_err(Error::from_redb)? {
        let (index, _) = entry.map_err(Error::from_redb)?;
        if index.value().get(8..) == Some(key) {
            entries.push(index.value().to_vec());
        }
    }
    for index in entries {
        expiry.remove(index.as_slice()).map_err(Error::from_redb)?;
    }
    Ok(())
}

/// Folds everything in the memtable into redb and frees the journal up to the last
/// published frame. With `clean`, also marks the journal as holding nothing to recover
/// (only at close, when nothing can be published any more). Returns the keys folded.
pub(crate) fn fold_once(
    database: &Database,
    journal: &JournalState,
    folds: &FoldState,
    clean: bool,
) -> Result<usize> {
    let _folding = folds.lock.lock();
    // Read the cut before the snapshot: every change up to the cut is in the memtable by
    // then (the writer publishes before it advances the cut). Changes after the cut may be
    // folded too; recovery replays them again, harmlessly, since frames hold final states.
    let cut = *journal.cut.lock();
    let entries = database.memtable.snapshot();
    if entries.is_empty() && !clean {
        return Ok(0);
    }
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        #[cfg(feature = "testing")]
        for (key, _) in &entries {
            crate::storage::poison::injected::fire(
                crate::storage::poison::injected::PanicSite::Fold,
                key,
            );
        }
        let db = database.writable_db()?;
        let write = begin_fold_txn(&db, folds.settings)?;
        apply_changes(
            &write,
            &database.filters,
            entries.len(),
            entries.iter().map(|(k, e)| (&**k, e.value.as_deref())),
        )?;
        tables::write_checkpoint(
            &write,
            &Checkpoint {
                journal_id: journal.id,
                folded_lsn: cut.lsn,
                tail: cut.end,
                clean,
            },
        )?;
        write.commit().map_err(Error::from_redb)
    }))
    .unwrap_or_else(|panic| Err(database.caught_writing("a fold panicked", panic.as_ref())));
    if let Err(e @ Error::Poisoned { .. }) = result {
        // Nothing of idemdb's state can be trusted: no reopen, no retry.
        journal.space_freed.notify();
        return Err(e);
    }
    if let Err(e) = result {
        folds.failed_folds.fetch_add(1, Ordering::Relaxed);
        *folds.error.lock() = Some(e.clone());
        journal.space_freed.notify();
        if let Err(reopen) = database.reopen() {
            tracing::error!(error = %reopen, "reopening the idemdb database failed");
        }
        return Err(e);
    }
    // In this order: the epoch moves, the cache forgets the keys, the memtable forgets them
    // (see `record_cache`).
    database.committed();
    database.cache.evict(entries.iter().map(|(k, _)| &**k));
    *folds.error.lock() = None;
    database
        .memtable
        .remove_folded(entries.iter().map(|(k, e)| (&**k, e.lsn)));
    {
        let mut ring = journal.ring.lock();
        ring.release_through(cut.lsn);
        journal.note_used(&ring);
    }
    journal.space_freed.notify();
    folds.folds.fetch_add(1, Ordering::Relaxed);
    folds
        .folded_records
        .fetch_add(entries.len() as u64, Ordering::Relaxed);
    Ok(entries.len())
}
