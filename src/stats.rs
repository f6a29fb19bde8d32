//! Counters of what a store has done, and counts of what it holds.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::record::{Record, StateKind};
use crate::storage::EngineStats;
use crate::time::Timestamp;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) executes: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) in_progress: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) completes: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) abandons: AtomicU64,
    pub(crate) sweeps: AtomicU64,
    pub(crate) expired_swept: AtomicU64,
}

/// What a store has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `begin`s answered Execute (including recoveries).
    pub executes: u64,
    /// Executes that took over an abandoned claim.
    pub recoveries: u64,
    /// `begin`s answered Replay.
    pub replays: u64,
    /// `begin`s answered Conflict.
    pub conflicts: u64,
    /// `begin`s answered InProgress.
    pub in_progress: u64,
    /// `begin`s answered Abandoned.
    pub abandoned: u64,
    /// Claims completed.
    pub completes: u64,
    /// Claims released.
    pub releases: u64,
    /// Claims abandoned (dropped, or declared dead).
    pub abandons: u64,
    /// Sweep batches run.
    pub sweeps: u64,
    /// Expired records deleted by sweeps.
    pub expired_swept: u64,
    /// Group commits (journal frames) made durable.
    pub commits: u64,
    /// Operations applied by those commits.
    pub committed_ops: u64,
    /// The most operations one commit carried.
    pub largest_batch: u64,
    /// Commits that failed (every operation in them failed too).
    pub failed_commits: u64,
    /// Attempts to reopen the database after a failure.
    pub reopens: u64,
    /// Folds of journaled changes into the database.
    pub folds: u64,
    /// Keys moved into the database by folds.
    pub folded_records: u64,
    /// Folds that failed (retried; the journal keeps the changes meanwhile).
    pub failed_folds: u64,
    /// Keys whose latest change is journaled but not yet folded.
    pub unfolded_records: u64,
    /// Bytes of the journal holding unfolded changes.
    pub journal_bytes_used: u64,
    /// Generations of the records table holding records (see
    /// [`StoreBuilder::generation_size`](crate::StoreBuilder::generation_size)).
    pub generations: u64,
    /// Claims held by callers in this process right now.
    pub in_flight_here: u64,
}

impl Stats {
    pub(crate) fn collect(c: &Counters, engine: EngineStats, in_flight_here: usize) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            executes: get(&c.executes),
            recoveries: get(&c.recoveries),
            replays: get(&c.replays),
            conflicts: get(&c.conflicts),
            in_progress: get(&c.in_progress),
            abandoned: get(&c.abandoned),
            completes: get(&c.completes),
            releases: get(&c.releases),
            abandons: get(&c.abandons),
            sweeps: get(&c.sweeps),
            expired_swept: get(&c.expired_swept),
            commits: engine.commits,
            committed_ops: engine.committed_ops,
            largest_batch: engine.largest_batch,
            failed_commits: engine.failed_commits,
            reopens: engine.reopens,
            folds: engine.folds,
            folded_records: engine.folded_records,
            failed_folds: engine.failed_folds,
            unfolded_records: engine.memtable_records,
            journal_bytes_used: engine.journal_bytes_used,
            generations: engine.generations,
            in_flight_here: in_flight_here as u64,
        }
    }
}

/// How many records a store holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateCounts {
    /// In flight with a live lease.
    pub in_flight: u64,
    /// In flight with an ended lease (holder vanished).
    pub abandoned: u64,
    /// Completed.
    pub completed: u64,
    /// Expired, waiting for the sweeper.
    pub expired: u64,
    /// Records that could not be decoded.
    pub corrupt: u64,
    /// Total bytes of stored responses.
    pub response_bytes: u64,
    /// When the oldest live in-flight (or abandoned) record was created.
    pub oldest_in_flight: Option<Timestamp>,
}

impl StateCounts {
    pub(crate) fn add(&mut self, record: &Record, now: Timestamp) {
        match record.kind(now) {
            StateKind::InFlight => self.in_flight += 1,
            StateKind::Abandoned => self.abandoned += 1,
            StateKind::Completed => self.completed += 1,
            StateKind::Expired => self.expired += 1,
        }
        if matches!(record.kind(now), StateKind::InFlight | StateKind::Abandoned) {
            let created = record.created_at();
            self.oldest_in_flight = Some(self.oldest_in_flight.map_or(created, |t| t.min(created)));
        }
        self.response_bytes += record.response().map_or(0, |r| r.len() as u64);
    }

    /// Records of every state but expired.
    pub fn live(&self) -> u64 {
        self.in_flight + self.abandoned + self.completed
    }
}
