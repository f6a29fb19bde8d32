//! idemdb itself, through its public API, with default settings (durable commits), except
//! that the background sweeper is off and time comes from a [`ManualClock`], so that W4
//! can expire records without sleeping and sweep them itself with `sweep_now`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use idemdb::{Begin, Claim, Durability, Fingerprint, ManualClock, Record, Store, Timestamp};

use crate::keys::{KeyStream, RETENTION_MS, SCOPE};
use crate::system::{Claimed, Lookup, Session, System};

/// How the prefill writes its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefillMethod {
    /// `Store::import` of completed records: one operation per record.
    Import,
    /// `begin` + `complete`: two operations per record, as real traffic writes them.
    Cycle,
}

/// Threads that feed the writer during bulk writes: its group commit batches one operation
/// per waiting caller, so more callers make larger batches.
const PREFILL_THREADS: u64 = 64;

/// idemdb in one file.
pub struct Idemdb {
    path: PathBuf,
    store: Store,
    clock: ManualClock,
    prefill_method: PrefillMethod,
    sweep_batch: usize,
}

impl Idemdb {
    /// Creates a store at `path`; `sweep_batch` is the records per sweep transaction.
    pub fn open(
        path: PathBuf,
        now_ms: u64,
        prefill_method: PrefillMethod,
        sweep_batch: usize,
    ) -> Result<Idemdb> {
        let clock = ManualClock::new(Timestamp::from_millis(now_ms));
        let store = durable_store(&path, &clock, sweep_batch)?;
        Ok(Idemdb {
            path,
            store,
            clock,
            prefill_method,
            sweep_batch,
        })
    }
}

/// The default records per sweep transaction (`StoreBuilder::sweep_batch`'s default).
pub const DEFAULT_SWEEP_BATCH: usize = 10_000;

/// The measured configuration: defaults, no background sweeper, the manual clock.
fn durable_store(path: &PathBuf, clock: &ManualClock, sweep_batch: usize) -> Result<Store> {
    Store::builder()
        .sweep_interval(None)
        .sweep_batch(sweep_batch)
        .clock(clock.clone())
        .open(path)
        .with_context(|| format!("opening the idemdb store {}", path.display()))
}

/// Writes completed records for keys `0..count` from several threads.
fn write_records(
    store: &Store,
    keys: KeyStream,
    count: u64,
    created_ms: u64,
    expires_ms: u64,
    method: PrefillMethod,
) -> Result<()> {
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PREFILL_THREADS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        crate::check_interrupted()?;
                        let start = next.fetch_add(1024, Ordering::Relaxed);
                        if start >= count {
                            return Ok(());
                        }
                        for i in start..(start + 1024).min(count) {
                            let r = keys.request(i);
                            let fp = Fingerprint::from_bytes(r.fp);
                            match method {
                                PrefillMethod::Import => {
                                    let created = Timestamp::from_millis(created_ms);
                                    let record = Record::builder(fp, created)
                                        .expires_at(Some(Timestamp::from_millis(expires_ms)))
                                        .completed(created, r.response);
                                    if !store.import(SCOPE, &r.key, record, false)? {
                                        bail!(
                                            "idemdb: import of fresh key {} wrote nothing",
                                            r.key
                                        );
                                    }
                                }
                                PrefillMethod::Cycle => match store.begin(SCOPE, &r.key, fp)? {
                                    Begin::Execute(claim) => {
                                        claim.complete(&r.response).map_err(|e| e.error)?;
                                    }
                                    other => bail!(
                                        "idemdb: prefill claim of fresh key {} answered {}",
                                        r.key,
                                        other.kind()
                                    ),
                                },
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow!("a prefill thread panicked"))?)
    })
}

impl System for Idemdb {
    type Session = IdemdbSession;

    fn session(&self, _concurrency: usize) -> Result<IdemdbSession> {
        Ok(IdemdbSession {
            store: self.store.clone(),
        })
    }

    /// Closes the durable store, writes the records through a non-durable store (the
    /// writer still group-commits, but skips every sync), closes it (which makes everything
    /// durable) and reopens the measured configuration, which verifies the file.
    fn prefill(&mut self, keys: KeyStream, count: u64, now_ms: u64) -> Result<()> {
        self.store
            .close()
            .context("closing idemdb before the prefill")?;
        self.clock.set(Timestamp::from_millis(now_ms));
        let fast = Store::builder()
            .sweep_interval(None)
            .clock(self.clock.clone())
            .durability(Durability::None)
            .verify_on_open(false)
            .open(&self.path)
            .context("opening idemdb for the prefill")?;
        let expires = now_ms + RETENTION_MS;
        let started = Instant::now();
        write_records(&fast, keys, count, now_ms, expires, self.prefill_method)?;
        let written = started.elapsed();
        fast.close().context("closing idemdb after the prefill")?;
        drop(fast);
        let closed = started.elapsed();
        self.store = durable_store(&self.path, &self.clock, self.sweep_batch)?;
        eprintln!(
            "  idemdb: records written in {:.1} s, closed (last fold) in {:.1} s, reopened (verifying every page) in {:.1} s",
            written.as_secs_f64(),
            (closed - written).as_secs_f64(),
            (started.elapsed() - closed).as_secs_f64()
        );
        Ok(())
    }

    fn set_time(&self, now_ms: u64) {
        // Never backwards: W4 moves the clock ahead of the wall clock.
        if now_ms > self.clock_now() {
            self.clock.set(Timestamp::from_millis(now_ms));
        }
    }

    fn insert_completed(
        &mut self,
        keys: KeyStream,
        count: u64,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        write_records(
            &self.store,
            keys,
            count,
            created_ms,
            expires_ms,
            PrefillMethod::Import,
        )?;
        self.wait_for_fold()
    }

    fn sweep(&self, now_ms: u64) -> Result<u64> {
        self.set_time(now_ms);
        self.store.sweep_now().context("idemdb: sweep_now")
    }

    fn describe(&self) -> String {
        format!(
            "idemdb {} (default settings: durable group commit into the journal, folds every 1 s, 256 MiB page cache and 64 MiB record cache, sweeps in batches of {}; background sweeper off, manual clock)",
            env!("CARGO_PKG_VERSION"),
            self.sweep_batch
        )
    }

    fn notes(&self) -> Option<String> {
        let s = self.store.stats();
        let per = if s.commits == 0 {
            0.0
        } else {
            s.committed_ops as f64 / s.commits as f64
        };
        Some(format!(
            "idemdb since its last open: {} group commits, {:.1} operations per commit, largest batch {}; \
             {} folds moving {} records; {} sweep batches deleting {} records",
            s.commits, per, s.largest_batch, s.folds, s.folded_records, s.sweeps, s.expired_swept
        ))
    }
}

impl Idemdb {
    fn clock_now(&self) -> u64 {
        idemdb::Clock::now(&self.clock).as_millis()
    }

    /// Waits until the background folder has moved every journaled change into the
    /// database, as it has for any record older than a second or so in a running store.
    fn wait_for_fold(&self) -> Result<()> {
        let started = Instant::now();
        while self.store.stats().unfolded_records > 0 {
            crate::check_interrupted()?;
            if started.elapsed() > FOLD_WAIT {
                bail!(
                    "idemdb: {} records still unfolded after {FOLD_WAIT:?}",
                    self.store.stats().unfolded_records
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// How long the set-up waits for the folder at most.
const FOLD_WAIT: Duration = Duration::from_secs(120);

/// A clone of the store (stores are cheap to clone and thread-safe).
pub struct IdemdbSession {
    store: Store,
}

impl Session for IdemdbSession {
    type Claim = Claim;

    fn claim(&mut self, key: &str, fp: &[u8; 32], _now_ms: u64) -> Result<Claimed<Claim>> {
        match self.store.begin(SCOPE, key, Fingerprint::from_bytes(*fp))? {
            Begin::Execute(claim) => Ok(Claimed::Won(claim)),
            Begin::Replay(r) => Ok(Claimed::Taken {
                replayed: Some(r.response),
            }),
            Begin::InProgress(_) => Ok(Claimed::Taken { replayed: None }),
            other => bail!("idemdb: claim of {key} answered {}", other.kind()),
        }
    }

    fn complete(&mut self, claim: Claim, response: &[u8]) -> Result<()> {
        claim.complete(response).map_err(|e| e.error)?;
        Ok(())
    }

    fn replay(&mut self, key: &str, fp: &[u8; 32], _now_ms: u64) -> Result<Lookup> {
        Ok(
            match self.store.begin(SCOPE, key, Fingerprint::from_bytes(*fp))? {
                Begin::Replay(r) => Lookup::Replay(r.response),
                Begin::Conflict(_) => Lookup::Conflict,
                Begin::InProgress(_) | Begin::Abandoned(_) => Lookup::InFlight,
                Begin::Execute(claim) => {
                    // Nothing was there; give the key back so the store stays as it was.
                    claim.release()?;
                    Lookup::Missing
                }
            },
        )
    }
}
