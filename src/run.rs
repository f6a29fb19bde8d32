//! The closure helper: `begin`, execute, `complete`, in one call.

use crate::begin::{Begin, BeginOptions};
use crate::claim::{Claim, Completion};
use crate::decision::{Abandoned, Conflict, InProgress};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::store::Store;
use crate::time::Timestamp;

/// The response of a [`Store::run`], fresh or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The response bytes.
    pub response: Vec<u8>,
    /// True when the operation did not run now: this is the stored response of an earlier
    /// run.
    pub replayed: bool,
    /// True when this run took over an abandoned claim (an earlier attempt may have run).
    pub recovery: bool,
    /// When the record expires (`None`: never).
    pub expires_at: Option<Timestamp>,
}

/// Why a [`Store::run`] did not produce a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E> {
    /// The key belongs to a different request.
    #[error("idempotency key reused for a different request")]
    Conflict(Conflict),
    /// Another caller holds the key.
    #[error("request in progress elsewhere; retry after {:?}", .0.retry_after)]
    InProgress(InProgress),
    /// An earlier attempt vanished and the recovery policy is strict.
    #[error("an earlier attempt was abandoned without an outcome")]
    Abandoned(Abandoned),
    /// The operation returned an error; the claim was released, so a retry runs it again.
    #[error("operation failed: {0}")]
    Failed(E),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
}

impl Store {
    /// Runs `operation` at most once for (scope, key, fingerprint) and returns its response,
    /// or the stored response of the run that already happened.
    ///
    /// - `Ok(response)` from the operation is stored and returned.
    /// - `Err(e)` from the operation releases the key (the operation must not have had an
    ///   effect) and comes back as [`RunError::Failed`]. To record a failure so retries see
    ///   it, return it as a response instead.
    /// - A panic in the operation abandons the claim and keeps unwinding.
    ///
    /// ```
    /// use idemdb::{Fingerprint, Store};
    ///
    /// let store = Store::builder().open_in_memory()?;
    /// let fp = Fingerprint::of(b"send welcome mail to u1");
    /// let mut sent = 0;
    /// for _ in 0..3 {
    ///     let out = store
    ///         .run("mail", "welcome-u1", fp, |_claim| {
    ///             sent += 1;
    ///             Ok::<_, std::io::Error>(b"queued".to_vec())
    ///         })
    ///         .unwrap();
    ///     assert_eq!(out.response, b"queued");
    /// }
    /// assert_eq!(sent, 1);
    /// # Ok::<(), idemdb::Error>(())
    /// ```
    pub fn run<E>(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        operation: impl FnOnce(&Claim) -> Result<Vec<u8>, E>,
    ) -> Result<RunOutcome, RunError<E>> {
        self.run_with(scope, key, fingerprint, &BeginOptions::default(), operation)
    }

    /// [`run`](Self::run) with per-request options.
    pub fn run_with<E>(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        options: &BeginOptions,
        operation: impl FnOnce(&Claim) -> Result<Vec<u8>, E>,
    ) -> Result<RunOutcome, RunError<E>> {
        let claim =
            match RunOutcome::claim_or_answer(self.begin_with(scope, key, fingerprint, options)?) {
                Ok(claim) => claim,
                Err(answer) => return answer,
            };
        let recovery = claim.is_recovery();
        match operation(&claim) {
            Ok(response) => {
                let completion = claim.complete(&response).map_err(Error::from)?;
                Ok(RunOutcome::ran(response, recovery, completion))
            }
            Err(e) => {
                if let Err(error) = claim.release() {
                    tracing::warn!(%error, "releasing after a failed operation failed");
                }
                Err(RunError::Failed(e))
            }
        }
    }
}

impl RunOutcome {
    /// The response of an operation that ran now.
    pub(crate) fn ran(response: Vec<u8>, recovery: bool, completion: Completion) -> RunOutcome {
        RunOutcome {
            response,
            replayed: false,
            recovery,
            expires_at: completion.expires_at,
        }
    }

    /// The claim of a `begin` that lets the operation run; otherwise the run's answer: a
    /// replay, or why not.
    #[allow(clippy::result_large_err)]
    pub(crate) fn claim_or_answer<E>(
        begin: Begin,
    ) -> Result<Claim, Result<RunOutcome, RunError<E>>> {
        match begin {
            Begin::Execute(claim) => Ok(claim),
            Begin::Replay(r) => Err(Ok(RunOutcome {
                response: r.response,
                replayed: true,
                recovery: false,
                expires_at: r.expires_at,
            })),
            Begin::Conflict(c) => Err(Err(RunError::Conflict(c))),
            Begin::InProgress(p) => Err(Err(RunError::InProgress(p))),
            Begin::Abandoned(a) => Err(Err(RunError::Abandoned(a))),
        }
    }
}
