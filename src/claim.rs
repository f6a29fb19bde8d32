//! A held claim: the right to execute one key's request, and the duty to end it.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::decision::{Execution, Operation, Outcome, Recovery};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::inflight::SlotGuard;
use crate::record::ClaimId;
use crate::store::{Store, display_key};
use crate::telemetry::Timer;
use crate::time::Timestamp;

/// The right, held by exactly one caller, to execute a key's request.
///
/// End it with [`complete`](Self::complete) (the response is stored and replayed to every
/// retry) or [`release`](Self::release) (the operation did not happen; a retry may run it).
/// Dropping it without either — an early return, a panic — *abandons* it: the outcome is
/// unknown, so the key is not freed; its lease ends at once and the store's recovery policy
/// decides what the next request gets. Waiters in this process wake in every case.
#[must_use = "a claim must be completed or released; dropping it abandons the key"]
pub struct Claim {
    store: Store,
    storage_key: Vec<u8>,
    fingerprint: Fingerprint,
    execution: Execution,
    // Held only to be dropped: after the final operation (fields drop after `Drop::drop`),
    // so waiters in this process wake to the final state.
    _slot: Option<SlotGuard>,
    ended: bool,
    /// Made by an async `begin`: a drop must not wait for the abandonment's commit.
    asynchronous: bool,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scope, key) = display_key(&self.storage_key);
        f.debug_struct("Claim")
            .field("scope", &scope)
            .field("key", &key)
            .field("id", &self.execution.claim)
            .field("attempt", &self.execution.attempt)
            .finish_non_exhaustive()
    }
}

/// What a successful [`Claim::complete`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// When the response was stored.
    pub completed_at: Timestamp,
    /// When the record expires (`None`: never): at least the retention after
    /// `completed_at`.
    pub expires_at: Option<Timestamp>,
}

/// A failed [`Claim::complete`]: the error, and the claim back when completing may still
/// succeed (for instance with a smaller response, or once the disk has space again).
/// Dropping the returned claim abandons it.
#[derive(Debug)]
pub struct CompleteError {
    /// Why completing failed.
    pub error: Error,
    /// The claim, unless it has lost its key.
    pub claim: Option<Box<Claim>>,
}

impl fmt::Display for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "completing the claim failed: {}", self.error)
    }
}

impl std::error::Error for CompleteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<CompleteError> for Error {
    /// Keeps the error; the claim, if any, is dropped and so abandoned.
    fn from(e: CompleteError) -> Error {
        e.error
    }
}

/// A claim detached from its store handle, to be resumed later with
/// [`Store::resume`](crate::Store::resume), possibly by another process. The CLI uses it so
/// the store file is not held while the user's command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimTicket {
    /// The scope.
    pub scope: String,
    /// The key, as stored (UUIDs in lower case).
    pub key: String,
    /// The claim's id.
    pub claim: ClaimId,
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
}

impl ClaimTicket {
    /// A ticket for a claim known by its parts.
    pub fn new(scope: &str, key: &str, claim: ClaimId, fingerprint: Fingerprint) -> ClaimTicket {
        ClaimTicket {
            scope: scope.to_owned(),
            key: key.to_owned(),
            claim,
            fingerprint,
        }
    }
}

impl Claim {
    pub(crate) fn new(
        store: Store,
        storage_key: Vec<u8>,
        fingerprint: Fingerprint,
        execution: Execution,
        slot: Option<SlotGuard>,
    ) -> Claim {
        Claim {
            store,
            storage_key,
            fingerprint,
            execution,
            _slot: slot,
            ended: false,
            asynchronous: false,
        }
    }

    /// Marks a claim used by an async caller: its drop must not wait for a commit.
    pub(crate) fn into_asynchronous(mut self) -> Claim {
        self.asynchronous = true;
        self
    }

    /// The claim's id.
    pub fn id(&self) -> ClaimId {
        self.execution.claim
    }

    /// The scope.
    pub fn scope(&self) -> String {
        display_key(&self.storage_key).0
    }

    /// The key, as stored (UUIDs in lower case).
    pub fn key(&self) -> String {
        display_key(&self.storage_key).1
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// 1 for the first execution; more when taking over abandoned claims.
    pub fn attempt(&self) -> u32 {
        self.execution.attempt
    }

    /// Present when an earlier attempt vanished without an outcome: it may have run partly
    /// or fully, so check before repeating a side effect.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.execution.recovery.as_ref()
    }

    /// Whether this execution takes over an abandoned claim.
    pub fn is_recovery(&self) -> bool {
        self.execution.recovery.is_some()
    }

    /// When the key was first claimed.
    pub fn created_at(&self) -> Timestamp {
        self.execution.created_at
    }

    /// When the record expires (`None`: never).
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.execution.expires_at
    }

    /// When the lease ends unless extended.
    pub fn lease_until(&self) -> Timestamp {
        self.execution.lease_until
    }

    fn apply(&self, op: Operation) -> Result<Outcome> {
        self.store.inner.check_open()?;
        let (timer, label) = (Timer::start(), op_label(&op));
        let outcome = self
            .store
            .inner
            .engine
            .apply_one(self.storage_key.clone(), op);
        timer.claim_end(label, ended_well(&outcome));
        outcome
    }

    /// [`apply`](Self::apply) for an async caller: awaits the writer.
    async fn submit(&self, op: Operation) -> Result<Outcome> {
        self.store.inner.check_open()?;
        let (timer, label) = (Timer::start(), op_label(&op));
        let outcome = self
            .store
            .inner
            .engine
            .submit_one(self.storage_key.clone(), op)
            .await;
        timer.claim_end(label, ended_well(&outcome));
        outcome
    }

    /// Stores `response` as the request's outcome; every later `begin` with this key and
    /// fingerprint replays it. Durable when this returns (with the default durability).
    ///
    /// The record then lives at least the retention after the completion: it expires at
    /// the later of its first claim's expiry and the completion plus the retention
    /// ([`Completion::expires_at`]). A completion late in a long lease, past the first
    /// claim's expiry, is so never stored already expired, and its retry replays it.
    ///
    /// On failure the record stays in flight — it never turns into a fresh execution for
    /// someone else — and the claim comes back in the error when completing may still work.
    pub fn complete(self, response: impl AsRef<[u8]>) -> Result<Completion, CompleteError> {
        let op = match self.complete_op(response.as_ref()) {
            Ok(op) => op,
            Err(error) => return Err(self.keep(error)),
        };
        let outcome = self.apply(op);
        self.settle_complete(outcome)
    }

    /// [`complete`](Self::complete) for async callers: the commit is awaited, no thread
    /// waits for it.
    ///
    /// If this future is dropped before it finishes, the completion may still be stored
    /// (it was handed to the writer); the claim is then ended as a dropped claim is, which
    /// finds it completed.
    pub async fn complete_async(
        self,
        response: impl AsRef<[u8]>,
    ) -> Result<Completion, CompleteError> {
        let claim = self.into_asynchronous();
        let op = match claim.complete_op(response.as_ref()) {
            Ok(op) => op,
            Err(error) => return Err(claim.keep(error)),
        };
        let outcome = claim.submit(op).await;
        claim.settle_complete(outcome)
    }

    fn complete_op(&self, response: &[u8]) -> Result<Operation> {
        let limit = self.store.max_response_size();
        if response.len() > limit {
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit,
            });
        }
        Ok(Operation::Complete {
            claim: self.execution.claim,
            response: response.to_vec(),
        })
    }

    /// A failed completion that leaves the claim usable: it goes back to the caller.
    fn keep(self, error: Error) -> CompleteError {
        CompleteError {
            error,
            claim: Some(Box::new(self)),
        }
    }

    fn settle_complete(mut self, outcome: Result<Outcome>) -> Result<Completion, CompleteError> {
        match outcome {
            Ok(Outcome::Completed {
                completed_at,
                expires_at,
            }) => {
                self.ended = true;
                let counters = &self.store.inner.counters;
                counters.completes.fetch_add(1, Ordering::Relaxed);
                Ok(Completion {
                    completed_at,
                    expires_at,
                })
            }
            Ok(Outcome::ClaimLost(reason)) => {
                self.ended = true;
                Err(CompleteError {
                    error: Error::ClaimLost(reason),
                    claim: None,
                })
            }
            Ok(other) => Err(self.keep(Error::Internal {
                detail: format!("unexpected outcome {other:?} for complete"),
            })),
            Err(error) => Err(self.keep(error)),
        }
    }

    /// The operation did not happen (and will not): free the key, so a retry executes it.
    /// If this fails the claim is abandoned instead.
    pub fn release(self) -> Result<()> {
        let outcome = self.apply(self.release_op());
        self.settle_release(outcome)
    }

    /// [`release`](Self::release) for async callers. Dropped before it finishes, the
    /// release may still take effect; otherwise the claim is abandoned as a dropped one is.
    pub async fn release_async(self) -> Result<()> {
        let claim = self.into_asynchronous();
        let outcome = claim.submit(claim.release_op()).await;
        claim.settle_release(outcome)
    }

    fn release_op(&self) -> Operation {
        Operation::Release {
            claim: self.execution.claim,
        }
    }

    fn settle_release(mut self, outcome: Result<Outcome>) -> Result<()> {
        match outcome? {
            Outcome::Released => {
                self.ended = true;
                let counters = &self.store.inner.counters;
                counters.releases.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Outcome::ClaimLost(reason) => {
                self.ended = true;
                Err(Error::ClaimLost(reason))
            }
            other => Err(Error::Internal {
                detail: format!("unexpected outcome {other:?} for release"),
            }),
        }
    }

    /// Gives up without an outcome, as dropping the claim does, but reports errors.
    pub fn abandon(mut self) -> Result<()> {
        self.ended = true;
        self.abandon_now()
    }

    /// [`abandon`](Self::abandon) for async callers.
    pub async fn abandon_async(mut self) -> Result<()> {
        self.asynchronous = true;
        self.ended = true;
        let outcome = self.submit(self.abandon_op()).await;
        self.settle_abandon(outcome)
    }

    fn abandon_now(&self) -> Result<()> {
        self.settle_abandon(self.apply(self.abandon_op()))
    }

    fn abandon_op(&self) -> Operation {
        Operation::Abandon {
            claim: self.execution.claim,
        }
    }

    fn settle_abandon(&self, outcome: Result<Outcome>) -> Result<()> {
        match outcome? {
            Outcome::AbandonRecorded => {
                let counters = &self.store.inner.counters;
                counters.abandons.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Outcome::ClaimLost(reason) => Err(Error::ClaimLost(reason)),
            other => Err(Error::Internal {
                detail: format!("unexpected outcome {other:?} for abandon"),
            }),
        }
    }

    /// Sets the lease to end `lease` from now, for an operation that runs longer than its
    /// lease. Returns the new end.
    pub fn extend_lease(&mut self, lease: Duration) -> Result<Timestamp> {
        let outcome = self.apply(self.extend_lease_op(lease));
        self.settle_extend_lease(outcome)
    }

    /// [`extend_lease`](Self::extend_lease) for async callers.
    pub async fn extend_lease_async(&mut self, lease: Duration) -> Result<Timestamp> {
        self.asynchronous = true;
        let outcome = self.submit(self.extend_lease_op(lease)).await;
        self.settle_extend_lease(outcome)
    }

    fn extend_lease_op(&self, lease: Duration) -> Operation {
        Operation::ExtendLease {
            claim: self.execution.claim,
            lease,
        }
    }

    fn settle_extend_lease(&mut self, outcome: Result<Outcome>) -> Result<Timestamp> {
        match outcome? {
            Outcome::LeaseExtended { lease_until } => {
                self.execution.lease_until = lease_until;
                Ok(lease_until)
            }
            Outcome::ClaimLost(reason) => Err(Error::ClaimLost(reason)),
            other => Err(Error::Internal {
                detail: format!("unexpected outcome {other:?} for extend_lease"),
            }),
        }
    }

    /// Lets go of this handle without ending the claim: the record stays in flight under
    /// its lease, marked detached, and [`Store::resume`](crate::Store::resume) takes it back,
    /// possibly in another process after this one has closed the store. Waiters in this
    /// process stop waiting for it.
    ///
    /// A claim that is not detached ends with the opening of the store that made it: once
    /// the store is reopened its holder counts as gone (the recovery policy decides what
    /// the next request gets). A detached one is judged by its lease instead, and by its
    /// owner tag ([`BeginOptions::owner`](crate::BeginOptions::owner)) for a supervisor that
    /// can tell whether the owner still runs and [`Store::abandon`](crate::Store::abandon)s
    /// it if not (the `idemdb` command-line tool does).
    ///
    /// The mark is one durable write. If it fails the claim is abandoned, as dropping it
    /// does, and the error returned.
    pub fn detach(mut self) -> Result<ClaimTicket> {
        let outcome = self.apply(self.detach_op());
        let detached = self.settle_detach(outcome);
        if detached.is_err() && !self.ended {
            self.ended = true;
            self.log_failed_abandon(self.abandon_now());
        }
        detached
    }

    /// [`detach`](Self::detach) for async callers: the mark's commit (and the abandonment
    /// if it fails) is awaited. Dropped before it finishes, the claim is abandoned as a
    /// dropped one is: its caller never got the ticket.
    pub async fn detach_async(self) -> Result<ClaimTicket> {
        let mut claim = self.into_asynchronous();
        let outcome = claim.submit(claim.detach_op()).await;
        let detached = claim.settle_detach(outcome);
        if detached.is_err() && !claim.ended {
            claim.ended = true;
            let abandoned = claim.submit(claim.abandon_op()).await;
            claim.log_failed_abandon(claim.settle_abandon(abandoned));
        }
        detached
    }

    fn detach_op(&self) -> Operation {
        Operation::Detach {
            claim: self.execution.claim,
        }
    }

    /// The ticket of a claim marked detached. A failure leaves the claim unended, for the
    /// caller to abandon, unless the claim is lost anyway.
    fn settle_detach(&mut self, outcome: Result<Outcome>) -> Result<ClaimTicket> {
        match outcome? {
            Outcome::Detached => {
                self.ended = true;
                let (scope, key) = display_key(&self.storage_key);
                Ok(ClaimTicket {
                    scope,
                    key,
                    claim: self.execution.claim,
                    fingerprint: self.fingerprint,
                })
            }
            Outcome::ClaimLost(reason) => {
                self.ended = true;
                Err(Error::ClaimLost(reason))
            }
            other => Err(Error::Internal {
                detail: format!("unexpected outcome {other:?} for detach"),
            }),
        }
    }

    /// Reports a failed abandonment of a claim nobody will end (one dropped, or one that
    /// could not be detached): there is no caller to return it to. The record stays in
    /// flight; its lease ends on its own.
    fn log_failed_abandon(&self, abandoned: Result<()>) {
        if let Err(error) = abandoned {
            tracing::warn!(%error, claim = %self.execution.claim, "abandoning a claim without an outcome failed");
        }
    }
}

/// The metrics label of a claim's operation.
fn op_label(op: &Operation) -> &'static str {
    match op {
        Operation::Complete { .. } => "complete",
        Operation::Release { .. } => "release",
        Operation::Abandon { .. } => "abandon",
        Operation::ExtendLease { .. } => "extend_lease",
        Operation::Detach { .. } => "detach",
        _ => "other",
    }
}

/// Whether a claim's operation did what it was asked (not lost, not failed).
fn ended_well(outcome: &Result<Outcome>) -> bool {
    matches!(
        outcome,
        Ok(Outcome::Completed { .. }
            | Outcome::Released
            | Outcome::AbandonRecorded
            | Outcome::Detached
            | Outcome::LeaseExtended { .. })
    )
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Dropping is how a panic or an early return abandons a claim; a claim dropped by
        // mistake (`matches!(store.begin(..), Begin::Execute(_))`) looks the same, so debug
        // builds say so, on the thread that drops it (the one that knows it is unwinding).
        #[cfg(debug_assertions)]
        if !std::thread::panicking() {
            tracing::warn!(
                claim = %self.execution.claim,
                "an idemdb claim was dropped without complete, release, abandon or detach \
                 (or while an async one was being awaited): unless that one took effect, the \
                 key is abandoned and the recovery policy decides what its retry gets"
            );
        }
        if self.asynchronous {
            // Dropped on an async caller's thread, which must not wait for a commit: the
            // abandonment (and its warning, should it fail) goes to the store's finisher.
            // The claim handed over counts as ended, so its own drop only wakes the waiters
            // (after the abandonment) and does not warn a second time.
            let claim = Claim {
                store: self.store.clone(),
                storage_key: std::mem::take(&mut self.storage_key),
                fingerprint: self.fingerprint,
                execution: self.execution.clone(),
                _slot: self._slot.take(),
                ended: true,
                asynchronous: false,
            };
            self.ended = true;
            let finisher = &self.store.inner.finisher;
            finisher.hand_off(move || claim.log_failed_abandon(claim.abandon_now()));
            return;
        }
        self.log_failed_abandon(self.abandon_now());
    }
}
