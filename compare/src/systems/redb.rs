//! redb used directly, as a user would without idemdb: a records table
//! (key → fingerprint, state, created_at, expires_at, response) and an expiry index
//! ((expires_at, key) → ()), with durable commits.
//!
//! A single-threaded workload commits once per operation. Concurrent workloads go through a
//! simple batching writer thread: it takes every queued operation, applies them in one
//! write transaction and answers them after the commit (redb allows one writer at a time,
//! so one commit per operation would serialize every thread on its own sync).

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::keys::{KeyStream, RETENTION_MS};
use crate::system::{Claimed, Lookup, Session, System};

/// A stored record: (fingerprint, state, created_at ms, expires_at ms, response).
type Row = ([u8; 32], u8, u64, u64, &'static [u8]);
/// The records table, open in a write transaction.
type RecordsTable<'txn> = Table<'txn, &'static str, Row>;

/// key → (fingerprint, state, created_at ms, expires_at ms, response).
const RECORDS: TableDefinition<&str, Row> = TableDefinition::new("records");
/// (expires_at ms, key) → (): what the sweep walks.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

const IN_FLIGHT: u8 = 0;
const COMPLETED: u8 = 1;
/// Records deleted per sweep transaction (idemdb's default sweep batch).
const SWEEP_BATCH: usize = 1000;
/// Operations the batching writer applies per transaction at most.
const MAX_BATCH: usize = 1024;
/// Records per prefill transaction.
const PREFILL_BATCH: u64 = 100_000;

/// A won claim: what `complete` needs to rewrite the record.
#[derive(Clone)]
pub struct RedbClaim {
    key: String,
    fp: [u8; 32],
    created: u64,
    expires: u64,
}

/// One write for the batching writer, with where to send its answer.
struct Job {
    op: Op,
    reply: mpsc::SyncSender<Result<bool, String>>,
}

enum Op {
    Claim(RedbClaim, u64),
    Complete(RedbClaim, Vec<u8>),
}

/// redb in one file.
pub struct Redb {
    db: Arc<Database>,
    writer: Mutex<Option<(mpsc::Sender<Job>, JoinHandle<()>)>>,
}

impl Redb {
    /// Creates a database at `path` with a 256 MiB cache (idemdb's default).
    pub fn open(path: &Path) -> Result<Redb> {
        let db = Database::builder()
            .set_cache_size(256 * 1024 * 1024)
            .create(path)
            .with_context(|| format!("creating the redb file {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(EXPIRY)?;
        txn.commit()?;
        Ok(Redb {
            db: Arc::new(db),
            writer: Mutex::new(None),
        })
    }

    fn batch_sender(&self) -> Result<mpsc::Sender<Job>> {
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| anyhow!("redb writer lock poisoned"))?;
        if let Some((tx, _)) = writer.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let db = Arc::clone(&self.db);
        let handle = std::thread::Builder::new()
            .name("redb-writer".to_owned())
            .spawn(move || batch_writer(&db, &rx))?;
        *writer = Some((tx.clone(), handle));
        Ok(tx)
    }

    fn bulk_insert(
        &self,
        keys: KeyStream,
        range: Range<u64>,
        created: u64,
        expires: u64,
    ) -> Result<()> {
        let mut start = range.start;
        while start < range.end {
            crate::check_interrupted()?;
            let end = (start + PREFILL_BATCH).min(range.end);
            // Sorted keys make the bulk insert walk the B-tree in order.
            let mut batch: Vec<_> = (start..end).map(|i| keys.request(i)).collect();
            batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            let txn = self.db.begin_write()?;
            {
                let mut records = txn.open_table(RECORDS)?;
                let mut expiry = txn.open_table(EXPIRY)?;
                for r in &batch {
                    records.insert(
                        r.key.as_str(),
                        (r.fp, COMPLETED, created, expires, r.response.as_slice()),
                    )?;
                    expiry.insert((expires, r.key.as_str()), ())?;
                }
            }
            txn.commit()?;
            start = end;
        }
        Ok(())
    }
}

impl Drop for Redb {
    fn drop(&mut self) {
        if let Ok(mut writer) = self.writer.lock()
            && let Some((tx, handle)) = writer.take()
        {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// Applies a claim in `txn`: wins if the key is absent or its record has expired.
fn apply_claim(
    records: &mut RecordsTable<'_>,
    expiry: &mut Table<(u64, &str), ()>,
    claim: &RedbClaim,
    now: u64,
) -> Result<bool> {
    let old_expiry = match records.get(claim.key.as_str())? {
        Some(existing) => {
            let (_, _, _, expires, _) = existing.value();
            if expires > now {
                return Ok(false);
            }
            Some(expires)
        }
        None => None,
    };
    if let Some(old) = old_expiry {
        expiry.remove((old, claim.key.as_str()))?;
    }
    records.insert(
        claim.key.as_str(),
        (claim.fp, IN_FLIGHT, claim.created, claim.expires, &[][..]),
    )?;
    expiry.insert((claim.expires, claim.key.as_str()), ())?;
    Ok(true)
}

/// Applies a completion in `txn`: the record must still be this claim's, in flight.
fn apply_complete(
    records: &mut RecordsTable<'_>,
    claim: &RedbClaim,
    response: &[u8],
) -> Result<bool> {
    let held = match records.get(claim.key.as_str())? {
        Some(existing) => {
            let (fp, state, created, _, _) = existing.value();
            fp == claim.fp && state == IN_FLIGHT && created == claim.created
        }
        None => false,
    };
    if held {
        records.insert(
            claim.key.as_str(),
            (claim.fp, COMPLETED, claim.created, claim.expires, response),
        )?;
    }
    Ok(held)
}

/// Applies `ops` in order in `txn` (each sees the ones before it); one outcome per op.
fn apply<'a>(txn: &WriteTransaction, ops: impl Iterator<Item = &'a Op>) -> Result<Vec<bool>> {
    let mut records = txn.open_table(RECORDS)?;
    let mut expiry = txn.open_table(EXPIRY)?;
    ops.map(|op| match op {
        Op::Claim(claim, now) => apply_claim(&mut records, &mut expiry, claim, *now),
        Op::Complete(claim, response) => apply_complete(&mut records, claim, response),
    })
    .collect()
}

/// One durable transaction per operation.
fn apply_alone(db: &Database, op: &Op) -> Result<bool> {
    let txn = db.begin_write()?;
    let outcome = apply(&txn, std::iter::once(op))?;
    txn.commit()?;
    outcome
        .first()
        .copied()
        .ok_or_else(|| anyhow!("redb: no outcome for the operation"))
}

/// The batching writer: every queued job in one transaction, answered after the commit.
fn batch_writer(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let result = (|| -> Result<Vec<bool>> {
            let txn = db.begin_write()?;
            let outcomes = apply(&txn, jobs.iter().map(|job| &job.op))?;
            txn.commit()?;
            Ok(outcomes)
        })();
        match result {
            Ok(outcomes) => {
                for (job, outcome) in jobs.iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for job in &jobs {
                    let _ = job
                        .reply
                        .send(Err(format!("redb batch commit failed: {e:#}")));
                }
            }
        }
    }
}

impl System for Redb {
    type Session = RedbSession;

    fn session(&self, concurrency: usize) -> Result<RedbSession> {
        let writer = if concurrency > 1 {
            Some(self.batch_sender()?)
        } else {
            None
        };
        Ok(RedbSession {
            db: Arc::clone(&self.db),
            writer,
        })
    }

    fn prefill(&mut self, keys: KeyStream, count: u64, now_ms: u64) -> Result<()> {
        self.bulk_insert(keys, 0..count, now_ms, now_ms + RETENTION_MS)
    }

    fn insert_completed(
        &mut self,
        keys: KeyStream,
        count: u64,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        self.bulk_insert(keys, 0..count, created_ms, expires_ms)
    }

    fn sweep(&self, now_ms: u64) -> Result<u64> {
        let mut total = 0;
        loop {
            let txn = self.db.begin_write()?;
            let deleted = {
                let mut records = txn.open_table(RECORDS)?;
                let mut expiry = txn.open_table(EXPIRY)?;
                let due: Vec<(u64, String)> = expiry
                    .range(..(now_ms + 1, ""))?
                    .take(SWEEP_BATCH)
                    .map(|entry| {
                        entry.map(|(k, _)| {
                            let (at, key) = k.value();
                            (at, key.to_owned())
                        })
                    })
                    .collect::<Result<_, _>>()?;
                for (at, key) in &due {
                    expiry.remove((*at, key.as_str()))?;
                    records.remove(key.as_str())?;
                }
                due.len()
            };
            txn.commit()?;
            total += deleted as u64;
            if deleted < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    fn describe(&self) -> String {
        "redb 4.6 used directly (durable commits, 256 MiB cache; one commit per op with 1 thread, a batching writer thread otherwise; sweep in batches of 1000)".to_owned()
    }
}

/// A handle on the database, and on the batching writer for concurrent workloads.
pub struct RedbSession {
    db: Arc<Database>,
    writer: Option<mpsc::Sender<Job>>,
}

impl RedbSession {
    fn write(&self, op: Op) -> Result<bool> {
        match &self.writer {
            None => apply_alone(&self.db, &op),
            Some(writer) => {
                let (reply, answer) = mpsc::sync_channel(1);
                writer
                    .send(Job { op, reply })
                    .map_err(|_| anyhow!("the redb writer thread has stopped"))?;
                answer
                    .recv()
                    .map_err(|_| anyhow!("the redb writer thread dropped a job"))?
                    .map_err(|e| anyhow!(e))
            }
        }
    }
}

impl Session for RedbSession {
    type Claim = RedbClaim;

    fn claim(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Claimed<RedbClaim>> {
        let claim = RedbClaim {
            key: key.to_owned(),
            fp: *fp,
            created: now_ms,
            expires: now_ms + RETENTION_MS,
        };
        let won = claim.clone();
        if self.write(Op::Claim(claim, now_ms))? {
            Ok(Claimed::Won(won))
        } else {
            Ok(Claimed::Taken { replayed: None })
        }
    }

    fn complete(&mut self, claim: RedbClaim, response: &[u8]) -> Result<()> {
        let key = claim.key.clone();
        if !self.write(Op::Complete(claim, response.to_vec()))? {
            bail!("redb: completing {key} found the claim gone");
        }
        Ok(())
    }

    fn replay(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Lookup> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let Some(entry) = records.get(key)? else {
            return Ok(Lookup::Missing);
        };
        let (stored_fp, state, _, expires, response) = entry.value();
        Ok(if expires <= now_ms {
            Lookup::Missing
        } else if stored_fp != *fp {
            Lookup::Conflict
        } else if state != COMPLETED {
            Lookup::InFlight
        } else {
            Lookup::Replay(response.to_vec())
        })
    }
}
