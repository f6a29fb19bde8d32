//! What the store keeps per (scope, key).

use std::fmt;

use crate::fingerprint::Fingerprint;
use crate::time::Timestamp;

/// Identifies one claim: the right to execute a key's request, held by one caller.
///
/// Completing, releasing or extending a claim checks this id against the record, so a claim
/// whose key was taken over after its lease ended can never overwrite the new holder's work.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimId(u128);

impl ClaimId {
    /// Wraps a raw id.
    pub const fn from_u128(id: u128) -> ClaimId {
        ClaimId(id)
    }

    /// The raw id.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Parses the 32-digit hexadecimal form that `Display` writes.
    pub fn parse(text: &str) -> Option<ClaimId> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(ClaimId)
    }

    /// The opening of the store that minted this id (its high 64 bits).
    pub(crate) const fn opening(self) -> Opening {
        Opening((self.0 >> 64) as u64)
    }
}

/// One opening of a store. Every claim id an opening mints carries it in its high 64 bits,
/// so the decision can tell a claim made since the store was last opened (its holder may
/// be at work) from one made before (its holder's process has let go of the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Opening(u64);

impl Opening {
    /// An opening known by its number (a random one per open).
    pub(crate) const fn new(id: u64) -> Opening {
        Opening(id)
    }

    /// The `n`-th claim id this opening mints.
    pub(crate) const fn claim(self, n: u64) -> ClaimId {
        ClaimId(((self.0 as u128) << 64) | n as u128)
    }
}

impl fmt::Debug for ClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimId({:032x})", self.0)
    }
}

impl fmt::Display for ClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The stored state of one idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) attempt: u32,
    pub(crate) state: RecordState,
}

/// Where a record is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Claimed; the holder is executing (or crashed while executing).
    InFlight(InFlight),
    /// Executed; the response is stored for replay.
    Completed(Completed),
}

/// The details of an in-flight record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub(crate) claim: ClaimId,
    pub(crate) lease_until: Timestamp,
    pub(crate) abandoned_at: Option<Timestamp>,
    pub(crate) owner: Option<Vec<u8>>,
    /// Detached with [`Claim::detach`](crate::Claim::detach): its holder may be another
    /// process, so reopening the store does not end it.
    pub(crate) detached: bool,
}

/// The details of a completed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    pub(crate) completed_at: Timestamp,
    pub(crate) response: Vec<u8>,
}

/// A record's state as a plain word, for counting and reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKind {
    /// In flight with a live lease.
    InFlight,
    /// In flight, but its lease has ended or its holder abandoned it: the outcome is
    /// unknown and the recovery policy decides what the next request gets.
    Abandoned,
    /// Completed, with a stored response.
    Completed,
    /// Past its retention; treated as absent, waiting for the sweeper.
    Expired,
}

impl StateKind {
    /// The lower-case name: `in_flight`, `abandoned`, `completed`, `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::InFlight => "in_flight",
            StateKind::Abandoned => "abandoned",
            StateKind::Completed => "completed",
            StateKind::Expired => "expired",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Record {
    /// Starts building a record first claimed at `created_at`, as an import tool re-creates
    /// an exported one: finish it with [`RecordBuilder::completed`] or
    /// [`RecordBuilder::in_flight`] (attempt 1; see [`Record::with_attempt`]).
    ///
    /// ```
    /// use idemdb::{Fingerprint, Record, Timestamp};
    ///
    /// let record = Record::builder(Fingerprint::of(b"request"), Timestamp::from_millis(1_000))
    ///     .expires_at(Some(Timestamp::from_millis(86_401_000)))
    ///     .completed(Timestamp::from_millis(2_000), b"response".to_vec());
    /// assert_eq!(record.response(), Some(&b"response"[..]));
    /// ```
    pub fn builder(fingerprint: Fingerprint, created_at: Timestamp) -> RecordBuilder {
        RecordBuilder {
            fingerprint,
            created_at,
            expires_at: None,
        }
    }

    /// Sets how many claims have executed this key (1 for the first; more after recoveries).
    pub fn with_attempt(mut self, attempt: u32) -> Record {
        self.attempt = attempt.max(1);
        self
    }

    /// Sets an in-flight record's owner tag (at most [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN)
    /// bytes to be imported). No effect on a completed record.
    pub fn with_owner(mut self, owner: Option<Vec<u8>>) -> Record {
        if let RecordState::InFlight(flight) = &mut self.state {
            flight.owner = owner;
        }
        self
    }

    /// Marks an in-flight record as abandoned by its holder at `at` (as an import tool
    /// re-creates an exported abandoned claim); `None` clears the mark. No effect on a
    /// completed record.
    pub fn with_abandoned_at(mut self, at: Option<Timestamp>) -> Record {
        if let RecordState::InFlight(flight) = &mut self.state {
            flight.abandoned_at = at;
        }
        self
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// When the key was first claimed.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the record stops counting (`None`: kept forever).
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    /// How many claims have executed this key: 1, plus one per recovery.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The record's state.
    pub fn state(&self) -> &RecordState {
        &self.state
    }

    /// The stored response, if completed.
    pub fn response(&self) -> Option<&[u8]> {
        match &self.state {
            RecordState::Completed(c) => Some(&c.response),
            RecordState::InFlight(_) => None,
        }
    }

    /// The stored response, taken by value without a copy; `None` if in flight.
    pub fn into_response(self) -> Option<Vec<u8>> {
        match self.state {
            RecordState::Completed(c) => Some(c.response),
            RecordState::InFlight(_) => None,
        }
    }

    /// Marks an in-flight record as detached (as an import tool re-creates an exported
    /// detached claim): a later opening of the store then leaves it to its lease and its
    /// owner instead of treating it as abandoned. No effect on a completed record.
    pub fn with_detached(mut self, detached: bool) -> Record {
        if let RecordState::InFlight(flight) = &mut self.state {
            flight.detached = detached;
        }
        self
    }

    /// The state as a word, at `now`.
    pub fn kind(&self, now: Timestamp) -> StateKind {
        if self.is_expired(now) {
            return StateKind::Expired;
        }
        match &self.state {
            RecordState::Completed(_) => StateKind::Completed,
            RecordState::InFlight(f) if f.lease_live(now) => StateKind::InFlight,
            RecordState::InFlight(_) => StateKind::Abandoned,
        }
    }

    /// The first instant at which the record may be deleted: its expiry, or for an
    /// in-flight record whose lease outlasts the expiry, the end of the lease. A live lease
    /// keeps a record alive, so a slow execution is never run twice because its retention
    /// ran out underneath it. `None` for a record kept forever.
    pub fn sweep_at(&self) -> Option<Timestamp> {
        let expires_at = self.expires_at?;
        Some(match &self.state {
            RecordState::Completed(_) => expires_at,
            RecordState::InFlight(f) => expires_at.max(f.lease_until),
        })
    }

    /// Whether the record counts as absent at `now`. Exact to the millisecond: a record is
    /// live before its `sweep_at` and expired from that instant on.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.sweep_at().is_some_and(|t| now >= t)
    }

    pub(crate) fn in_flight(&self) -> Option<&InFlight> {
        match &self.state {
            RecordState::InFlight(f) => Some(f),
            RecordState::Completed(_) => None,
        }
    }
}

impl InFlight {
    /// The claim that holds the key.
    pub fn claim(&self) -> ClaimId {
        self.claim
    }

    /// When the holder's lease ends.
    pub fn lease_until(&self) -> Timestamp {
        self.lease_until
    }

    /// When the holder gave up without completing or releasing, if it did.
    pub fn abandoned_at(&self) -> Option<Timestamp> {
        self.abandoned_at
    }

    /// The opaque owner tag the holder attached (the CLI stores host, pid and start time).
    pub fn owner(&self) -> Option<&[u8]> {
        self.owner.as_deref()
    }

    /// Whether the claim was detached from its handle (see
    /// [`Claim::detach`](crate::Claim::detach)) to be resumed later, possibly by another
    /// process.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Whether the lease still protects the holder at `now`. A lease is live strictly before
    /// `lease_until`, so a zero lease is never live.
    pub fn lease_live(&self, now: Timestamp) -> bool {
        now < self.lease_until
    }
}

impl Completed {
    /// When the response was stored.
    pub fn completed_at(&self) -> Timestamp {
        self.completed_at
    }

    /// The stored response.
    pub fn response(&self) -> &[u8] {
        &self.response
    }

    /// The stored response, taken by value without a copy.
    pub fn into_response(self) -> Vec<u8> {
        self.response
    }
}

/// Builds a [`Record`] field by field (see [`Record::builder`]): the instants of its life
/// are named, never a row of look-alike arguments.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `completed` or `in_flight` makes the record"]
pub struct RecordBuilder {
    fingerprint: Fingerprint,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
}

impl RecordBuilder {
    /// When the record stops counting (`None`, the default: kept forever).
    pub fn expires_at(mut self, expires_at: Option<Timestamp>) -> RecordBuilder {
        self.expires_at = expires_at;
        self
    }

    /// A completed record whose `response` was stored at `completed_at`.
    pub fn completed(self, completed_at: Timestamp, response: Vec<u8>) -> Record {
        self.with_state(RecordState::Completed(Completed {
            completed_at,
            response,
        }))
    }

    /// An in-flight record held by `claim` until `lease_until`, with no owner tag, not
    /// abandoned and not detached (see [`Record::with_owner`],
    /// [`Record::with_abandoned_at`], [`Record::with_detached`]).
    pub fn in_flight(self, claim: ClaimId, lease_until: Timestamp) -> Record {
        self.with_state(RecordState::InFlight(InFlight {
            claim,
            lease_until,
            abandoned_at: None,
            owner: None,
            detached: false,
        }))
    }

    fn with_state(self, state: RecordState) -> Record {
        Record {
            fingerprint: self.fingerprint,
            created_at: self.created_at,
            expires_at: self.expires_at,
            attempt: 1,
            state,
        }
    }
}
