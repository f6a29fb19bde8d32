//! Sweeping expired records: find them through the expiry index in a redb snapshot, then
//! delete them through the journal, like any other write.
//!
//! A sweep is durable once its tombstones are journaled and synced; the pages they free are
//! reclaimed when the next fold writes the tombstones into redb, off the caller's path
//! (much as a database marks deleted rows dead and vacuums them later). So a sweep costs an
//! index scan and contiguous journal appends synced once per pass, never a scattered B-tree
//! commit. The scan of the next piece of a pass runs while the writer deletes the last
//! one, and the writer serves queued claims between its frames, so concurrent claims wait
//! for one frame at most.

use std::collections::HashSet;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::Sender;
use redb::ReadableDatabase;

use crate::codec;
use crate::error::{Error, Result};
use crate::storage::SweepPass;
use crate::storage::answer::{self, Answer};
use crate::storage::database::Database;
use crate::storage::open::corrupt_from_panic;
use crate::storage::tables::{EXPIRY, split_index_key};
use crate::storage::writer::{Job, SweepJob};
use crate::time::Timestamp;

/// Index entries scanned per piece of a pass, at most: the writer deletes one piece while
/// the next is scanned, so a pass costs about the larger of the two rather than their sum.
const SCAN_PIECE: usize = 2048;

/// One pass of a sweep: examines up to `limit` due entries from `from` (and, on the first
/// pass, the unfolded records) and has the writer delete the expired ones; see
/// [`Engine::sweep`](crate::storage::Engine::sweep).
pub(crate) fn run_pass(
    database: &Database,
    max_payload: usize,
    jobs: &Sender<Job>,
    now: Timestamp,
    limit: usize,
    from: Option<&[u8]>,
) -> Result<SweepPass> {
    let limit = limit.max(1);
    // The expiry index covers redb; the first pass of a sweep also looks through the
    // memtable for expired records not yet folded (cheaper than folding them first). The
    // epoch the writer checks is read before any look: a fold committing after it (which
    // may move a key out of the memtable) makes the writer read the key again.
    let epoch = database.epoch();
    let unfolded = if from.is_none() {
        due_in_memtable(database, now)
    } else {
        Vec::new()
    };
    // A fold between the looks moves keys from the memtable into the index: count each
    // key once.
    let seen: HashSet<Vec<u8>> = unfolded.iter().map(|(k, _)| k.clone()).collect();
    let mut pass = SweepPass {
        found: unfolded.len() as u64,
        ..SweepPass::default()
    };
    let mut writer = Pipeline {
        jobs,
        in_flight: Vec::new(),
        max_bytes: max_payload / 4,
        max_keys: limit,
        deleted: 0,
        jobs_sent: 0,
    };
    let mut due = unfolded;
    let mut cursor = from.map(<[u8]>::to_vec);
    let mut left = limit;
    // Small batches are cut in pieces too, so the pipeline (and its one sync) is the same
    // whatever the batch size.
    let piece_size = (limit / 4).clamp(1, SCAN_PIECE);
    loop {
        let piece = find_due(database, now, left.min(piece_size), cursor.as_deref())?;
        left -= piece.examined as usize;
        let mut piece_due = piece.due;
        let before = piece_due.len();
        if !seen.is_empty() {
            piece_due.retain(|(key, _)| !seen.contains(key));
        }
        pass.found += piece.examined - (before - piece_due.len()) as u64;
        due.append(&mut piece_due);
        cursor = piece.resume;
        let last = cursor.is_none() || left == 0;
        // At most one piece waits in the writer's queue: claims queued behind it wait less.
        writer.wait()?;
        writer.send(std::mem::take(&mut due), now, epoch, last)?;
        if last {
            break;
        }
    }
    writer.wait()?;
    pass.deleted = writer.deleted;
    pass.batches = pass.found.div_ceil(limit as u64);
    pass.resume = if left == 0 { cursor } else { None };
    Ok(pass)
}

/// The sweep jobs of a pass on their way through the writer.
struct Pipeline<'a> {
    jobs: &'a Sender<Job>,
    in_flight: Vec<Answer<Result<u64>>>,
    /// Journal bytes one job may carry, well inside the journal.
    max_bytes: usize,
    /// Keys one job may carry: the batch size (the unfolded records of a first pass can be
    /// many more).
    max_keys: usize,
    deleted: u64,
    jobs_sent: u64,
}

impl Pipeline<'_> {
    /// Hands `due` to the writer in jobs of at most `max_keys` and `max_bytes`; `sync`: the
    /// last of the pass.
    fn send(
        &mut self,
        due: Vec<(Vec<u8>, Timestamp)>,
        now: Timestamp,
        epoch: u64,
        sync: bool,
    ) -> Result<()> {
        let mut due = due.into_iter().peekable();
        loop {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while let Some((key, _)) = due.peek() {
                if chunk.len() == self.max_keys
                    || (bytes > 0 && bytes + key.len() + 16 > self.max_bytes)
                {
                    break;
                }
                bytes += key.len() + 16;
                chunk.extend(due.next());
            }
            let last = due.peek().is_none();
            // An empty job still syncs what the pass's earlier jobs wrote.
            if chunk.is_empty() && !(last && sync && self.jobs_sent > 0) {
                return Ok(());
            }
            let (reply, answer) = answer::pair();
            let job = SweepJob {
                due: chunk,
                now,
                epoch,
                sync: sync && last,
            };
            if self.jobs.send(Job::Sweep { sweep: job, reply }).is_err() {
                return Err(Error::Closed);
            }
            self.in_flight.push(answer);
            self.jobs_sent += 1;
            if last {
                return Ok(());
            }
        }
    }

    /// Waits for every job sent so far; the first error wins.
    fn wait(&mut self) -> Result<()> {
        let mut result = Ok(());
        for answer in self.in_flight.drain(..) {
            match answer.wait().unwrap_or(Err(Error::Closed)) {
                Ok(n) => self.deleted += n,
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result
    }
}

/// What a scan of the expiry index found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Due index entries examined.
    pub(crate) examined: u64,
    /// Keys due for deletion, with the instant each was indexed at.
    pub(crate) due: Vec<(Vec<u8>, Timestamp)>,
    /// Where the next scan starts (`None`: nothing more was due).
    pub(crate) resume: Option<Vec<u8>>,
}

/// Examines up to `limit` due expiry-index entries from `from` (an index key, inclusive), in
/// a snapshot opened now (the caller reads the epoch it hands the writer before this).
///
/// The index matches the records table exactly (a fold changes both in one transaction,
/// and finds the entry of a damaged record by a scan), so an entry at or before `now` is a
/// record expired at `now`: no record is read. A key with a newer journaled state is
/// decided against that state by the writer, which looks at the memtable for every key
/// before it deletes (see `writer::Writer::sweep_frame`).
pub(crate) fn find_due(
    database: &Database,
    now: Timestamp,
    limit: usize,
    from: Option<&[u8]>,
) -> Result<Found> {
    let db = database.db()?;
    catch_unwind(AssertUnwindSafe(|| -> Result<Found> {
        let read = db.begin_read().map_err(Error::from_redb)?;
        let expiry = read.open_table(EXPIRY).map_err(Error::from_redb)?;
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = now.as_millis().checked_add(1).map(u64::to_be_bytes);
        let upper = upper
            .as_ref()
            .map_or(Bound::Unbounded, |bound| Bound::Excluded(&bound[..]));
        let mut found = Found::default();
        for entry in expiry
            .range::<&[u8]>((lower, upper))
            .map_err(Error::from_redb)?
            .take(limit)
        {
            let (index, _) = entry.map_err(Error::from_redb)?;
            let index = index.value();
            found.examined += 1;
            let (at, key) = split_index_key(index).ok_or_else(|| Error::Corrupt {
                detail: "malformed expiry index entry".to_owned(),
            })?;
            found.due.push((key.to_vec(), at));
            if found.examined == limit as u64 {
                // A full batch: the next starts at the smallest index key after this one.
                found.resume = Some([index, &[0]].concat());
            }
        }
        Ok(found)
    }))
    .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))
}

/// The unfolded records expired at `now`, with the instant each becomes sweepable.
pub(crate) fn due_in_memtable(database: &Database, now: Timestamp) -> Vec<(Vec<u8>, Timestamp)> {
    database
        .memtable
        .snapshot()
        .into_iter()
        .filter_map(|(key, entry)| {
            // A damaged value cannot be judged here; the writer refuses to sweep it too.
            let record = codec::decode(entry.value.as_deref()?).ok()?;
            let at = record.sweep_at()?;
            record.is_expired(now).then(|| (key.into_vec(), at))
        })
        .collect()
}
