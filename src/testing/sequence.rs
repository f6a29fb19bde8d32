//! Operation sequences run against a real store on a [`SimStorage`] and, step by step,
//! against the reference model: the pure [`transition`] function over a map.
//!
//! After every step the answer the store gave and every record it holds must equal the
//! model's. Crashes (a power cut now, or at a chosen future sync, keeping or tearing
//! unsynced writes) and clean reopens are steps too: after them, every acknowledged
//! operation must still be there. An operation cut short by the crash was not acknowledged,
//! so its key may show the state before it or after it, and nothing else.
//!
//! ```
//! use idemdb::testing::{Harness, Step};
//!
//! let mut h = Harness::new().unwrap();
//! let steps = [
//!     Step::Begin { scope: 0, key: 0, request: 0, retention: 0, lease: 2 },
//!     Step::Complete { claim: 0, response: 1 },
//!     Step::Crash { torn: Some(3) },
//!     Step::Begin { scope: 0, key: 0, request: 0, retention: 0, lease: 2 },
//! ];
//! for step in &steps {
//!     h.step(step).unwrap();
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::begin::{Begin, BeginOptions};
use crate::claim::{Claim, ClaimTicket};
use crate::config::StoreBuilder;
use crate::decision::{ClaimSpec, Operation, Outcome, RecoveryPolicy, Transition, transition};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::record::{ClaimId, InFlight, Record, RecordState};
use crate::store::Store;
use crate::testing::sim_disk::{CrashMode, SimStorage};
use crate::time::{Clock, ManualClock, Timestamp};

/// Scopes the sequences use: with [`KEYS`], pairs that naive concatenation would merge.
pub const SCOPES: [&str; 2] = ["a", "a:b"];
/// Keys the sequences use.
pub const KEYS: [&str; 3] = ["b:c", "c", "k"];
/// Leases a `Begin` may ask for.
pub const LEASES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(60),
];
/// The clock a harness starts at.
pub const START: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// One step of a sequence. Indexes wrap: `scope` into [`SCOPES`], `key` into [`KEYS`],
/// `claim` into the claims held now, and so on, so every value is a valid step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `begin` with one of two requests (fingerprints).
    Begin {
        /// Index into [`SCOPES`].
        scope: u8,
        /// Index into [`KEYS`].
        key: u8,
        /// Which of two requests.
        request: u8,
        /// 0: the default retention (24 h); 1: 1 s; 2: 90 s; 3: forever.
        retention: u8,
        /// Index into [`LEASES`].
        lease: u8,
    },
    /// Complete a held claim with one of a few responses (one of them empty).
    Complete {
        /// Which held claim.
        claim: u8,
        /// Which response.
        response: u8,
    },
    /// Release a held claim.
    Release {
        /// Which held claim.
        claim: u8,
    },
    /// Abandon a held claim, explicitly or by dropping it.
    Abandon {
        /// Which held claim.
        claim: u8,
        /// Drop the claim instead of calling `abandon`.
        by_drop: bool,
    },
    /// Extend a held claim's lease.
    Extend {
        /// Which held claim.
        claim: u8,
        /// Index into [`LEASES`].
        lease: u8,
    },
    /// Move the clock forward.
    Advance {
        /// Milliseconds.
        ms: u32,
    },
    /// Move the clock back.
    JumpBack {
        /// Milliseconds.
        ms: u32,
    },
    /// Sweep expired records.
    Sweep,
    /// Delete a record (an operator's tool).
    Delete {
        /// Index into [`SCOPES`].
        scope: u8,
        /// Index into [`KEYS`].
        key: u8,
    },
    /// Close the store cleanly and reopen it; held claims are detached and resumed.
    Reopen,
    /// Cut the power now: the process dies with its claims, the disk keeps what was synced
    /// (and, torn, some of what was not).
    Crash {
        /// `Some(seed)`: tear unsynced writes as the seed decides.
        torn: Option<u64>,
    },
    /// Cut the power at the `k`-th sync from now, whoever makes it; the steps that follow
    /// fail until the harness notices and restarts.
    CrashAtSync {
        /// Which sync (1 = the next).
        k: u8,
        /// `Some(seed)`: tear unsynced writes as the seed decides.
        torn: Option<u64>,
    },
}

impl Step {
    /// Decodes a sequence of steps from arbitrary bytes (for fuzzing): every input gives a
    /// valid sequence.
    pub fn sequence_from_bytes(data: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut bytes = data.iter().copied();
        let mut next = move || bytes.next();
        while let Some(tag) = next() {
            let mut arg = || next().unwrap_or(0);
            let step = match tag % 16 {
                0..=3 => Step::Begin {
                    scope: arg(),
                    key: arg(),
                    request: arg(),
                    retention: arg(),
                    lease: arg(),
                },
                4 | 5 => Step::Complete {
                    claim: arg(),
                    response: arg(),
                },
                6 => Step::Release { claim: arg() },
                7 => {
                    let claim = arg();
                    Step::Abandon {
                        claim,
                        by_drop: arg() % 2 == 0,
                    }
                }
                8 => Step::Extend {
                    claim: arg(),
                    lease: arg(),
                },
                9 => Step::Advance {
                    ms: u32::from(arg()) * 500,
                },
                10 => Step::JumpBack {
                    ms: u32::from(arg()) * 100,
                },
                11 => Step::Sweep,
                12 => Step::Delete {
                    scope: arg(),
                    key: arg(),
                },
                13 => Step::Reopen,
                14 => {
                    let seed = arg();
                    Step::Crash {
                        torn: (seed % 2 == 1).then_some(u64::from(seed)),
                    }
                }
                _ => {
                    let k = arg();
                    let seed = arg();
                    Step::CrashAtSync {
                        k: k % 8 + 1,
                        torn: (seed % 2 == 1).then_some(u64::from(seed)),
                    }
                }
            };
            steps.push(step);
        }
        steps
    }
}

/// How a store's behaviour differed from the model's (the test fails with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The step that showed it (its index in the sequence).
    pub step: usize,
    /// What differed.
    pub detail: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}", self.step, self.detail)
    }
}

impl std::error::Error for Divergence {}

/// Counts of what a harness went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HarnessStats {
    /// Steps run.
    pub steps: u64,
    /// Power cuts (now or at a sync) the store recovered from, the final one of
    /// [`Harness::run`] included.
    pub crashes: u64,
    /// Of those, how many tore unsynced writes.
    pub torn: u64,
    /// Clean reopens.
    pub reopens: u64,
    /// Operations cut short by a crash (unacknowledged, so either outcome was accepted).
    pub cut_short: u64,
    /// Acknowledged operations found missing after a crash or reopen (must stay 0: a
    /// missing one is also a divergence).
    pub lost: u64,
}

/// A held claim and the key it holds.
struct Held {
    slot: (usize, usize),
    claim: Claim,
}

/// A store on a simulated disk, the model beside it, and the claims held now.
pub struct Harness {
    disk: SimStorage,
    clock: ManualClock,
    configure: fn(StoreBuilder) -> StoreBuilder,
    store: Option<Store>,
    model: BTreeMap<(usize, usize), Record>,
    held: Vec<Held>,
    /// Set when a `CrashAtSync` is armed, with the tearing it asked for.
    armed: Option<Option<u64>>,
    index: usize,
    stats: HarnessStats,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("step", &self.index)
            .field("stats", &self.stats)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

/// Settings for a store under test: the clock given, no background sweeper, no waiting on
/// a held key, a small journal (1 MiB, responses up to 64 KiB), a folder that runs only
/// when asked (a sweep, a check, a close) or when the journal fills, so runs repeat, and
/// generations of 3 records, so sequences seal, write into and drop generations.
pub fn small_store(clock: &ManualClock) -> StoreBuilder {
    Store::builder()
        .generation_size(3)
        .clock(clock.clone())
        .sweep_interval(None)
        .wait(Duration::ZERO)
        .max_response_size(64 * 1024)
        .journal_size(1 << 20)
        .fold_interval(Duration::from_secs(3600))
}

impl Harness {
    /// A harness with the store's default settings (plus those of every harness).
    pub fn new() -> Result<Harness, Divergence> {
        Self::with(|b| b)
    }

    /// A harness whose store settings `configure` adjusts (for example two-phase commit).
    pub fn with(configure: fn(StoreBuilder) -> StoreBuilder) -> Result<Harness, Divergence> {
        let clock = ManualClock::new(START);
        let disk = SimStorage::new();
        let store = disk
            .open(configure(small_store(&clock)))
            .map_err(|e| diverge(0, format!("opening a new store failed: {e}")))?;
        Ok(Harness {
            disk,
            clock,
            configure,
            store: Some(store),
            model: BTreeMap::new(),
            held: Vec::new(),
            armed: None,
            index: 0,
            stats: HarnessStats::default(),
        })
    }

    /// What the harness went through so far.
    pub fn stats(&self) -> HarnessStats {
        self.stats
    }

    /// The simulated disk under the store.
    pub fn disk(&self) -> &SimStorage {
        &self.disk
    }

    /// Runs a whole sequence, then a final crash and a final clean reopen, checking after
    /// each.
    pub fn run(&mut self, steps: &[Step]) -> Result<(), Divergence> {
        for step in steps {
            self.step(step)?;
        }
        self.step(&Step::Crash { torn: Some(0) })?;
        self.step(&Step::Reopen)
    }

    /// Runs one step on the store and on the model, and compares them.
    pub fn step(&mut self, step: &Step) -> Result<(), Divergence> {
        let before = self.model.clone();
        let applied = self.apply(step);
        // Every call of the step answered as the model did: what it did was acknowledged
        // and must survive, even if the power then failed. (Dropping a claim answers
        // nothing: its abandon may fail unseen.)
        let acknowledged = applied.is_ok() && !matches!(step, Step::Abandon { by_drop: true, .. });
        let result = applied.and_then(|()| {
            if self.disk.is_dead() {
                Ok(())
            } else {
                self.compare_all()
            }
        });
        self.stats.steps += 1;
        if self.disk.is_dead() {
            // The step (or a background write before it) met the power cut: unless it was
            // acknowledged, it may or may not have happened.
            self.recover(&before, step, acknowledged)?;
        } else {
            result?;
        }
        self.index += 1;
        Ok(())
    }

    fn store(&self) -> Result<&Store, Divergence> {
        self.store
            .as_ref()
            .ok_or_else(|| self.diverge("the store is not open".to_owned()))
    }

    fn diverge(&self, detail: String) -> Divergence {
        diverge(self.index, detail)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Applies `op` to the model's record for `slot` and returns what it reports.
    fn model_apply(&mut self, slot: (usize, usize), op: Operation) -> Outcome {
        let now = self.now();
        let Transition { change, outcome } = transition(self.model.get(&slot).cloned(), op, now);
        match change {
            crate::decision::Change::Keep => {}
            crate::decision::Change::Put(record) => {
                self.model.insert(slot, record);
            }
            crate::decision::Change::Delete => {
                self.model.remove(&slot);
            }
        }
        outcome
    }

    fn apply(&mut self, step: &Step) -> Result<(), Divergence> {
        match *step {
            Step::Begin {
                scope,
                key,
                request,
                retention,
                lease,
            } => self.begin(slot(scope, key), request, retention, lease),
            Step::Complete { claim, response } => {
                let Some(held) = self.take(claim) else {
                    return Ok(());
                };
                let body = RESPONSES[usize::from(response) % RESPONSES.len()];
                let id = held.claim.id();
                let result = held.claim.complete(body);
                let expected = self.model_apply(
                    held.slot,
                    Operation::Complete {
                        claim: id,
                        response: body.to_vec(),
                    },
                );
                match (result, expected) {
                    (
                        Ok(c),
                        Outcome::Completed {
                            completed_at,
                            expires_at,
                        },
                    ) if c.completed_at == completed_at && c.expires_at == expires_at => Ok(()),
                    (Err(e), Outcome::ClaimLost(reason)) if matches!(e.error, Error::ClaimLost(got) if got == reason) => {
                        Ok(())
                    }
                    (got, want) => Err(self.diverge(format!(
                        "complete: the store said {got:?}, the model {want:?}"
                    ))),
                }
            }
            Step::Release { claim } => {
                let Some(held) = self.take(claim) else {
                    return Ok(());
                };
                let id = held.claim.id();
                let result = held.claim.release();
                let expected = self.model_apply(held.slot, Operation::Release { claim: id });
                self.expect_unit("release", result, expected, Outcome::Released)
            }
            Step::Abandon { claim, by_drop } => {
                let Some(held) = self.take(claim) else {
                    return Ok(());
                };
                let id = held.claim.id();
                let result = if by_drop {
                    drop(held.claim);
                    None
                } else {
                    Some(held.claim.abandon())
                };
                let expected = self.model_apply(held.slot, Operation::Abandon { claim: id });
                match result {
                    Some(result) => {
                        self.expect_unit("abandon", result, expected, Outcome::AbandonRecorded)
                    }
                    None => Ok(()),
                }
            }
            Step::Extend { claim, lease } => {
                let lease = LEASES[usize::from(lease) % LEASES.len()];
                let Some(mut held) = self.take(claim) else {
                    return Ok(());
                };
                let id = held.claim.id();
                let result = held.claim.extend_lease(lease);
                let expected =
                    self.model_apply(held.slot, Operation::ExtendLease { claim: id, lease });
                let verdict = match (&result, &expected) {
                    (Ok(until), Outcome::LeaseExtended { lease_until }) if until == lease_until => {
                        Ok(())
                    }
                    (Err(Error::ClaimLost(got)), Outcome::ClaimLost(want)) if got == want => Ok(()),
                    _ => Err(self.diverge(format!(
                        "extend: the store said {result:?}, the model {expected:?}"
                    ))),
                };
                self.held.push(held);
                verdict
            }
            Step::Advance { ms } => {
                self.clock.advance(Duration::from_millis(u64::from(ms)));
                Ok(())
            }
            Step::JumpBack { ms } => {
                self.clock.rewind(Duration::from_millis(u64::from(ms)));
                Ok(())
            }
            Step::Sweep => self.sweep(),
            Step::Delete { scope, key } => {
                let slot = slot(scope, key);
                let result = self.store()?.delete(SCOPES[slot.0], KEYS[slot.1]);
                let expected = self.model_apply(slot, Operation::Delete);
                match (&result, &expected) {
                    (Ok(got), Outcome::Deleted { existed }) if got == existed => Ok(()),
                    _ => Err(self.diverge(format!(
                        "delete: the store said {result:?}, the model {expected:?}"
                    ))),
                }
            }
            Step::Reopen => self.reopen(),
            Step::Crash { torn } => {
                self.disk.power_off();
                self.armed = Some(torn);
                Ok(())
            }
            Step::CrashAtSync { k, torn } => {
                self.disk.crash_at_sync(u64::from(k.max(1)));
                self.armed = Some(torn);
                Ok(())
            }
        }
    }

    /// Removes and returns the held claim `index` points at (wrapping), if any is held.
    fn take(&mut self, index: u8) -> Option<Held> {
        if self.held.is_empty() {
            return None;
        }
        let i = usize::from(index) % self.held.len();
        Some(self.held.swap_remove(i))
    }

    fn expect_unit(
        &self,
        what: &str,
        result: crate::error::Result<()>,
        expected: Outcome,
        success: Outcome,
    ) -> Result<(), Divergence> {
        match (&result, &expected) {
            (Ok(()), e) if *e == success => Ok(()),
            (Err(Error::ClaimLost(got)), Outcome::ClaimLost(want)) if got == want => Ok(()),
            _ => Err(self.diverge(format!(
                "{what}: the store said {result:?}, the model {expected:?}"
            ))),
        }
    }

    fn begin(
        &mut self,
        slot: (usize, usize),
        request: u8,
        retention: u8,
        lease: u8,
    ) -> Result<(), Divergence> {
        let fingerprint = Fingerprint::of(if request.is_multiple_of(2) {
            b"one"
        } else {
            b"two"
        });
        let lease = LEASES[usize::from(lease) % LEASES.len()];
        let mut options = BeginOptions::new().no_wait().lease(lease);
        let retention = match retention % 4 {
            0 => Some(Duration::from_secs(24 * 3600)),
            1 => Some(Duration::from_secs(1)),
            2 => Some(Duration::from_secs(90)),
            _ => None,
        };
        options = match retention {
            Some(d) if d != Duration::from_secs(24 * 3600) => options.retention(d),
            Some(_) => options,
            None => options.forever(),
        };
        let answer = self
            .store()?
            .begin_with(SCOPES[slot.0], KEYS[slot.1], fingerprint, &options);
        let id = match &answer {
            Ok(Begin::Execute(claim)) => claim.id(),
            _ => ClaimId::from_u128(0),
        };
        let spec = ClaimSpec::new(fingerprint, id)
            .opened_by(self.store()?.inner.opening())
            .lease(lease)
            .retention(retention)
            .recovery(RecoveryPolicy::TakeOver);
        let expected = self.model_apply(slot, Operation::Claim(spec));
        let verdict = match (&answer, &expected) {
            (Ok(Begin::Execute(claim)), Outcome::Execute(e))
                if claim.attempt() == e.attempt
                    && claim.created_at() == e.created_at
                    && claim.expires_at() == e.expires_at
                    && claim.lease_until() == e.lease_until
                    && claim.recovery() == e.recovery.as_ref() =>
            {
                Ok(())
            }
            (Ok(Begin::Replay(got)), Outcome::Replay(want)) if got == want => Ok(()),
            (Ok(Begin::Conflict(got)), Outcome::Conflict(want)) if got == want => Ok(()),
            (Ok(Begin::InProgress(got)), Outcome::InProgress(want)) if got == want => Ok(()),
            (Ok(Begin::Abandoned(got)), Outcome::Abandoned(want)) if got == want => Ok(()),
            _ => Err(self.diverge(format!(
                "begin {slot:?}: the store said {answer:?}, the model {expected:?}"
            ))),
        };
        if let Ok(Begin::Execute(claim)) = answer {
            self.held.push(Held { slot, claim });
        }
        verdict
    }

    fn sweep(&mut self) -> Result<(), Divergence> {
        let swept = self.store()?.sweep_now();
        let slots: Vec<_> = self.model.keys().copied().collect();
        let mut expected = 0u64;
        for slot in slots {
            let Some(at) = self.model.get(&slot).and_then(Record::sweep_at) else {
                continue;
            };
            if let Outcome::Swept { deleted: true } =
                self.model_apply(slot, Operation::Sweep { sweep_at: at })
            {
                expected += 1;
            }
        }
        match swept {
            Ok(n) if n == expected => Ok(()),
            got => Err(self.diverge(format!(
                "sweep: the store said {got:?}, the model deleted {expected}"
            ))),
        }
    }

    fn reopen(&mut self) -> Result<(), Divergence> {
        let mut tickets: Vec<((usize, usize), ClaimTicket)> = Vec::new();
        for Held { slot, claim } in std::mem::take(&mut self.held) {
            let id = claim.id();
            let detached = claim.detach();
            let expected = self.model_apply(slot, Operation::Detach { claim: id });
            match (detached, expected) {
                (Ok(ticket), Outcome::Detached) => tickets.push((slot, ticket)),
                (Err(Error::ClaimLost(got)), Outcome::ClaimLost(want)) if got == want => {}
                (got, want) => {
                    return Err(self.diverge(format!(
                        "detach {slot:?}: the store said {got:?}, the model {want:?}"
                    )));
                }
            }
        }
        if let Some(store) = self.store.take() {
            store
                .close()
                .map_err(|e| self.diverge(format!("a clean close failed: {e}")))?;
        }
        self.open()?;
        self.stats.reopens += 1;
        for (slot, ticket) in tickets {
            let holds = matches!(
                self.model.get(&slot).map(Record::state),
                Some(RecordState::InFlight(InFlight { claim, .. })) if *claim == ticket.claim
            );
            match self.store()?.resume(&ticket) {
                Ok(claim) if holds => self.held.push(Held { slot, claim }),
                Err(Error::ClaimLost(_)) if !holds => {}
                other => {
                    return Err(self.diverge(format!(
                        "resuming {slot:?} after a reopen: the store said {other:?}, the model \
                         says the claim {} the key",
                        if holds { "holds" } else { "no longer holds" }
                    )));
                }
            }
        }
        self.check_integrity()
    }

    fn open(&mut self) -> Result<(), Divergence> {
        let store = self
            .disk
            .open((self.configure)(small_store(&self.clock)))
            .map_err(|e| self.diverge(format!("reopening the store failed: {e}")))?;
        self.store = Some(store);
        Ok(())
    }

    fn check_integrity(&self) -> Result<(), Divergence> {
        let report = self
            .store()?
            .check()
            .map_err(|e| self.diverge(format!("the integrity check failed: {e}")))?;
        if report.is_healthy() {
            Ok(())
        } else {
            Err(self.diverge(format!("the integrity check found {:?}", report.problems)))
        }
    }

    /// After a power cut: drops the dead process's claims and store, restarts the disk,
    /// reopens, and checks every key; keys `step` touched may show the state before or
    /// after it.
    fn recover(
        &mut self,
        before: &BTreeMap<(usize, usize), Record>,
        step: &Step,
        acknowledged: bool,
    ) -> Result<(), Divergence> {
        // The claims die with the process: dropping them here cannot write (the disk is
        // off), just as a killed process's claims never abandon.
        self.held.clear();
        self.store = None;
        let torn = self.armed.take().flatten();
        self.disk.power_cut(match torn {
            Some(seed) => CrashMode::Torn { seed },
            None => CrashMode::Durable,
        });
        self.stats.crashes += 1;
        if torn.is_some() {
            self.stats.torn += 1;
        }
        self.open()?;
        let touched = !acknowledged
            && !matches!(
                step,
                Step::Crash { .. } | Step::Advance { .. } | Step::JumpBack { .. }
            );
        let stored = self.stored()?;
        for slot in all_slots() {
            let got = stored.get(&slot);
            let after = self.model.get(&slot);
            let prior = before.get(&slot);
            if same(got, after, false) {
                continue;
            }
            if touched && (same(got, prior, false) || same(got, after, true)) {
                // The step was cut short; either outcome is allowed. Adopt what the store has.
                self.stats.cut_short += 1;
                match got {
                    Some(record) => self.model.insert(slot, record.clone()),
                    None => self.model.remove(&slot),
                };
                continue;
            }
            if after.is_some() && got.is_none() {
                self.stats.lost += 1;
            }
            return Err(self.diverge(format!(
                "after a crash {slot:?} holds {got:?}; the model has {after:?} (before the \
                 step: {prior:?})"
            )));
        }
        self.check_integrity()?;
        self.compare_all()
    }

    /// Every record the store holds, expired ones included, by slot.
    fn stored(&self) -> Result<BTreeMap<(usize, usize), Record>, Divergence> {
        let scan = self
            .store()?
            .scan_including_expired(None)
            .map_err(|e| self.diverge(format!("scanning failed: {e}")))?;
        let mut stored = BTreeMap::new();
        for entry in scan {
            let entry = entry.map_err(|e| self.diverge(format!("scanning failed: {e}")))?;
            let scope = SCOPES.iter().position(|s| *s == entry.scope);
            let key = KEYS.iter().position(|k| *k == entry.key);
            match (scope, key) {
                (Some(s), Some(k)) => {
                    stored.insert((s, k), entry.record);
                }
                _ => {
                    return Err(self.diverge(format!(
                        "the store holds a key no step wrote: ({:?}, {:?})",
                        entry.scope, entry.key
                    )));
                }
            }
        }
        Ok(stored)
    }

    /// Compares every record in the store, expired or not, and every live one as `get`
    /// returns it, with the model's.
    fn compare_all(&self) -> Result<(), Divergence> {
        let now = self.now();
        let stored = self.stored()?;
        if stored != self.model {
            return Err(self.diverge(format!(
                "the store holds {stored:?}, the model {:?}",
                self.model
            )));
        }
        let store = self.store()?;
        for slot in all_slots() {
            let got = store
                .get(SCOPES[slot.0], KEYS[slot.1])
                .map_err(|e| self.diverge(format!("reading {slot:?} failed: {e}")))?;
            let want = self.model.get(&slot).filter(|r| !r.is_expired(now));
            if !same(got.as_ref(), want, false) {
                return Err(self.diverge(format!(
                    "{slot:?}: the store returns {got:?}, the model {want:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Responses a `Complete` may store: one empty, one ~200 bytes, one binary.
const RESPONSES: [&[u8]; 4] = [
    b"",
    b"{\"id\":\"n-1\",\"status\":\"sent\"}",
    &[0u8, 255, 1, 254, 2, 253],
    &[b'x'; 200],
];

fn slot(scope: u8, key: u8) -> (usize, usize) {
    (
        usize::from(scope) % SCOPES.len(),
        usize::from(key) % KEYS.len(),
    )
}

fn all_slots() -> impl Iterator<Item = (usize, usize)> {
    (0..SCOPES.len()).flat_map(|s| (0..KEYS.len()).map(move |k| (s, k)))
}

fn diverge(step: usize, detail: String) -> Divergence {
    Divergence { step, detail }
}

/// Whether two records are equal; with `any_claim`, an in-flight claim id of 0 on the
/// model's side (a claim whose id the store never reported) matches any id.
fn same(store: Option<&Record>, model: Option<&Record>, any_claim: bool) -> bool {
    match (store, model) {
        (None, None) => true,
        (Some(a), Some(b)) if any_claim => {
            let mut b = b.clone();
            if let (RecordState::InFlight(fa), RecordState::InFlight(fb)) = (&a.state, &mut b.state)
                && fb.claim == ClaimId::from_u128(0)
            {
                fb.claim = fa.claim;
            }
            *a == b
        }
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
