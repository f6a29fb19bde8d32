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
use crate::record::{ClaimId, Record, RecordState};
use crate::scan::Scan;
use crate::stats::{Counters, StateCounts, Stats};
use crate::storage::{CommitSettings, Engine, JournaledEngine, Opener};
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
    claim_nonce: u64,
    claim_counter: AtomicU64,
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
        let engine: Arc<dyn Engine> = Arc::new(JournaledEngine::open(
            opener.clone(),
            Arc::clone(&settings.clock),
            commit,
        )?);
        Store::on_engine(engine, opener, settings)
    }

    /// A store over an open engine: the journaled one, or a model of storage in tests.
    pub(crate) fn on_engine(
        engine: Arc<dyn Engine>,
        opener: Opener,
        settings: Settings,
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
                claim_nonce: uuid::Uuid::new_v4().as_u64_pair().0,
                claim_counter: AtomicU64::new(0),
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
    pub fn import(&self, scope: &str, key: &str, record: Record, overwrite: bool) -> Result<bool> {
        if let Some(response) = record.response()
            && response.len() > self.inner.settings.max_response_size
        {
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit: self.inner.settings.max_response_size,
            });
        }
        if let Some(owner) = record.in_flight().and_then(|f| f.owner.as_ref()) {
            check_owner(owner)?;
        }
        match self.apply_keyed(scope, key, Operation::Import { record, overwrite })? {
            Outcome::Imported { written } => Ok(written),
            other => Err(unexpected(other)),
        }
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
    /// background sweeper does the same on its interval.
    pub fn sweep_now(&self) -> Result<u64> {
        let inner = &self.inner;
        inner.check_open()?;
        let now = inner.settings.clock.now();
        let mut total = 0;
        let mut from = None;
        loop {
            let pass = sweeper::sweep_once(
                inner.engine.as_ref(),
                now,
                inner.settings.sweep_batch,
                from.as_deref(),
                &inner.counters,
            )?;
            total += pass.deleted;
            match pass.resume {
                Some(resume) => from = Some(resume),
                None => return Ok(total),
            }
        }
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
    /// of this store, or claims still held) fail with [`Error::Closed`].
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
        Entry::HeldForOtherRequest(slot) | Entry::TimedOut(slot) => Some((slot, false)),
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

    fn next_claim_id(&self) -> ClaimId {
        let n = self.claim_counter.fetch_add(1, Ordering::Relaxed);
        ClaimId::from_u128((u128::from(self.claim_nonce) << 64) | u128::from(n))
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
            .owner(options.owner.clone()))
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
        match decision::decide(Some(&record), &spec.fingerprint, spec.recovery, now) {
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
