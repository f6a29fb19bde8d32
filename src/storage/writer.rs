//! The group-commit writer: one thread takes every queued operation, decides each against
//! the latest state (including earlier operations of the same batch), appends the batch's
//! changes to the journal as one frame, syncs once, publishes the changes to the memtable
//! and only then answers the callers.
//!
//! Batching is natural, not timed: while one sync runs, new operations queue up, and the
//! next frame takes all of them (up to `max_batch`, and a byte budget that keeps a frame
//! well inside the journal). A lone caller is never delayed waiting for company: when no
//! commit runs or waits, it commits on its own thread ([`commit_here`]), under the same
//! commit lock. Sweeps send their tombstones through the same thread, which commits the
//! operations queued meanwhile between their frames.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use crate::codec;
use crate::decision::{self, Change, Operation, Outcome};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::answer::Answerer;
use crate::storage::database::Database;
use crate::storage::fold::FoldState;
use crate::storage::journal::AppendError;
use crate::storage::journal::frame;
use crate::storage::journal_state::{FoldCut, JournalState};
use crate::storage::memtable::KeyUpdate;
use crate::storage::poison::Poison;
use crate::storage::{CommitSettings, KeyedOp};
use crate::time::{Clock, Timestamp};

/// What commits share: the lock each commit holds, whether the writer thread has a batch,
/// the settings and clock they decide with, and counters.
pub(crate) struct CommitState {
    pub(crate) settings: CommitSettings,
    pub(crate) clock: Arc<dyn Clock>,
    /// Held across each commit's decisions, journal append and publication: by the writer
    /// thread, or by a caller committing on its own thread (see [`commit_here`]).
    pub(crate) lock: Mutex<()>,
    /// Set while the writer thread has a batch to commit: callers then queue for it.
    pub(crate) writer_busy: AtomicBool,
    pub(crate) commits: AtomicU64,
    pub(crate) committed_ops: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
}

impl CommitState {
    pub(crate) fn new(settings: CommitSettings, clock: Arc<dyn Clock>) -> CommitState {
        CommitState {
            settings,
            clock,
            lock: Mutex::new(()),
            writer_busy: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            committed_ops: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
        }
    }

    /// Counts one successful commit of `ops` operations.
    fn count_commit(&self, ops: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_ops.fetch_add(ops, Ordering::Relaxed);
        self.largest_batch.fetch_max(ops, Ordering::Relaxed);
    }
}

/// The parts of the engine the writer works on.
#[derive(Clone)]
pub(crate) struct WriterParts {
    pub(crate) database: Arc<Database>,
    pub(crate) journal: Arc<JournalState>,
    pub(crate) folds: Arc<FoldState>,
    pub(crate) commits: Arc<CommitState>,
    /// Raised by a panic in any of the engine's threads.
    pub(crate) poison: Arc<Poison>,
}

/// What the writer is asked to do.
pub(crate) enum Job {
    /// Apply operations; answer with one result per operation.
    Apply {
        ops: Vec<KeyedOp>,
        reply: Answerer<Vec<Result<Outcome>>>,
    },
    /// Delete the records a sweep found due; answer with how many were deleted.
    Sweep {
        sweep: SweepJob,
        reply: Answerer<Result<u64>>,
    },
    /// Finish what is queued before this, make it durable, stop.
    Close { reply: Answerer<Result<()>> },
}

/// Records a sweep found expired in a redb snapshot, for the writer to delete.
pub(crate) struct SweepJob {
    /// Storage keys and the expiry-index instant each was found under.
    pub(crate) due: Vec<(Vec<u8>, Timestamp)>,
    /// The instant the sweep checked expiry at.
    pub(crate) now: Timestamp,
    /// The redb epoch of the snapshot the keys were checked in (see
    /// [`Database::epoch`]).
    pub(crate) epoch: u64,
    /// Sync the journal once the job is done (the last job of a sweep pass); otherwise the
    /// frames wait for the next sync, which covers every frame before it.
    pub(crate) sync: bool,
}

struct Pending {
    ops: Vec<KeyedOp>,
    reply: Answerer<Vec<Result<Outcome>>>,
}

/// Tombstones per journal frame of a sweep. The writer serves queued operations between
/// frames, so a claim waits for one frame, never for a whole sweep batch (a frame of 10,000
/// tombstones kept the writer for 4-8 ms; frames of 4,096 keep it well under that).
const SWEEP_FRAME: usize = 4096;
/// A deferred claim is made durable by the next sync, or after this long without one.
const DEFERRED_SYNC_DELAY: Duration = Duration::from_millis(2);

/// The longest the writer waits for the callers of its last batch to come back (see
/// `Writer::linger`): below one sync on the disks measured (about 100 µs to 3 ms).
const LINGER: Duration = Duration::from_micros(200);
/// How long a full journal may hold up a batch before it fails.
const JOURNAL_FULL_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn spawn(parts: WriterParts, queue: Receiver<Job>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("idemdb-writer".to_owned())
        .spawn(move || {
            let writing = || Writer::on(&parts).run(&queue);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(writing)) {
                parts
                    .poison
                    .poison("the writer thread panicked", panic.as_ref());
            }
        })
}

struct Writer<'a> {
    database: &'a Database,
    journal: &'a JournalState,
    folds: &'a FoldState,
    commits: &'a CommitState,
    poison: &'a Poison,
    /// Frames written without a sync (deferred claims, or non-durable stores).
    unsynced: bool,
    /// Operations in the last batch committed: their callers are likely to come back.
    last_batch_ops: usize,
}

impl<'a> Writer<'a> {
    fn on(parts: &'a WriterParts) -> Writer<'a> {
        Writer {
            database: &parts.database,
            journal: &parts.journal,
            folds: &parts.folds,
            commits: &parts.commits,
            poison: &parts.poison,
            unsynced: false,
            last_batch_ops: 0,
        }
    }

    fn run(mut self, queue: &Receiver<Job>) {
        // Jobs taken off the queue while a sweep served the operations queued behind it.
        let mut carried = VecDeque::new();
        loop {
            let first = if let Some(job) = carried.pop_front() {
                job
            } else if self.unsynced && self.commits.settings.durable {
                match queue.recv_timeout(DEFERRED_SYNC_DELAY) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.sync_deferred();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return self.finish(None),
                }
            } else {
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return self.finish(None),
                }
            };
            // Callers stop committing on their own threads until this batch is done (they
            // would take the lock again and again ahead of this thread otherwise).
            self.commits.writer_busy.store(true, Ordering::SeqCst);
            // Collect the batch only once no other commit runs: what queued meanwhile joins.
            let commits = self.commits.lock.lock();
            let mut first = Some(first);
            let (mut batch, mut other) = self.gather(|| {
                first
                    .take()
                    .or_else(|| carried.pop_front())
                    .or_else(|| queue.try_recv().ok())
            });
            if other.is_none() && self.commits.settings.durable {
                self.linger(&mut batch, &mut other, queue);
            }
            self.last_batch_ops = batch.iter().map(|p| p.ops.len()).sum();
            if !batch.is_empty() {
                self.commit(batch);
            }
            let mut close = None;
            match other {
                Some(Job::Sweep { sweep, reply }) => {
                    reply.send(self.sweep(sweep, queue, &mut carried));
                }
                Some(Job::Close { reply }) => close = Some(reply),
                // `gather` ends a batch only at another kind of job; were it not so, the
                // operations would simply be next.
                Some(apply @ Job::Apply { .. }) => carried.push_front(apply),
                None => {}
            }
            drop(commits);
            self.commits.writer_busy.store(false, Ordering::SeqCst);
            if let Some(reply) = close {
                // Anything queued after the close is refused.
                while let Ok(job) = queue.try_recv() {
                    match job {
                        Job::Apply { ops, reply } => {
                            reply.send(ops.iter().map(|_| Err(Error::Closed)).collect());
                        }
                        Job::Sweep { reply, .. } => {
                            reply.send(Err(Error::Closed));
                        }
                        Job::Close { reply } => {
                            reply.send(Ok(()));
                        }
                    }
                }
                return self.finish(Some(reply));
            }
        }
    }

    fn max_batch(&self) -> usize {
        self.commits.settings.max_batch.max(1)
    }

    /// Journal bytes a batch may reach: a frame stays well inside the journal.
    fn byte_budget(&self) -> usize {
        self.journal.max_payload / 2
    }

    /// Takes the operations of one batch from `next` (jobs in queue order) up to the batch
    /// limits; returns them and the job of another kind that ended the batch, if one did.
    fn gather(&self, mut next: impl FnMut() -> Option<Job>) -> (Vec<Pending>, Option<Job>) {
        let (mut batch, mut ops, mut bytes) = (Vec::new(), 0, 0);
        while ops < self.max_batch() && bytes < self.byte_budget() {
            match next() {
                Some(Job::Apply { ops: o, reply }) => {
                    ops += o.len();
                    bytes += batch_bytes(&o);
                    batch.push(Pending { ops: o, reply });
                }
                Some(other) => return (batch, Some(other)),
                None => break,
            }
        }
        (batch, None)
    }

    /// Waits briefly for more operations when far fewer are queued than the last batch
    /// carried: its callers were answered a moment ago and are about to come back, and one
    /// sync for all of them costs less than one each. Callers woken on an async runtime
    /// come back one by one as its few threads poll them; without this wait the first of
    /// them would start a sync of its own, and the batches stay small (measured with
    /// `benches/http_layer.rs`: README, "Benchmarks").
    fn linger(&self, batch: &mut Vec<Pending>, other: &mut Option<Job>, queue: &Receiver<Job>) {
        let want = self.last_batch_ops / 2;
        let mut ops: usize = batch.iter().map(|p| p.ops.len()).sum();
        let mut bytes: usize = batch.iter().map(|p| batch_bytes(&p.ops)).sum();
        let until = Instant::now() + LINGER;
        while ops < want && ops < self.max_batch() && bytes < self.byte_budget() {
            match queue.recv_deadline(until) {
                Ok(Job::Apply { ops: o, reply }) => {
                    ops += o.len();
                    bytes += batch_bytes(&o);
                    batch.push(Pending { ops: o, reply });
                }
                Ok(job) => {
                    *other = Some(job);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Commits the operations queued now (one batch), for a sweep between its frames. Stops
    /// at the first job of another kind, which `carried` keeps for the main loop, in order.
    fn serve_queued(&mut self, queue: &Receiver<Job>, carried: &mut VecDeque<Job>) {
        if !carried.is_empty() {
            // Whatever queued behind a carried job waits for it (a close refuses it).
            return;
        }
        let (batch, other) = self.gather(|| queue.try_recv().ok());
        carried.extend(other);
        if !batch.is_empty() {
            self.commit(batch);
        }
    }

    fn finish(mut self, reply: Option<Answerer<Result<()>>>) {
        let synced = if self.unsynced {
            self.unsynced = false;
            self.journal.ring.lock().sync().map_err(Error::from_io)
        } else {
            Ok(())
        };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "syncing the idemdb journal at close failed");
        }
        if let Some(reply) = reply {
            reply.send(synced);
        }
    }

    fn sync_deferred(&mut self) {
        self.unsynced = false;
        if let Err(error) = self.journal.ring.lock().sync() {
            // Deferred claims were acknowledged already; a crash now may lose them, which is
            // the trade-off their option documents.
            self.commits.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "syncing deferred idemdb claims failed");
        }
    }

    /// Decides, journals and answers one batch. The caller holds the commit lock.
    fn commit(&mut self, mut batch: Vec<Pending>) {
        let ops = batch
            .iter_mut()
            .map(|pending| std::mem::take(&mut pending.ops))
            .collect();
        let answers = self.decide_and_journal(ops);
        reply(batch, answers);
    }

    /// Decides each operation against the latest state, journals the batch's changes as one
    /// frame and publishes them; one answer per operation. The caller holds the commit lock.
    fn decide_and_journal(&mut self, batch: Vec<Vec<KeyedOp>>) -> Vec<Vec<Result<Outcome>>> {
        let now = self.commits.clock.now();
        // The batch's own view: keys it changed, with their new state.
        let mut overlay: HashMap<Vec<u8>, Option<Record>> = HashMap::new();
        let mut changed: Vec<Vec<u8>> = Vec::new();
        let mut only_claims = true;
        let mut answers: Vec<Vec<Result<Outcome>>> = Vec::with_capacity(batch.len());
        let mut op_count = 0u64;
        for ops in batch {
            let mut answer = Vec::with_capacity(ops.len());
            for (key, op) in ops {
                op_count += 1;
                let current = match overlay.get(&key) {
                    Some(state) => Ok(state.clone()),
                    None => self.database.read(&key),
                };
                let current = match (current, &op) {
                    (Ok(current), _) => current,
                    // An operator may still delete or overwrite a damaged record.
                    (Err(Error::Corrupt { .. }), Operation::Delete) => {
                        overlay.insert(key.clone(), None);
                        changed.push(key);
                        only_claims = false;
                        answer.push(Ok(Outcome::Deleted { existed: true }));
                        continue;
                    }
                    (
                        Err(Error::Corrupt { .. }),
                        Operation::Import {
                            overwrite: true, ..
                        },
                    ) => None,
                    (Err(e), _) => {
                        answer.push(Err(e));
                        continue;
                    }
                };
                #[cfg(feature = "testing")]
                crate::storage::poison::injected::fire(
                    crate::storage::poison::injected::PanicSite::Commit,
                    &key,
                );
                let is_claim = matches!(op, Operation::Claim(_));
                let t = decision::transition(current, op, now);
                let new_state = match t.change {
                    Change::Keep => None,
                    Change::Put(record) => Some(Some(record)),
                    Change::Delete => Some(None),
                };
                if let Some(state) = new_state {
                    only_claims &= is_claim;
                    if overlay.insert(key.clone(), state).is_none() {
                        changed.push(key);
                    }
                }
                answer.push(Ok(t.outcome));
            }
            answers.push(answer);
        }
        if changed.is_empty() {
            return answers;
        }
        let result = self.journal(&overlay, changed, only_claims);
        match result {
            Ok(()) => {
                self.commits.count_commit(op_count);
                answers
            }
            Err(error) => {
                // Nothing of a failed batch is acknowledged, or visible.
                self.commits.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "an idemdb journal commit failed");
                answers
                    .iter()
                    .map(|a| a.iter().map(|_| Err(error.clone())).collect())
                    .collect()
            }
        }
    }

    /// Deletes the due records of a sweep job, in journal frames of up to [`SWEEP_FRAME`]
    /// tombstones, serving the operations queued meanwhile between frames. The frames are
    /// synced once, at the end of the pass (a commit served between them syncs them
    /// earlier); until then a tombstone is visible but not durable, which is safe because
    /// it only hides a record that is expired anyway, and recovery brings back at most that
    /// record. If a frame fails, the frames before it stay: a sweep is safe to run again.
    fn sweep(
        &mut self,
        job: SweepJob,
        queue: &Receiver<Job>,
        carried: &mut VecDeque<Job>,
    ) -> Result<u64> {
        let mut due = job.due.into_iter().peekable();
        let mut deleted = 0;
        while due.peek().is_some() {
            let frame: Vec<_> = due.by_ref().take(SWEEP_FRAME).collect();
            deleted += self.sweep_frame(frame, job.now, job.epoch)?;
            if due.peek().is_some() {
                self.serve_queued(queue, carried);
            }
        }
        if job.sync && self.unsynced && self.commits.settings.durable {
            self.journal.ring.lock().sync().map_err(Error::from_io)?;
            self.unsynced = false;
        }
        Ok(deleted)
    }

    /// Journals (unsynced) and publishes the tombstones of the keys in `due` still due. A
    /// key with a newer journaled state is decided against that state; any other key was
    /// checked against redb by the sweep, and stays checked while no fold has committed
    /// since (a fold is the only thing that changes redb under a running store, and it
    /// forgets its memtable entries only after its commit moves the epoch).
    fn sweep_frame(
        &mut self,
        due: Vec<(Vec<u8>, Timestamp)>,
        now: Timestamp,
        epoch: u64,
    ) -> Result<u64> {
        let database = self.database;
        let mut tombstones: Vec<KeyUpdate> = Vec::with_capacity(due.len());
        for (key, sweep_at) in due {
            let trusted = !database.memtable.contains(&key) && database.epoch() == epoch;
            let due = trusted
                || database
                    .read(&key)
                    .is_ok_and(|current| swept(current, sweep_at, now));
            if due {
                tombstones.push((key, None));
            }
        }
        if tombstones.is_empty() {
            return Ok(0);
        }
        let deleted = tombstones.len() as u64;
        self.append_and_publish(tombstones, false)?;
        self.commits.count_commit(deleted);
        Ok(deleted)
    }

    /// Appends the batch's final states as one frame and publishes them.
    fn journal(
        &mut self,
        overlay: &HashMap<Vec<u8>, Option<Record>>,
        changed: Vec<Vec<u8>>,
        only_claims: bool,
    ) -> Result<()> {
        let mut changes: Vec<KeyUpdate> = Vec::with_capacity(changed.len());
        for key in changed {
            let value = match overlay.get(&key) {
                Some(Some(record)) => Some(Arc::from(codec::encode(record)?)),
                _ => None,
            };
            changes.push((key, value));
        }
        let settings = self.commits.settings;
        let sync = settings.durable && !(settings.defer_claim_sync && only_claims);
        self.append_and_publish(changes, sync)
    }

    /// Appends `changes` as one frame (synced if `sync`), then publishes them to the
    /// memtable. A full journal waits for a fold to free space.
    fn append_and_publish(&mut self, changes: Vec<KeyUpdate>, sync: bool) -> Result<()> {
        let journal = self.journal;
        let mut payload = Vec::new();
        frame::encode_changes(
            changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            &mut payload,
        );
        let started = Instant::now();
        let mut fold_attempts_seen = 0u32;
        loop {
            let seen = journal.space_freed.generation();
            let appended = {
                let mut ring = journal.ring.lock();
                let appended = ring.append(&payload, sync);
                journal.note_used(&ring);
                appended
            };
            match appended {
                Ok(appended) => {
                    // Publish, then advance the cut a fold may record (in that order).
                    self.database.memtable.publish(appended.lsn, changes);
                    *journal.cut.lock() = FoldCut {
                        lsn: appended.lsn,
                        end: appended.end,
                    };
                    // A sync covers every frame before it.
                    self.unsynced = !sync;
                    if journal.used() >= journal.area / 2 {
                        self.folds.wanted.notify();
                    }
                    return Ok(());
                }
                Err(AppendError::Full) => {
                    // A poisoned engine folds no more.
                    self.poison.check()?;
                    // Only a fold frees space. Wait for the next fold attempt; if folds are
                    // failing (a full disk), fail with their reason once one more has failed.
                    if fold_attempts_seen > 0
                        && let Some(error) = self.folds.error.lock().clone()
                    {
                        return Err(journal_full(error));
                    }
                    if started.elapsed() >= JOURNAL_FULL_TIMEOUT {
                        return Err(Error::StorageFull(Arc::new(std::io::Error::other(
                            "the journal is full and folding it into the database is not keeping up",
                        ))));
                    }
                    self.folds.wanted.notify();
                    journal.space_freed.wait(seen, Duration::from_millis(100));
                    if journal.space_freed.generation() != seen {
                        fold_attempts_seen += 1;
                    }
                }
                Err(AppendError::Io(e)) => return Err(Error::from_io(e)),
            }
        }
    }
}

/// The error for a journal that is full because folds fail.
fn journal_full(fold_error: Error) -> Error {
    match fold_error {
        Error::StorageFull(io) => Error::StorageFull(io),
        other => Error::StorageFull(Arc::new(std::io::Error::other(format!(
            "the journal is full and folding it into the database fails: {other}"
        )))),
    }
}

/// Commits `ops` on the calling thread, which holds the commit lock: when no other commit
/// is running or queued, this saves the two thread hand-offs (to the writer and back) that
/// would otherwise cost more than the decision itself. Only for stores that sync every
/// commit, so no frame is ever left for the writer thread to sync later.
pub(crate) fn commit_here(parts: &WriterParts, ops: Vec<KeyedOp>) -> Vec<Result<Outcome>> {
    let settings = parts.commits.settings;
    debug_assert!(settings.durable && !settings.defer_claim_sync);
    let n = ops.len();
    let committing = || {
        Writer::on(parts)
            .decide_and_journal(vec![ops])
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    catch_unwind(AssertUnwindSafe(committing)).unwrap_or_else(|panic| {
        let error = parts
            .poison
            .poison("a commit on the caller's thread panicked", panic.as_ref());
        (0..n).map(|_| Err(error.clone())).collect()
    })
}

/// Whether a sweep deletes `current`, found under `sweep_at`, at `now`.
fn swept(current: Option<Record>, sweep_at: Timestamp, now: Timestamp) -> bool {
    decision::transition(current, Operation::Sweep { sweep_at }, now).change == Change::Delete
}

fn reply(batch: Vec<Pending>, answers: Vec<Vec<Result<Outcome>>>) {
    for (pending, answer) in batch.into_iter().zip(answers) {
        pending.reply.send(answer);
    }
}

/// Roughly how many journal bytes a caller's operations can add.
fn batch_bytes(ops: &[KeyedOp]) -> usize {
    ops.iter().map(|(k, op)| estimated_size(k, op)).sum()
}

/// Roughly how many journal bytes an operation can add.
fn estimated_size(key: &[u8], op: &Operation) -> usize {
    let body = match op {
        Operation::Complete { response, .. } => response.len(),
        Operation::Import { record, .. } => record.response().map_or(0, <[u8]>::len),
        Operation::Claim(spec) => spec.owner.as_ref().map_or(0, Vec::len),
        _ => 0,
    };
    2 * key.len() + body + 160
}
