//! The engine of a store opened read-only: the database through redb's read-only handle,
//! and the journal's unfolded changes read into memory. Nothing is written, nothing is
//! created, and the lock is shared with other read-only opens.
//!
//! Each operation is still decided by [`decision::transition`], so an answer that changes
//! nothing (a replay, a conflict, a key in progress) is given as a writing store would give
//! it; one that would change a record is [`Error::ReadOnly`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use redb::ReadableDatabase;

use crate::codec;
use crate::decision::{self, Change, Operation, Outcome};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::check::{self, CheckReport, guarded_unverified};
use crate::storage::generations::{Filters, RecordsView};
use crate::storage::journal::Journal;
use crate::storage::journal::file::{JournalFile, journal_path};
use crate::storage::open::Opener;
use crate::storage::tables;
use crate::storage::{Applying, Engine, EngineStats, KeyedOp, ScanPage, SweepPass};
use crate::time::{Clock, Timestamp};

/// The unfolded journal's last state of each key (`None`: deleted).
type Unfolded = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A store's files as they were when it was opened read-only.
pub(crate) struct ReadOnlyEngine {
    path: PathBuf,
    /// `None` once closed.
    db: Mutex<Option<redb::ReadOnlyDatabase>>,
    /// The records as of the open: no one can change them while the shared lock is held.
    view: RecordsView,
    generations: usize,
    unfolded: Unfolded,
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
}

impl ReadOnlyEngine {
    /// Opens the store's database read-only and reads what its journal holds beyond the
    /// last fold.
    pub(crate) fn open(opener: &Opener, clock: Arc<dyn Clock>) -> Result<ReadOnlyEngine> {
        let db = opener.open_read_only_database()?;
        // Without filters: building the current generation's reads all its keys, which a
        // short-lived reader's few lookups never repay.
        let view = guarded_unverified(|| {
            let read = db.begin_read().map_err(Error::from_redb)?;
            RecordsView::open(&read, &Filters::none())
        })?;
        let unfolded = read_unfolded(opener, &db)?;
        Ok(ReadOnlyEngine {
            path: opener.path().to_owned(),
            generations: view.tables().count(),
            db: Mutex::new(Some(db)),
            view,
            unfolded,
            clock,
            closed: AtomicBool::new(false),
        })
    }

    fn refuse(&self, needs: &str) -> Error {
        Error::ReadOnly {
            path: self.path.clone(),
            needs: needs.to_owned(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

/// The journal's changes after the last fold, when the store was not closed cleanly (a
/// process holding it was killed, or a short-process session left them to the journal):
/// what recovery would fold, kept in memory instead. The journal is opened read-only and
/// recovered as a short-process session recovers it.
fn read_unfolded(opener: &Opener, db: &redb::ReadOnlyDatabase) -> Result<Unfolded> {
    let Some(checkpoint) = tables::read_checkpoint(db)? else {
        return Ok(Unfolded::new());
    };
    if checkpoint.clean {
        return Ok(Unfolded::new());
    }
    let path = journal_path(opener.path());
    let io = match JournalFile::open_read_only(&path) {
        Ok(io) => io,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Corrupt {
                detail: format!(
                    "{}: the journal is missing, but the store was not closed cleanly: acknowledged operations would be lost",
                    opener.path().display()
                ),
            });
        }
        Err(e) => return Err(Error::from_io(e)),
    };
    let header = Journal::read_header(&io).map_err(|e| opener.name_journal(e))?;
    if header.journal_id != checkpoint.journal_id {
        return Err(Error::Corrupt {
            detail: format!(
                "{}: the journal belongs to another store",
                opener.path().display()
            ),
        });
    }
    let mut recovered =
        Journal::recover_quick(&io, &header, checkpoint.tail, checkpoint.folded_lsn)
            .map_err(|e| opener.name_journal(e))?;
    Ok(recovered.take_latest_states())
}

fn what_writes(op: &Operation) -> &'static str {
    match op {
        Operation::Claim(_) => "claiming the key",
        Operation::Complete { .. } => "completing the claim",
        Operation::Release { .. } => "releasing the claim",
        Operation::Abandon { .. } => "abandoning the claim",
        Operation::ExtendLease { .. } => "extending the lease",
        Operation::Detach { .. } => "detaching the claim",
        Operation::Delete => "deleting the record",
        Operation::Sweep { .. } => "sweeping the record",
        Operation::Import { .. } => "importing the record",
    }
}

impl Engine for ReadOnlyEngine {
    fn read(&self, key: &[u8]) -> Result<Option<Record>> {
        self.check_open()?;
        if let Some(state) = self.unfolded.get(key) {
            return state.as_deref().map(codec::decode).transpose();
        }
        let bytes = guarded_unverified(|| self.view.get(key))?;
        bytes.map(|b| codec::decode(&b)).transpose()
    }

    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>> {
        let now: Timestamp = self.clock.now();
        ops.into_iter()
            .map(|(key, op)| {
                let current = self.read(&key)?;
                let needs = what_writes(&op);
                let t = decision::transition(current, op, now);
                match t.change {
                    Change::Keep => Ok(t.outcome),
                    Change::Put(_) | Change::Delete => Err(self.refuse(needs)),
                }
            })
            .collect()
    }

    fn submit(&self, ops: Vec<KeyedOp>) -> Applying {
        // Nothing is committed or synced here, and no lock is held across I/O: deciding on
        // the calling thread keeps the promise `submit` makes.
        Box::pin(std::future::ready(self.apply(ops)))
    }

    fn flush(&self) -> Result<()> {
        self.check_open()?;
        // Folding writes the store file: fine only when there is nothing to fold.
        if self.unfolded.is_empty() {
            Ok(())
        } else {
            Err(self.refuse("folding the journal"))
        }
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<ScanPage> {
        self.check_open()?;
        let (stored, next) = guarded_unverified(|| self.view.page(start, end, limit))?;
        // The page covers keys up to where `next` starts; the unfolded changes are merged
        // over the same span.
        let merge_end = next.as_deref().or(end);
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        let upper = merge_end.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        for (key, value) in self
            .unfolded
            .range::<[u8], _>((std::ops::Bound::Included(start), upper))
        {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
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

    fn sweep(&self, _now: Timestamp, _limit: usize, _from: Option<&[u8]>) -> Result<SweepPass> {
        self.check_open()?;
        Err(self.refuse("a sweep"))
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            memtable_records: self.unfolded.len() as u64,
            generations: self.generations as u64,
            ..EngineStats::default()
        }
    }

    fn check(&self, report: &mut CheckReport) -> Result<()> {
        self.check_open()?;
        let db = self.db.lock();
        let db = db.as_ref().ok_or(Error::Closed)?;
        guarded_unverified(|| check::check_readable_tables(db, report))
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        match self.db.lock().take() {
            Some(db) => db.close().map_err(Error::from_redb),
            None => Ok(()),
        }
    }
}
