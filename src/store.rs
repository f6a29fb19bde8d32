//! The store: the façade that validates input, answers what it can from a read, lines up
//! same-key callers, and sends claims to the engine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::begin::{Begin, BeginOptions, Retention};
use crate::claim::{Claim, ClaimTicket};
use crate::config::{MAX_OWNER_LEN, MIN_RETENTION, Settings, StoreBuilder};
use crate::decision::{self, ClaimSpec, Decision, Operation, Outcome};
use crate::error::{ClaimLostReason, Error, Result};
use crate::fingerprint::Fingerprint;
use crate::inflight::{Entry, InflightMap, SlotGuard, deadline_after};
use crate::key::{split_storage_key, storage_key, validate_scope};
use crate::maintenance::CheckReport;
use crate::record::{ClaimId, Opening, Record, RecordState};
use crate::scan::Scan;
use crate::stats::{Counters, StateCounts, Stats};
use crate::storage::{CommitSettings, Engine, JournaledEngine, KeyedOp, Opener};
use crate::sweeper::{self, Sweeper};
use crate::telemetry::{self, Timer};
use crate::time::Timestamp;

/// An open idempotency store. Cheap to clone (clones share one store) and `Send + Sync`.
///
/// ```
/// use idemdb::{Begin, Fingerprint, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path().join("demo.idemdb"))?;
/// let request = Fingerprint::of(b"charge 10 EUR to card 42");
///
/// match store.begin("payments", "order-7", request)? {
///     Begin::Execute(claim) => {
///         let receipt = b"charged, receipt 991"; // ... do the work exactly once ...
///         claim.complete(receipt)?;
///     }
///     Begin::Replay(replay) => println!("already done: {:?}", replay.response),
///     Begin::Conflict(_) => println!("this key was used for another request"),
///     Begin::InProgress(p) => println!("retry in {:?}", p.retry_after),
///     Begin::Abandoned(_) => println!("an earlier attempt vanished; needs an operator"),
/// }
/// // A retry gets the stored response back.
/// let Begin::Replay(replay) = store.begin("payments", "order-7", request)? else { panic!() };
/// assert_eq!(replay.response, b"charged, receipt 991");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) settings: Settings,
    pub(crate) inflight: Arc<InflightMap>,
    pub(crate) counters: Arc<Counters>,
    sweeper: Mutex<Option<Sweeper>>,
    /// Ends what async callers dropped (claims, cancelled begins) without their waiting.
    pub(crate) finisher: crate::detached::Finisher,
    closed: AtomicBool,
    /// This opening of the store: a random number, the high half of every claim id it
    /// mints, so a later opening can tell its claims apart.
    opening: Opening,
    claim_counter: AtomicU64,
    import_bytes: usize,
    opener: Opener,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.opener.path())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) a store at `path` with the default settings.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        StoreBuilder::new().open(path)
    }

    /// Starts configuring a store.
    pub fn builder() -> StoreBuilder {
        StoreBuilder::new()
    }

    pub(crate) fn start(
        opener: Opener,
        settings: Settings,
        commit: CommitSettings,
    ) -> Result<Store> {
        // An import batch is one journal frame: keep it well inside the journal.
        let import_bytes = usize::try_from(commit.journal_size / 8).unwrap_or(usize::MAX);
        let engine: Arc<dyn Engine> = Arc::new(JournaledEngine::open(
            opener.clone(),
            Arc::clone(&settings.clock),
            commit,
        )?);
        Store::on_engine(engine, opener, settings, import_bytes)
    }

    /// A store over an open engine: the journaled one, or a model of storage in tests.
    /// `import_bytes` bounds the journal bytes of one [`import_many`](Self::import_many)
    /// batch.
    pub(crate) fn on_engine(
        engine: Arc<dyn Engine>,
        opener: Opener,
        settings: Settings,
        import_bytes: usize,
    ) -> Result<Store> {
        let counters = Arc::new(Counters::default());
        let sweeper = match settings.sweep_interval {
            Some(interval) => Some(
                Sweeper::start(
                    Arc::clone(&engine),
                    Arc::clone(&settings.clock),
                    interval,
                    settings.sweep_batch,
                    Arc::clone(&counters),
                )
                .map_err(Error::from_io)?,
            ),
            None => None,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                settings,
                inflight: Arc::new(InflightMap::new()),
                counters,
                sweeper: Mutex::new(sweeper),
                finisher: crate::detached::Finisher::default(),
                closed: AtomicBool::new(false),
                opening: Opening::new(uuid::Uuid::new_v4().as_u64_pair().0),
                claim_counter: AtomicU64::new(0),
                import_bytes,
                opener,
            }),
        })
    }

    /// The file the store lives in (or the label of its custom backend).
    pub fn path(&self) -> &Path {
        self.inner.opener.path()
    }

    /// The files the store lives in, its database and its journal (`None` for a store held
    /// in memory). Back a store up by copying both while it is closed.
    pub fn files(&self) -> Option<crate::StoreFiles> {
        self.inner.opener.files()
    }

    /// The current time on the store's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.settings.clock.now()
    }

    /// Starts a request: [`Begin::Execute`] (you hold the key: do the work, then complete or
    /// release the claim), [`Begin::Replay`] (it was done: return the stored response),
    /// [`Begin::Conflict`], [`Begin::InProgress`] or [`Begin::Abandoned`].
    ///
    /// Uses the store's defaults for retention, lease, waiting and recovery.
    ///
    /// A caller in this process finding the key held by another caller here waits for it
    /// (up to the `wait` bound) and then gets its outcome. The thread that holds the key
    /// itself (it began the claim and has not ended it) is answered [`Begin::InProgress`],
    /// with its own claim, at once: it would only wait for itself. (An async caller is not
    /// told apart by its thread: see [`begin_with_async`](Self::begin_with_async).)
    ///
    /// A claim made before the store was last opened, and not detached, has lost its
    /// holder (one process holds a store: that one closed it or died), so its key is
    /// handed on at once, as a recovery or [`Begin::Abandoned`] as the recovery policy
    /// says, without waiting for its lease to end.
    pub fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Result<Begin> {
        self.begin_with(scope, key, fingerprint, &BeginOptions::default())
    }

    /// [`begin`](Self::begin) with per-request options.
    pub fn begin_with(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        options: &BeginOptions,
    ) -> Result<Begin> {
        let timer = Timer::start();
        let begin = self.begin_untimed(scope, key, fingerprint, options);
        timer.begin(begin_label(&begin));
        begin
    }

    fn begin_untimed(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        options: &BeginOptions,
    ) -> Result<Begin> {
        let inner = &self.inner;
        inner.check_open()?;
        let storage_key = inner.storage_key(scope, key)?;
        let spec = inner.claim_spec(fingerprint, options)?;
        let deadline = deadline_after(options.wait.unwrap_or(inner.settings.wait));
        loop {
            // A completed record or a different request's record answers from a read alone:
            // no writer, no waiting.
            if let Some(answer) = inner.answer_from_read(&storage_key, &spec)? {
                return self.finish_begin(answer, &storage_key, fingerprint, None);
            }
            let entry = inner.inflight.enter(&storage_key, fingerprint, deadline);
            let Some((slot, vacant)) = slot_to_claim_with(entry) else {
                continue;
            };
            let outcome = inner
                .engine
                .apply_one(storage_key.clone(), inner.claim_op(&spec))?;
            // Another caller here asked at the same time (its wait ran out) and won: look
            // again, and wait for it if it still holds the key.
            if vacant && matches!(outcome, Outcome::InProgress(_)) && slot.overtaken() {
                continue;
            }
            return self.finish_begin(outcome, &storage_key, fingerprint, Some(slot));
        }
    }

    pub(crate) fn finish_begin(
        &self,
        outcome: Outcome,
        storage_key: &[u8],
        fingerprint: Fingerprint,
        slot: Option<SlotGuard>,
    ) -> Result<Begin> {
        let c = &self.inner.counters;
        Ok(match outcome {
            Outcome::Execute(execution) => {
                c.executes.fetch_add(1, Ordering::Relaxed);
                if execution.recovery.is_some() {
                    c.recoveries.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(slot) = &slot {
                    slot.hold(fingerprint);
                }
                Begin::Execute(Claim::new(
                    self.clone(),
                    storage_key.to_vec(),
                    fingerprint,
                    execution,
                    slot,
                ))
            }
            Outcome::Replay(r) => {
                c.replays.fetch_add(1, Ordering::Relaxed);
                Begin::Replay(r)
            }
            Outcome::InProgress(p) => {
                c.in_progress.fetch_add(1, Ordering::Relaxed);
                Begin::InProgress(p)
            }
            Outcome::Abandoned(a) => {
                c.abandoned.fetch_add(1, Ordering::Relaxed);
                Begin::Abandoned(a)
            }
            Outcome::Conflict(conflict) => {
                c.conflicts.fetch_add(1, Ordering::Relaxed);
                Begin::Conflict(conflict)
            }
            other => return Err(unexpected(other)),
        })
    }

    /// The live record of (scope, key): `None` if there is none or it has expired.
    pub fn get(&self, scope: &str, key: &str) -> Result<Option<Record>> {
        let inner = &self.inner;
        inner.check_open()?;
        let storage_key = inner.storage_key(scope, key)?;
        let now = inner.settings.clock.now();
        Ok(inner
            .engine
            .read(&storage_key)?
            .filter(|r| !r.is_expired(now)))
    }

    /// Deletes the record of (scope, key) whatever its state (an operator's tool, e.g. after
    /// a bug). Returns whether a live record was there. A claim that held it can no longer
    /// complete.
    pub fn delete(&self, scope: &str, key: &str) -> Result<bool> {
        deleted(self.apply_keyed(scope, key, Operation::Delete)?)
    }

    /// Declares the claim `claim` on (scope, key) abandoned, ending its lease now: for a
    /// supervisor that knows the holder is dead (the CLI checks the owner process). Returns
    /// false if that claim no longer holds the key.
    pub fn abandon(&self, scope: &str, key: &str, claim: ClaimId) -> Result<bool> {
        match self.apply_keyed(scope, key, Operation::Abandon { claim })? {
            Outcome::AbandonRecorded => {
                self.inner.counters.abandons.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Outcome::ClaimLost(_) => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// Stores `record` under (scope, key), as an import from an export does. A live record
    /// is replaced only if `overwrite`. Returns whether the record was written.
    ///
    /// One durable write per call: to load many records, [`import_many`](Self::import_many)
    /// is much faster.
    ///
    /// An imported in-flight record's claim was not made by this opening of the store: its
    /// holder counts as gone (see [`begin`](Self::begin)) unless the record is detached
    /// ([`Record::with_detached`]), which leaves it to its lease and owner.
    pub fn import(&self, scope: &str, key: &str, record: Record, overwrite: bool) -> Result<bool> {
        self.inner.check_import(&record)?;
        match self.apply_keyed(scope, key, Operation::Import { record, overwrite })? {
            Outcome::Imported { written } => Ok(written),
            other => Err(unexpected(other)),
        }
    }

    /// Stores many records as [`import`](Self::import) does, each (scope, key, record), in
    /// batches that are each one durable write (one group commit). Returns how many
    /// records were written; a live record kept because `overwrite` is off is not.
    ///
    /// Every scope, key and record of a batch is checked before the batch is written: an
    /// invalid one fails the call, and the batches before it stay written. A storage error
    /// fails the call too; the batches before it stay written.
    ///
    /// ```
    /// use idemdb::{Fingerprint, Record, Store};
    ///
    /// let store = Store::builder().open_in_memory()?;
    /// let now = store.now();
    /// let records = (0..1000).map(|i| {
    ///     let record = Record::builder(Fingerprint::of(format!("request {i}").as_bytes()), now)
    ///         .completed(now, format!("response {i}").into_bytes());
    ///     ("orders", format!("key-{i}"), record)
    /// });
    /// assert_eq!(store.import_many(records, false)?, 1000);
    /// # Ok::<(), idemdb::Error>(())
    /// ```
    pub fn import_many<S, K, I>(&self, records: I, overwrite: bool) -> Result<u64>
    where
        S: AsRef<str>,
        K: AsRef<str>,
        I: IntoIterator<Item = (S, K, Record)>,
    {
        let inner = &self.inner;
        inner.check_open()?;
        let mut written = 0;
        let mut batch: Vec<KeyedOp> = Vec::new();
        let mut batch_bytes = 0;
        for (scope, key, record) in records {
            inner.check_import(&record)?;
            let storage_key = inner.storage_key(scope.as_ref(), key.as_ref())?;
            batch_bytes += import_size(&storage_key, &record);
            batch.push((storage_key, Operation::Import { record, overwrite }));
            if batch.len() >= IMPORT_BATCH || batch_bytes >= inner.import_bytes {
                written += self.import_batch(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            written += self.import_batch(batch)?;
        }
        Ok(written)
    }

    fn import_batch(&self, batch: Vec<KeyedOp>) -> Result<u64> {
        let mut written = 0;
        for answer in self.inner.engine.apply(batch) {
            match answer? {
                Outcome::Imported { written: true } => written += 1,
                Outcome::Imported { written: false } => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(written)
    }

    fn apply_keyed(&self, scope: &str, key: &str, op: Operation) -> Result<Outcome> {
        let inner = &self.inner;
        inner.check_open()?;
        let storage_key = inner.storage_key(scope, key)?;
        inner.engine.apply_one(storage_key, op)
    }

    /// [`apply_keyed`](Self::apply_keyed) for an async caller.
    pub(crate) async fn submit_keyed(
        &self,
        scope: &str,
        key: &str,
        op: Operation,
    ) -> Result<Outcome> {
        let inner = &self.inner;
        inner.check_open()?;
        let storage_key = inner.storage_key(scope, key)?;
        inner.engine.submit_one(storage_key, op).await
    }

    /// Takes back a claim detached with [`Claim::detach`] (possibly by another process
    /// that has since closed the store), so it can be completed, released or extended.
    /// Fails with [`Error::ClaimLost`] if that claim no longer holds the key.
    pub fn resume(&self, ticket: &ClaimTicket) -> Result<Claim> {
        let inner = &self.inner;
        inner.check_open()?;
        let storage_key = inner.storage_key(&ticket.scope, &ticket.key)?;
        let record = inner
            .engine
            .read(&storage_key)?
            .ok_or(Error::ClaimLost(ClaimLostReason::Missing))?;
        match &record.state {
            RecordState::Completed(_) => Err(Error::ClaimLost(ClaimLostReason::Completed)),
            RecordState::InFlight(f) if f.claim != ticket.claim => {
                Err(Error::ClaimLost(ClaimLostReason::TakenOver))
            }
            RecordState::InFlight(f) => {
                let execution = crate::decision::Execution {
                    claim: f.claim,
                    attempt: record.attempt,
                    created_at: record.created_at,
                    expires_at: record.expires_at,
                    lease_until: f.lease_until,
                    recovery: None,
                };
                Ok(Claim::new(
                    self.clone(),
                    storage_key,
                    record.fingerprint,
                    execution,
                    None,
                ))
            }
        }
    }

    /// The live records of one scope (or of every scope), in key order, read in pages:
    /// each page is a consistent snapshot, and writes never wait for the scan.
    pub fn scan(&self, scope: Option<&str>) -> Result<Scan> {
        self.scan_inner(scope, false)
    }

    /// Like [`scan`](Self::scan), but also yields expired records the sweeper has not
    /// deleted yet (for operator tools).
    pub fn scan_including_expired(&self, scope: Option<&str>) -> Result<Scan> {
        self.scan_inner(scope, true)
    }

    fn scan_inner(&self, scope: Option<&str>, include_expired: bool) -> Result<Scan> {
        self.inner.check_open()?;
        if let Some(scope) = scope {
            validate_scope(scope).map_err(Error::InvalidScope)?;
        }
        Ok(Scan::new(self.clone(), scope, include_expired))
    }

    /// Counts records by state, with the size of stored responses. Reads the whole store.
    pub fn count_by_state(&self) -> Result<StateCounts> {
        let mut counts = StateCounts::default();
        let now = self.now();
        for entry in self.scan_including_expired(None)?.with_page_size(8192) {
            match entry {
                Ok(entry) => counts.add(&entry.record, now),
                Err(Error::Corrupt { .. }) => counts.corrupt += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(counts)
    }

    /// Deletes every record expired now, in bounded batches; returns how many. The
    /// background sweeper does the same on its interval. To bound the work of one call,
    /// see [`sweep_now_limited`](Self::sweep_now_limited).
    pub fn sweep_now(&self) -> Result<u64> {
        Ok(self.sweep_up_to(u64::MAX)?.deleted)
    }

    /// Like [`sweep_now`](Self::sweep_now), but examines at most `max_records` due records
    /// (so deletes at most that many), for a caller that sweeps a little at a time. The
    /// report says whether more may be due: call again until it is complete. It folds the
    /// journal first (as [`flush`](Self::flush) does), so every due record is found through
    /// the expiry index, in order of expiry, within the bound.
    ///
    /// ```
    /// use idemdb::Store;
    ///
    /// let store = Store::builder().sweep_interval(None).open_in_memory()?;
    /// loop {
    ///     let report = store.sweep_now_limited(1000)?;
    ///     if report.complete {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), idemdb::Error>(())
    /// ```
    pub fn sweep_now_limited(&self, max_records: u64) -> Result<SweepReport> {
        self.sweep_up_to(max_records)
    }

    fn sweep_up_to(&self, max_records: u64) -> Result<SweepReport> {
        let inner = &self.inner;
        inner.check_open()?;
        if max_records < u64::MAX {
            // Expired records not yet folded are looked through all at once by a sweep's
            // first pass; folded, they wait in the index for the bounded passes.
            inner.engine.flush()?;
        }
        let now = inner.settings.clock.now();
        let mut report = SweepReport {
            deleted: 0,
            complete: false,
        };
        let mut examined = 0u64;
        let mut from = None;
        while examined < max_records {
            let batch = usize::try_from(max_records - examined)
                .unwrap_or(usize::MAX)
                .min(inner.settings.sweep_batch);
            let pass = sweeper::sweep_once(
                inner.engine.as_ref(),
                now,
                batch,
                from.as_deref(),
                &inner.counters,
            )?;
            report.deleted += pass.deleted;
            examined = examined.saturating_add(pass.found.max(1));
            match pass.resume {
                Some(resume) => from = Some(resume),
                None => {
                    report.complete = true;
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Folds everything acknowledged so far from the journal into the database file, so
    /// the file alone holds it (for a backup of the file, or a quiet store). The store
    /// folds on its own in the background; this does it now and returns when it is done.
    pub fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.engine.flush()
    }

    /// Checks the open store's records and expiry index, as [`maintenance::check`] does for
    /// a closed file: every record decodes and carries a framed key, every expiring record
    /// is indexed and every index entry matches its record. Journaled changes are folded
    /// first, so the check covers everything acknowledged. (Page checksums are verified by
    /// [`maintenance::check`], or at every open with [`StoreBuilder::verify_on_open`].)
    ///
    /// [`maintenance::check`]: crate::maintenance::check
    /// [`StoreBuilder::verify_on_open`]: crate::StoreBuilder::verify_on_open
    pub fn check(&self) -> Result<CheckReport> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut report = CheckReport::new(self.path().to_owned());
        inner.engine.check(&mut report)?;
        Ok(report)
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let stats = Stats::collect(&inner.counters, inner.engine.stats(), inner.inflight.len());
        telemetry::publish(&stats, Some(stats.in_flight_here));
        stats
    }

    /// Stops the sweeper, finishes every acknowledged operation, makes everything durable
    /// and releases the file, reporting any error. Operations after a close (from any clone
    /// of this store, or claims still held) fail with [`Error::Closed`]. A second close
    /// returns `Ok`.
    ///
    /// Dropping the last handle closes the store too, but a drop cannot return an error:
    /// one is only logged (a `tracing` warning). Call `close` to see it.
    pub fn close(&self) -> Result<()> {
        self.inner.shutdown()
    }

    pub(crate) fn max_response_size(&self) -> usize {
        self.inner.settings.max_response_size
    }
}

/// How a `begin` ended, as the metrics label it.
pub(crate) fn begin_label(begin: &Result<Begin>) -> &'static str {
    match begin {
        Ok(Begin::Execute(_)) => "execute",
        Ok(Begin::Replay(_)) => "replay",
        Ok(Begin::Conflict(_)) => "conflict",
        Ok(Begin::InProgress(_)) => "in_progress",
        Ok(Begin::Abandoned(_)) => "abandoned",
        Err(_) => "error",
    }
}

/// What a `begin` does after the in-flight map: ask the writer, holding this slot (and
/// whether the key was vacant here), or, `None`, look again.
pub(crate) fn slot_to_claim_with(entry: Entry) -> Option<(SlotGuard, bool)> {
    match entry {
        Entry::Released => None,
        Entry::Vacant(slot) => Some((slot, true)),
        // With another caller here at work on the key, the writer decides against the
        // durable record all the same: in-progress or conflict with the holder's details.
        // The calling thread holding the key itself is told in-progress at once.
        Entry::HeldForOtherRequest(slot) | Entry::TimedOut(slot) | Entry::HeldByCaller(slot) => {
            Some((slot, false))
        }
    }
}

/// The answer of a delete.
pub(crate) fn deleted(outcome: Outcome) -> Result<bool> {
    match outcome {
        Outcome::Deleted { existed } => Ok(existed),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: Outcome) -> Error {
    Error::Internal {
        detail: format!("unexpected outcome {outcome:?}"),
    }
}

/// The most records one [`Store::import_many`] batch holds.
const IMPORT_BATCH: usize = 16 * 1024;

/// Roughly how many journal bytes importing `record` under `storage_key` takes.
fn import_size(storage_key: &[u8], record: &Record) -> usize {
    let owner = record
        .in_flight()
        .and_then(|f| f.owner.as_ref())
        .map_or(0, Vec::len);
    2 * storage_key.len() + record.response().map_or(0, <[u8]>::len) + owner + 160
}

/// What a [`Store::sweep_now_limited`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Expired records deleted.
    pub deleted: u64,
    /// True when nothing more was due; false when the limit was reached first.
    pub complete: bool,
}

fn check_owner(owner: &[u8]) -> Result<()> {
    if owner.len() > MAX_OWNER_LEN {
        return Err(Error::OwnerTooLarge {
            size: owner.len(),
            limit: MAX_OWNER_LEN,
        });
    }
    Ok(())
}

impl Inner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Checks a record to import against the store's limits.
    fn check_import(&self, record: &Record) -> Result<()> {
        if let Some(response) = record.response()
            && response.len() > self.settings.max_response_size
        {
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit: self.settings.max_response_size,
            });
        }
        if let Some(owner) = record.in_flight().and_then(|f| f.owner.as_ref()) {
            check_owner(owner)?;
        }
        Ok(())
    }

    pub(crate) fn storage_key(&self, scope: &str, key: &str) -> Result<Vec<u8>> {
        validate_scope(scope).map_err(Error::InvalidScope)?;
        let key = self
            .settings
            .key_policy
            .validate(key)
            .map_err(Error::InvalidKey)?;
        Ok(storage_key(scope, &key))
    }

    /// The claim operation of one attempt of a `begin`: `spec` with a fresh claim id.
    pub(crate) fn claim_op(&self, spec: &ClaimSpec) -> Operation {
        let mut spec = spec.clone();
        spec.claim = self.next_claim_id();
        Operation::Claim(spec)
    }

    /// This opening of the store (the reference model's claims are decided by it).
    #[cfg(feature = "testing")]
    pub(crate) fn opening(&self) -> Opening {
        self.opening
    }

    fn next_claim_id(&self) -> ClaimId {
        self.opening
            .claim(self.claim_counter.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn claim_spec(
        &self,
        fingerprint: Fingerprint,
        options: &BeginOptions,
    ) -> Result<ClaimSpec> {
        let s = &self.settings;
        let retention = match options.retention {
            None => Some(s.default_retention),
            Some(Retention::Forever) => None,
            Some(Retention::For(d)) if d < MIN_RETENTION || d > s.max_retention => {
                return Err(Error::InvalidRetention {
                    requested: d,
                    min: MIN_RETENTION,
                    max: s.max_retention,
                });
            }
            Some(Retention::For(d)) => Some(d),
        };
        let lease = options.lease.unwrap_or(s.lease);
        if lease > MAX_LEASE {
            return Err(Error::InvalidLease {
                requested: lease,
                reason: "a lease may not exceed one year",
            });
        }
        if let Some(owner) = &options.owner {
            check_owner(owner)?;
        }
        Ok(ClaimSpec::new(fingerprint, ClaimId::from_u128(0))
            .lease(lease)
            .retention(retention)
            .recovery(options.recovery.unwrap_or(s.recovery))
            .owner(options.owner.clone())
            .opened_by(self.opening))
    }

    /// Answers a `begin` from the last committed record when that is final: a replay or a
    /// conflict. Anything else needs the writer.
    pub(crate) fn answer_from_read(
        &self,
        storage_key: &[u8],
        spec: &ClaimSpec,
    ) -> Result<Option<Outcome>> {
        let Some(record) = self.engine.read(storage_key)? else {
            return Ok(None);
        };
        let now = self.settings.clock.now();
        match decision::decide(
            Some(&record),
            &spec.fingerprint,
            spec.recovery,
            self.opening,
            now,
        ) {
            Decision::Replay | Decision::Conflict => {
                let t = decision::transition(Some(record), Operation::Claim(spec.clone()), now);
                Ok(Some(t.outcome))
            }
            _ => Ok(None),
        }
    }

    fn shutdown(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(sweeper) = self.sweeper.lock().take() {
            sweeper.stop();
        }
        self.engine.close()
    }
}

/// The longest lease a claim may ask for.
const MAX_LEASE: Duration = Duration::from_secs(365 * 24 * 3600);

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "closing the idemdb store failed");
        }
    }
}

/// Splits a storage key for display; the key was built from validated text.
pub(crate) fn display_key(storage_key: &[u8]) -> (String, String) {
    split_storage_key(storage_key)
        .map(|(s, k)| (s.to_owned(), k.to_owned()))
        .unwrap_or_default()
}
