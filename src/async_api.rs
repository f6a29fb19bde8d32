//! The async forms of the façade's calls, for services on an async runtime (tokio,
//! async-std, smol: nothing here depends on one).
//!
//! What an async call never does on the caller's thread: wait for a commit or a sync (the
//! writer thread does them and wakes the task), wait for another caller in this process
//! that holds the key (a future woken by its slot, with a timer for the bound), or wait
//! for the store's threads to stop (`close_async`). Reads of committed records — a replay,
//! a conflict, `get` — run on the caller's thread as in the blocking API: they never wait
//! for a writer, but a cold record may be read from the disk.
//!
//! Cancellation: dropping a `begin_async` future after it asked for the claim does not
//! leave the key held by nobody. The answer is awaited on the store's finisher thread and a
//! claim it brings is released: its caller never saw it, so nothing was done under it, and
//! the next request executes at once. (A claim that took over an abandoned one is
//! abandoned again instead: its record is the trace that an earlier attempt may have run.)
//! A [`Claim`] used by an async caller and dropped without an outcome is abandoned, as a
//! blocking one is (its outcome is unknown), on the finisher thread; so is one whose
//! `complete_async`, `release_async` or `detach_async` future was dropped before the commit
//! answered (the operation may still have taken effect: a completion or release is then
//! found ended; a detached claim, whose ticket its caller never got, is abandoned).
//!
//! A blocking `begin` on a key its own thread holds answers at once; an async one does not
//! look at threads, which say nothing about tasks (a task moves between a runtime's
//! threads, and one thread runs many tasks): `begin_async` on a key its own task holds
//! waits, as a future, up to its `wait` bound, then answers InProgress.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::begin::{Begin, BeginOptions};
use crate::claim::Claim;
use crate::decision::Outcome;
use crate::detached::{block_on, on_own_thread};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::inflight::{SlotGuard, deadline_after};
use crate::run::{RunError, RunOutcome};
use crate::storage::Applying;
use crate::store::{Store, begin_label, deleted, slot_to_claim_with};
use crate::telemetry::Timer;

impl Store {
    /// [`begin`](Self::begin) for async callers: awaits the claim's commit and any wait for
    /// a holder in this process without holding a thread.
    pub async fn begin_async(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Begin> {
        self.begin_with_async(scope, key, fingerprint, &BeginOptions::default())
            .await
    }

    /// [`begin_with`](Self::begin_with) for async callers.
    ///
    /// Unlike the blocking form, it is not answered at once on a key the caller itself
    /// holds (a task is not tied to a thread): it waits for that holder as for any other,
    /// up to the `wait` bound. End a claim, or begin with
    /// [`no_wait`](BeginOptions::no_wait), before beginning its key again.
    pub async fn begin_with_async(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        options: &BeginOptions,
    ) -> Result<Begin> {
        let timer = Timer::start();
        let begin = self
            .begin_async_untimed(scope, key, fingerprint, options)
            .await;
        timer.begin(begin_label(&begin));
        begin
    }

    async fn begin_async_untimed(
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
            if let Some(answer) = inner.answer_from_read(&storage_key, &spec)? {
                return self.finish_begin(answer, &storage_key, fingerprint, None);
            }
            let entry = inner
                .inflight
                .enter_async(&storage_key, fingerprint, deadline)
                .await;
            let Some((slot, vacant)) = slot_to_claim_with(entry) else {
                continue;
            };
            let claiming = Claiming {
                pending: Some(
                    inner
                        .engine
                        .submit(vec![(storage_key.clone(), inner.claim_op(&spec))]),
                ),
                store: self.clone(),
                storage_key: storage_key.clone(),
                fingerprint,
                slot: Some(slot),
            };
            let (outcome, slot) = claiming.await;
            let outcome = outcome?;
            if vacant
                && matches!(outcome, Outcome::InProgress(_))
                && slot.as_ref().is_some_and(SlotGuard::overtaken)
            {
                continue;
            }
            return Ok(
                match self.finish_begin(outcome, &storage_key, fingerprint, slot)? {
                    Begin::Execute(claim) => Begin::Execute(claim.into_asynchronous()),
                    other => other,
                },
            );
        }
    }

    /// [`delete`](Self::delete) for async callers.
    pub async fn delete_async(&self, scope: &str, key: &str) -> Result<bool> {
        deleted(
            self.submit_keyed(scope, key, crate::decision::Operation::Delete)
                .await?,
        )
    }

    /// [`close`](Self::close) for async callers: the final commit, fold and the joining of
    /// the store's threads happen on a thread of their own.
    pub async fn close_async(&self) -> Result<()> {
        let store = self.clone();
        on_own_thread("idemdb-close", move || store.close())
            .await
            .unwrap_or(Err(Error::Closed))
    }

    /// [`run`](Self::run) for async callers: `operation` is an async closure, which may
    /// borrow the claim (`async |claim| { ... claim.attempt() ... }`), and every store call
    /// is awaited.
    pub async fn run_async<E>(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        operation: impl AsyncFnOnce(&Claim) -> Result<Vec<u8>, E>,
    ) -> Result<RunOutcome, RunError<E>> {
        self.run_with_async(scope, key, fingerprint, &BeginOptions::default(), operation)
            .await
    }

    /// [`run_with`](Self::run_with) for async callers.
    pub async fn run_with_async<E>(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        options: &BeginOptions,
        operation: impl AsyncFnOnce(&Claim) -> Result<Vec<u8>, E>,
    ) -> Result<RunOutcome, RunError<E>> {
        let begin = self
            .begin_with_async(scope, key, fingerprint, options)
            .await?;
        let claim = match RunOutcome::claim_or_answer(begin) {
            Ok(claim) => claim,
            Err(answer) => return answer,
        };
        let recovery = claim.is_recovery();
        match operation(&claim).await {
            Ok(response) => {
                let completion = claim.complete_async(&response).await.map_err(Error::from)?;
                Ok(RunOutcome::ran(response, recovery, completion))
            }
            Err(e) => {
                if let Err(error) = claim.release_async().await {
                    tracing::warn!(%error, "releasing after a failed operation failed");
                }
                Err(RunError::Failed(e))
            }
        }
    }
}

/// A claim asked of the engine for an async `begin`. Dropped before the answer came, it
/// hands the answer to a thread of its own, which releases the claim if one was made.
struct Claiming {
    pending: Option<Applying>,
    store: Store,
    storage_key: Vec<u8>,
    fingerprint: Fingerprint,
    slot: Option<SlotGuard>,
}

impl Future for Claiming {
    /// The outcome, and the slot to hold with the claim (`None` only if polled again
    /// after it was ready).
    type Output = (Result<Outcome>, Option<SlotGuard>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(pending) = this.pending.as_mut() else {
            return Poll::Ready((Err(Error::Closed), this.slot.take()));
        };
        let Poll::Ready(mut results) = pending.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        this.pending = None;
        let outcome = results.pop().unwrap_or(Err(Error::Closed));
        Poll::Ready((outcome, this.slot.take()))
    }
}

impl Drop for Claiming {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let store = self.store.clone();
        let storage_key = std::mem::take(&mut self.storage_key);
        let fingerprint = self.fingerprint;
        let slot = self.slot.take();
        let finisher = &self.store.inner.finisher;
        finisher.hand_off(move || {
            let Some(Ok(outcome)) = block_on(pending).pop() else {
                return;
            };
            let Ok(Begin::Execute(claim)) =
                store.finish_begin(outcome, &storage_key, fingerprint, slot)
            else {
                return;
            };
            // A claim made for a caller that is gone, and so never used: free the key (a
            // failed release abandons it). Unless it took over an abandoned claim: its
            // record is the only trace that an earlier attempt may have run, so it stays,
            // abandoned again. Then the slot's waiters wake.
            let ended = if claim.is_recovery() {
                claim.abandon()
            } else {
                claim.release()
            };
            if let Err(error) = ended {
                tracing::warn!(%error, "ending the claim of a cancelled begin failed");
            }
        });
    }
}
