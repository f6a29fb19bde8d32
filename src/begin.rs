//! What a `begin` can answer, and the per-request options it takes.

use std::time::Duration;

use crate::claim::Claim;
use crate::decision::{Abandoned, Conflict, InProgress, RecoveryPolicy, Replay};

/// The answer to [`Store::begin`](crate::Store::begin).
#[derive(Debug)]
#[must_use = "an Execute must be completed or released; dropping it abandons the claim"]
pub enum Begin {
    /// You hold the key: execute the request, then [`Claim::complete`] with the response,
    /// or [`Claim::release`] if it did not happen. Dropping the claim abandons it.
    Execute(Claim),
    /// The request already completed: return this stored response, do not execute.
    Replay(Replay),
    /// The key was used for a different request (another fingerprint).
    Conflict(Conflict),
    /// Another caller holds the key; try again after `retry_after`.
    InProgress(InProgress),
    /// The holder vanished without an outcome, and the recovery policy is strict.
    Abandoned(Abandoned),
}

impl Begin {
    /// The claim, if this is an `Execute`.
    pub fn into_claim(self) -> Option<Claim> {
        match self {
            Begin::Execute(claim) => Some(claim),
            _ => None,
        }
    }

    /// The stored response, if this is a `Replay`.
    pub fn replayed(&self) -> Option<&[u8]> {
        match self {
            Begin::Replay(r) => Some(&r.response),
            _ => None,
        }
    }

    /// A short name of the answer: `execute`, `replay`, `conflict`, `in_progress`,
    /// `abandoned`.
    pub fn kind(&self) -> &'static str {
        match self {
            Begin::Execute(_) => "execute",
            Begin::Replay(_) => "replay",
            Begin::Conflict(_) => "conflict",
            Begin::InProgress(_) => "in_progress",
            Begin::Abandoned(_) => "abandoned",
        }
    }
}

/// How long a record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// From the first claim, for this long (1 s up to the store's maximum), and at least
    /// this long after the completion.
    For(Duration),
    /// Never expires: a durable identity, such as an entity's external id.
    Forever,
}

/// Per-request options for [`Store::begin_with`](crate::Store::begin_with); anything left
/// unset uses the store's default.
///
/// ```
/// use idemdb::BeginOptions;
/// use std::time::Duration;
///
/// let options = BeginOptions::new()
///     .retention(Duration::from_secs(30 * 24 * 3600))
///     .lease(Duration::from_secs(5))
///     .no_wait();
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct BeginOptions {
    pub(crate) retention: Option<Retention>,
    pub(crate) lease: Option<Duration>,
    pub(crate) wait: Option<Duration>,
    pub(crate) recovery: Option<RecoveryPolicy>,
    pub(crate) owner: Option<Vec<u8>>,
}

impl BeginOptions {
    /// All defaults.
    pub fn new() -> BeginOptions {
        BeginOptions::default()
    }

    /// Keep the record for this long from the first claim, and at least this long after
    /// its completion.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(Retention::For(retention));
        self
    }

    /// Keep the record forever.
    pub fn forever(mut self) -> Self {
        self.retention = Some(Retention::Forever);
        self
    }

    /// The claim's lease (zero is allowed: abandoned at once unless extended).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Wait this long at most for a holder of the same key in this process (never for the
    /// calling thread itself: see [`Store::begin`](crate::Store::begin)).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Do not wait for a holder: answer in-progress at once.
    pub fn no_wait(self) -> Self {
        self.wait(Duration::ZERO)
    }

    /// The recovery policy for this request.
    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = Some(policy);
        self
    }

    /// An opaque tag stored with the claim, naming its holder (at most
    /// [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN) bytes).
    pub fn owner(mut self, owner: impl Into<Vec<u8>>) -> Self {
        self.owner = Some(owner.into());
        self
    }
}
