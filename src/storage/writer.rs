//! The group-commit writer: one thread applies every queued operation in one redb write
//! transaction and answers each caller only after that transaction has committed.
//!
//! Batching is natural, not timed: while one commit is syncing, new operations queue up,
//! and the next transaction takes all of them (up to `max_batch`). A lone caller is never
//! delayed waiting for company.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use redb::{ReadableTable, Table};

use crate::codec;
use crate::decision::{self, Change, Operation, Outcome};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::KeyedOp;
use crate::storage::open::corrupt_from_panic;
use crate::storage::redb_engine::Shared;
use crate::storage::tables::{EXPIRY, RECORDS, index_key};
use crate::time::Timestamp;

/// What the writer is asked to do.
pub(crate) enum Job {
    /// Apply operations; answer with one result per operation.
    Apply {
        ops: Vec<KeyedOp>,
        reply: Sender<Vec<Result<Outcome>>>,
    },
    /// Finish what is queued before this, make it durable, close the database, stop.
    Close { reply: Sender<Result<()>> },
}

struct Pending {
    ops: Vec<KeyedOp>,
    /// How many operations the caller sent: the ops are moved out while applying, and a
    /// failed batch still owes one answer per operation.
    count: usize,
    reply: Sender<Vec<Result<Outcome>>>,
}

pub(crate) fn spawn(shared: Arc<Shared>, queue: Receiver<Job>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("idemdb-writer".to_owned())
        .spawn(move || run(&shared, &queue))
}

fn run(shared: &Shared, queue: &Receiver<Job>) {
    let max_batch = shared.commit.max_batch.max(1);
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        let Ok(first) = queue.recv() else {
            // Every handle is gone without a close: still make the data durable.
            if let Err(e) = shared.shutdown() {
                tracing::warn!(error = %e, "closing the idemdb database failed");
            }
            return;
        };
        let mut close = None;
        let mut queued_ops = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Apply { ops, reply } => {
                    queued_ops += ops.len();
                    let count = ops.len();
                    batch.push(Pending { ops, count, reply });
                }
                Job::Close { reply } => {
                    close = Some(reply);
                    break;
                }
            }
            if queued_ops < max_batch {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(shared, &mut batch);
        }
        if let Some(reply) = close {
            // Anything queued after the close is refused.
            while let Ok(job) = queue.try_recv() {
                match job {
                    Job::Apply { ops, reply } => {
                        let _ = reply.send(ops.iter().map(|_| Err(Error::Closed)).collect());
                    }
                    Job::Close { reply } => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            let _ = reply.send(shared.shutdown());
            return;
        }
    }
}

/// Applies and commits one batch, then answers every caller in it.
fn commit_batch(shared: &Shared, batch: &mut Vec<Pending>) {
    let result = catch_unwind(AssertUnwindSafe(|| apply_and_commit(shared, batch)))
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())));
    match result {
        Ok(answers) => {
            for (pending, answer) in batch.drain(..).zip(answers) {
                let _ = pending.reply.send(answer);
            }
        }
        Err(error) => {
            // No operation of a failed batch took effect, and none is acknowledged.
            shared
                .counters
                .failed_commits
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "an idemdb commit failed; reopening the database");
            for pending in batch.drain(..) {
                let answer = (0..pending.count).map(|_| Err(error.clone())).collect();
                let _ = pending.reply.send(answer);
            }
            // redb refuses writes (and reads) after a failed commit until it is reopened;
            // reopen now so replays keep being served. If that fails too, the next batch
            // tries again.
            if let Err(e) = shared.reopen() {
                tracing::error!(error = %e, "reopening the idemdb database failed");
            }
        }
    }
}

fn apply_and_commit(shared: &Shared, batch: &mut [Pending]) -> Result<Vec<Vec<Result<Outcome>>>> {
    let db = shared.writable_db()?;
    let now = shared.clock.now();
    let mut txn = db.begin_write().map_err(Error::from_redb)?;
    let settings = shared.commit;
    if !settings.durable {
        txn.set_durability(redb::Durability::None)
            .map_err(|e| Error::Storage(Arc::new(e.into())))?;
    }
    txn.set_two_phase_commit(settings.two_phase);
    txn.set_quick_repair(settings.quick_repair);

    let mut wrote = false;
    let mut op_count = 0u64;
    let mut answers = Vec::with_capacity(batch.len());
    {
        let mut records = txn.open_table(RECORDS).map_err(Error::from_redb)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(Error::from_redb)?;
        for pending in batch.iter_mut() {
            let mut answer = Vec::with_capacity(pending.ops.len());
            for (key, op) in std::mem::take(&mut pending.ops) {
                op_count += 1;
                answer.push(apply_op(
                    &mut records,
                    &mut expiry,
                    &key,
                    op,
                    now,
                    &mut wrote,
                )?);
            }
            answers.push(answer);
        }
    }
    if wrote {
        txn.commit().map_err(Error::from_redb)?;
        let c = &shared.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.committed_ops.fetch_add(op_count, Ordering::Relaxed);
        c.largest_batch.fetch_max(op_count, Ordering::Relaxed);
    } else {
        txn.abort().map_err(Error::from_redb)?;
    }
    Ok(answers)
}

/// Applies one operation inside the batch's transaction. The outer error fails the whole
/// batch (storage failed); the inner one fails this operation alone (its record is damaged).
fn apply_op(
    records: &mut Table<&[u8], &[u8]>,
    expiry: &mut Table<&[u8], ()>,
    key: &[u8],
    op: Operation,
    now: Timestamp,
    wrote: &mut bool,
) -> Result<Result<Outcome>> {
    let stored = records.get(key).map_err(Error::from_redb)?;
    let current = match stored.map(|bytes| codec::decode(bytes.value())) {
        None => None,
        Some(Ok(record)) => Some(record),
        Some(Err(e)) => {
            // A damaged record can still be deleted or overwritten by an operator; its
            // index entry (unknown now) is cleaned up when the sweeper meets it.
            return match op {
                Operation::Delete => {
                    records.remove(key).map_err(Error::from_redb)?;
                    *wrote = true;
                    Ok(Ok(Outcome::Deleted { existed: true }))
                }
                Operation::Import {
                    record,
                    overwrite: true,
                } => {
                    put(records, expiry, key, None, &record)?;
                    *wrote = true;
                    Ok(Ok(Outcome::Imported { written: true }))
                }
                _ => Ok(Err(e)),
            };
        }
    };
    let old_sweep_at = current.as_ref().and_then(Record::sweep_at);
    let swept_at = match op {
        Operation::Sweep { sweep_at } => Some(sweep_at),
        _ => None,
    };
    let t = decision::transition(current, op, now);
    match t.change {
        Change::Keep => {
            // An index entry that no longer matches its record is stale: drop it, so the
            // sweeper never meets it again.
            if let Some(at) = swept_at
                && old_sweep_at != Some(at)
            {
                expiry
                    .remove(index_key(at, key).as_slice())
                    .map_err(Error::from_redb)?;
                *wrote = true;
            }
        }
        Change::Put(record) => {
            put(records, expiry, key, old_sweep_at, &record)?;
            *wrote = true;
        }
        Change::Delete => {
            records.remove(key).map_err(Error::from_redb)?;
            if let Some(at) = old_sweep_at {
                expiry
                    .remove(index_key(at, key).as_slice())
                    .map_err(Error::from_redb)?;
            }
            *wrote = true;
        }
    }
    Ok(Ok(t.outcome))
}

fn put(
    records: &mut Table<&[u8], &[u8]>,
    expiry: &mut Table<&[u8], ()>,
    key: &[u8],
    old_sweep_at: Option<Timestamp>,
    record: &Record,
) -> Result<()> {
    let bytes = codec::encode(record)?;
    records
        .insert(key, bytes.as_slice())
        .map_err(Error::from_redb)?;
    let new_sweep_at = record.sweep_at();
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
    Ok(())
}
