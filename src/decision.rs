//! The state machine, as pure functions.
//!
//! `decide` answers a `begin`: given what is stored for a key (if anything), the request's
//! fingerprint and the time, what happens. [`transition`] extends it to every operation a
//! storage engine applies (claim, complete, release, abandon, extend, delete, sweep,
//! import), returning the change to store and the outcome to report.
//!
//! Neither touches storage, threads or clocks, so they are tested exhaustively on their own,
//! and every storage engine (the redb one here, a distributed one later) applies exactly the
//! same rules: read the record, call [`transition`], write the change atomically with the
//! read.
//!
//! | found | answer |
//! | --- | --- |
//! | nothing, or an expired record | [`Decision::Execute`] (fresh) |
//! | any state, different fingerprint | [`Decision::Conflict`] |
//! | completed, same fingerprint | [`Decision::Replay`] |
//! | in flight, holder live, same fingerprint | [`Decision::InProgress`] |
//! | in flight, holder gone, same fingerprint | [`RecoveryPolicy::TakeOver`]: [`Decision::Execute`] flagged as a recovery; [`RecoveryPolicy::Strict`]: [`Decision::Abandoned`] |
//!
//! A holder is live while its lease is, as long as it claimed the key in this opening of
//! the store or detached its claim (`holder_live`). Only one process holds the store, so
//! a claim made by an earlier opening and never detached has lost its holder: that process
//! closed the store or died.

use std::time::Duration;

use crate::error::ClaimLostReason;
use crate::fingerprint::Fingerprint;
use crate::record::{ClaimId, Completed, InFlight, Opening, Record, RecordState, StateKind};
use crate::time::Timestamp;

/// What happens to a key whose holder's lease ended (it crashed, or dropped its claim)
/// without completing or releasing: the request may or may not have run, partly or fully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryPolicy {
    /// The next request with the same fingerprint executes again, told that it is a
    /// recovery so it can check for a partial earlier attempt. At-least-once for crashes,
    /// at-most-once otherwise. The default, as in most idempotency libraries.
    #[default]
    TakeOver,
    /// Strict at-most-once: the key reports [`Begin::Abandoned`](crate::Begin::Abandoned)
    /// until it expires or an operator deletes it.
    Strict,
}

/// The answer to a `begin`, as a pure decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Claim the key and execute. `recovery` is true when taking over an abandoned claim.
    Execute {
        /// Whether an earlier attempt may have run (partly).
        recovery: bool,
    },
    /// The request already completed: return its stored response, do not execute.
    Replay,
    /// The key belongs to a different request.
    Conflict,
    /// Another caller holds the key and its lease is live.
    InProgress {
        /// How long until its lease ends.
        retry_after: Duration,
    },
    /// The holder's lease ended without an outcome and the policy is strict.
    Abandoned,
}

/// Whether the holder of `flight` may still end its claim at `now`, as the opening
/// `opening` of the store sees it: its lease is live, and it claimed the key in this
/// opening or detached the claim (a detached claim is judged by its lease and, by a
/// supervisor such as the CLI, by its owner tag). A claim an earlier opening made and never
/// detached has no holder any more: the one process that holds the store is this one.
pub(crate) fn holder_live(flight: &InFlight, opening: Opening, now: Timestamp) -> bool {
    flight.lease_live(now) && (flight.detached || flight.claim.opening() == opening)
}

/// When the holder of a claim that [`holder_live`] finds gone let go: the end of its lease,
/// or, for a claim of an earlier opening found before its lease ended, `now`.
fn holder_gone_since(flight: &InFlight, now: Timestamp) -> Timestamp {
    flight.lease_until.min(now)
}

/// Decides a `begin` for a request with `fingerprint` at `now`, by the opening `opening` of
/// the store, given the stored record.
///
/// An expired record counts as absent, whatever the sweeper has done.
pub(crate) fn decide(
    existing: Option<&Record>,
    fingerprint: &Fingerprint,
    policy: RecoveryPolicy,
    opening: Opening,
    now: Timestamp,
) -> Decision {
    let Some(record) = existing.filter(|r| !r.is_expired(now)) else {
        return Decision::Execute { recovery: false };
    };
    if record.fingerprint != *fingerprint {
        return Decision::Conflict;
    }
    match &record.state {
        RecordState::Completed(_) => Decision::Replay,
        RecordState::InFlight(f) if holder_live(f, opening, now) => Decision::InProgress {
            retry_after: f.lease_until.saturating_duration_since(now),
        },
        RecordState::InFlight(_) => match policy {
            RecoveryPolicy::TakeOver => Decision::Execute { recovery: true },
            RecoveryPolicy::Strict => Decision::Abandoned,
        },
    }
}

/// How to claim a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimSpec {
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
    /// The id the new claim will carry.
    pub claim: ClaimId,
    /// How long the claim holds the key before others may treat it as abandoned.
    pub lease: Duration,
    /// How long the record counts, from the first claim; `None` keeps it forever.
    pub retention: Option<Duration>,
    /// What to do with an abandoned claim.
    pub recovery: RecoveryPolicy,
    /// An opaque tag naming the holder, stored with the claim.
    pub owner: Option<Vec<u8>>,
    /// The opening of the store that claims (see [`holder_live`]).
    pub(crate) opening: Opening,
}

impl ClaimSpec {
    /// A claim with the given fingerprint and id, a 60 s lease, a 24 h retention and the
    /// default recovery policy, by the opening that minted `claim`.
    pub fn new(fingerprint: Fingerprint, claim: ClaimId) -> ClaimSpec {
        ClaimSpec {
            fingerprint,
            claim,
            lease: Duration::from_secs(60),
            retention: Some(Duration::from_secs(24 * 3600)),
            recovery: RecoveryPolicy::TakeOver,
            owner: None,
            opening: claim.opening(),
        }
    }

    /// Sets the opening of the store that claims.
    pub(crate) fn opened_by(mut self, opening: Opening) -> ClaimSpec {
        self.opening = opening;
        self
    }

    /// Sets the lease.
    pub fn lease(mut self, lease: Duration) -> ClaimSpec {
        self.lease = lease;
        self
    }

    /// Sets the retention (`None`: forever).
    pub fn retention(mut self, retention: Option<Duration>) -> ClaimSpec {
        self.retention = retention;
        self
    }

    /// Sets the recovery policy.
    pub fn recovery(mut self, recovery: RecoveryPolicy) -> ClaimSpec {
        self.recovery = recovery;
        self
    }

    /// Sets the owner tag.
    pub fn owner(mut self, owner: Option<Vec<u8>>) -> ClaimSpec {
        self.owner = owner;
        self
    }
}

/// One operation on one key, as a storage engine applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `begin`: decide, and claim if the decision is to execute.
    Claim(ClaimSpec),
    /// Store the response of a claim.
    Complete {
        /// The claim completing.
        claim: ClaimId,
        /// The response to store.
        response: Vec<u8>,
    },
    /// The claim's operation did not happen: free the key.
    Release {
        /// The claim releasing.
        claim: ClaimId,
    },
    /// The claim's outcome is unknown: end its lease now.
    Abandon {
        /// The claim abandoned.
        claim: ClaimId,
    },
    /// The claim's handle lets go without an outcome, to be resumed later (possibly by
    /// another process): mark it detached, so a later opening leaves it to its lease.
    Detach {
        /// The claim detached.
        claim: ClaimId,
    },
    /// Set the claim's lease to end `lease` from now.
    ExtendLease {
        /// The claim extending.
        claim: ClaimId,
        /// The new lease, counted from now.
        lease: Duration,
    },
    /// Remove the record, whatever its state.
    Delete,
    /// Remove the record if it is expired and still the one indexed at `sweep_at`.
    Sweep {
        /// The expiry-index instant the sweeper found the key under.
        sweep_at: Timestamp,
    },
    /// Store a record as given (restoring an export).
    Import {
        /// The record.
        record: Record,
        /// Whether to replace a live record.
        overwrite: bool,
    },
}

/// What to do to the stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Leave it as it is.
    Keep,
    /// Store this record.
    Put(Record),
    /// Remove the record.
    Delete,
}

/// The result of [`transition`]: a change to store atomically, and what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The change.
    pub change: Change,
    /// The outcome.
    pub outcome: Outcome,
}

/// What an operation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A claim: execute.
    Execute(Execution),
    /// A claim: replay the stored response.
    Replay(Replay),
    /// A claim: the key belongs to a different request.
    Conflict(Conflict),
    /// A claim: another caller holds the key.
    InProgress(InProgress),
    /// A claim: the holder vanished and the policy is strict.
    Abandoned(Abandoned),
    /// A complete: the response is stored.
    Completed {
        /// When it was stored.
        completed_at: Timestamp,
        /// When the record expires.
        expires_at: Option<Timestamp>,
    },
    /// A release: the key is free.
    Released,
    /// An abandon: the lease has ended.
    AbandonRecorded,
    /// A detach: the claim is marked detached.
    Detached,
    /// An extension: the new end of the lease.
    LeaseExtended {
        /// The new end of the lease.
        lease_until: Timestamp,
    },
    /// A delete: whether a live record was there.
    Deleted {
        /// Whether a live (unexpired) record was removed.
        existed: bool,
    },
    /// A sweep: whether the record was removed.
    Swept {
        /// Whether it was removed.
        deleted: bool,
    },
    /// An import: whether the record was written.
    Imported {
        /// False when a live record was kept because `overwrite` was off.
        written: bool,
    },
    /// A complete, release, abandon or extension whose claim no longer holds the key.
    ClaimLost(ClaimLostReason),
}

/// A successful claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Execution {
    /// The new claim's id.
    pub claim: ClaimId,
    /// 1 for the first execution, more after recoveries.
    pub attempt: u32,
    /// When the key was first claimed.
    pub created_at: Timestamp,
    /// When the record expires (`None`: never).
    pub expires_at: Option<Timestamp>,
    /// When the lease ends unless extended.
    pub lease_until: Timestamp,
    /// Present when this execution takes over an abandoned claim.
    pub recovery: Option<Recovery>,
}

/// Details of an abandoned claim being taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The claim that vanished.
    pub previous_claim: ClaimId,
    /// When its lease ended; for a claim made before the store was last opened (and not
    /// detached), the instant this opening found it, if that came first.
    pub lease_ended_at: Timestamp,
    /// When it was explicitly abandoned (dropped), if it was.
    pub abandoned_at: Option<Timestamp>,
    /// Its owner tag.
    pub previous_owner: Option<Vec<u8>>,
}

/// A stored response to return instead of executing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replay {
    /// The response bytes, exactly as completed.
    pub response: Vec<u8>,
    /// When the key was first claimed.
    pub created_at: Timestamp,
    /// When the response was stored.
    pub completed_at: Timestamp,
    /// When the record expires (`None`: never).
    pub expires_at: Option<Timestamp>,
    /// How many executions it took.
    pub attempt: u32,
}

/// The key belongs to another request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conflict {
    /// The state of the record that holds the key.
    pub state: StateKind,
    /// When that record was created.
    pub created_at: Timestamp,
    /// When it expires (`None`: never).
    pub expires_at: Option<Timestamp>,
}

/// Another caller holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InProgress {
    /// How long until the holder's lease ends: a hint for `Retry-After`.
    pub retry_after: Duration,
    /// When the lease ends.
    pub lease_until: Timestamp,
    /// The holder's claim.
    pub claim: ClaimId,
    /// The holder's owner tag.
    pub owner: Option<Vec<u8>>,
}

/// The holder vanished; under [`RecoveryPolicy::Strict`] the key stays blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Abandoned {
    /// When the holder's lease ended; for a claim made before the store was last opened
    /// (and not detached), the instant this opening found it, if that came first.
    pub since: Timestamp,
    /// The vanished claim.
    pub claim: ClaimId,
    /// How many executions were attempted.
    pub attempt: u32,
    /// Its owner tag.
    pub owner: Option<Vec<u8>>,
    /// When the record expires (`None`: never).
    pub expires_at: Option<Timestamp>,
}

/// Applies `operation` to the stored record at `now`.
///
/// `current` is the record as stored, expired or not; expiry is judged here.
pub fn transition(current: Option<Record>, operation: Operation, now: Timestamp) -> Transition {
    match operation {
        Operation::Claim(spec) => claim(current, spec, now),
        Operation::Complete { claim, response } => with_claim(current, claim, |head, _| {
            let head = Head {
                expires_at: expiry_after_completion(&head, now),
                ..head
            };
            let outcome = Outcome::Completed {
                completed_at: now,
                expires_at: head.expires_at,
            };
            let state = RecordState::Completed(Completed {
                completed_at: now,
                response,
            });
            put(head.with_state(state), outcome)
        }),
        Operation::Release { claim } => with_claim(current, claim, |_, _| Transition {
            change: Change::Delete,
            outcome: Outcome::Released,
        }),
        Operation::Abandon { claim } => with_claim(current, claim, |head, flight| {
            let flight = InFlight {
                lease_until: flight.lease_until.min(now),
                abandoned_at: Some(now),
                ..flight
            };
            put(
                head.with_state(RecordState::InFlight(flight)),
                Outcome::AbandonRecorded,
            )
        }),
        Operation::Detach { claim } => with_claim(current, claim, |head, flight| {
            let flight = InFlight {
                detached: true,
                ..flight
            };
            put(
                head.with_state(RecordState::InFlight(flight)),
                Outcome::Detached,
            )
        }),
        Operation::ExtendLease { claim, lease } => with_claim(current, claim, |head, flight| {
            let lease_until = now.saturating_add(lease);
            let flight = InFlight {
                lease_until,
                abandoned_at: None,
                ..flight
            };
            put(
                head.with_state(RecordState::InFlight(flight)),
                Outcome::LeaseExtended { lease_until },
            )
        }),
        Operation::Delete => Transition {
            outcome: Outcome::Deleted {
                existed: current.as_ref().is_some_and(|r| !r.is_expired(now)),
            },
            change: if current.is_some() {
                Change::Delete
            } else {
                Change::Keep
            },
        },
        Operation::Sweep { sweep_at } => {
            let due = current
                .as_ref()
                .is_some_and(|r| r.sweep_at() == Some(sweep_at) && r.is_expired(now));
            Transition {
                change: if due { Change::Delete } else { Change::Keep },
                outcome: Outcome::Swept { deleted: due },
            }
        }
        Operation::Import { record, overwrite } => {
            let live = current.as_ref().is_some_and(|r| !r.is_expired(now));
            if live && !overwrite {
                keep(Outcome::Imported { written: false })
            } else {
                put(record, Outcome::Imported { written: true })
            }
        }
    }
}

/// When a record completed at `now` expires: the later of the first claim's expiry and
/// `now` plus the retention (the span from the first claim to that expiry). A completion
/// late in a long lease is thus never stored already expired, and every stored response
/// is replayed for at least the retention after it was stored.
fn expiry_after_completion(head: &Head, now: Timestamp) -> Option<Timestamp> {
    let expires_at = head.expires_at?;
    let retention = expires_at.saturating_duration_since(head.created_at);
    Some(expires_at.max(now.saturating_add(retention)))
}

fn keep(outcome: Outcome) -> Transition {
    Transition {
        change: Change::Keep,
        outcome,
    }
}

fn put(record: Record, outcome: Outcome) -> Transition {
    Transition {
        change: Change::Put(record),
        outcome,
    }
}

/// A record without its state, for transitions that replace the state.
struct Head {
    fingerprint: Fingerprint,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    attempt: u32,
}

impl Head {
    fn with_state(self, state: RecordState) -> Record {
        Record {
            fingerprint: self.fingerprint,
            created_at: self.created_at,
            expires_at: self.expires_at,
            attempt: self.attempt,
            state,
        }
    }
}

fn claim(current: Option<Record>, spec: ClaimSpec, now: Timestamp) -> Transition {
    let live = current.filter(|r| !r.is_expired(now));
    let decision = decide(
        live.as_ref(),
        &spec.fingerprint,
        spec.recovery,
        spec.opening,
        now,
    );
    let lease_until = now.saturating_add(spec.lease);
    let new_flight = InFlight {
        claim: spec.claim,
        lease_until,
        abandoned_at: None,
        owner: spec.owner,
        detached: false,
    };
    let (record, recovery) = match (decision, live) {
        (
            Decision::Execute { .. },
            Some(Record {
                fingerprint,
                created_at,
                expires_at,
                attempt,
                state: RecordState::InFlight(previous),
            }),
        ) => {
            // Taking over keeps the first claim's creation and expiry: retention counts
            // from the first claim, not from the recovery.
            let head = Head {
                fingerprint,
                created_at,
                expires_at,
                attempt: attempt.saturating_add(1),
            };
            let recovery = Recovery {
                previous_claim: previous.claim,
                lease_ended_at: holder_gone_since(&previous, now),
                abandoned_at: previous.abandoned_at,
                previous_owner: previous.owner,
            };
            (
                head.with_state(RecordState::InFlight(new_flight)),
                Some(recovery),
            )
        }
        (Decision::Execute { .. }, _) | (_, None) => {
            let head = Head {
                fingerprint: spec.fingerprint,
                created_at: now,
                expires_at: spec.retention.map(|d| now.saturating_add(d)),
                attempt: 1,
            };
            (head.with_state(RecordState::InFlight(new_flight)), None)
        }
        (decision, Some(record)) => return keep(answer_without_claim(decision, record, now)),
    };
    let outcome = Outcome::Execute(Execution {
        claim: spec.claim,
        attempt: record.attempt,
        created_at: record.created_at,
        expires_at: record.expires_at,
        lease_until,
        recovery,
    });
    put(record, outcome)
}

fn answer_without_claim(decision: Decision, record: Record, now: Timestamp) -> Outcome {
    let kind = record.kind(now);
    let Record {
        created_at,
        expires_at,
        attempt,
        state,
        ..
    } = record;
    match (decision, state) {
        (Decision::Replay, RecordState::Completed(c)) => Outcome::Replay(Replay {
            response: c.response,
            created_at,
            completed_at: c.completed_at,
            expires_at,
            attempt,
        }),
        (Decision::InProgress { retry_after }, RecordState::InFlight(f)) => {
            Outcome::InProgress(InProgress {
                retry_after,
                lease_until: f.lease_until,
                claim: f.claim,
                owner: f.owner,
            })
        }
        (Decision::Abandoned, RecordState::InFlight(f)) => Outcome::Abandoned(Abandoned {
            since: holder_gone_since(&f, now),
            claim: f.claim,
            attempt,
            owner: f.owner,
            expires_at,
        }),
        _ => Outcome::Conflict(Conflict {
            state: kind,
            created_at,
            expires_at,
        }),
    }
}

/// Runs `apply` when `current` is in flight under `claim`, else reports why the claim lost.
fn with_claim(
    current: Option<Record>,
    claim: ClaimId,
    apply: impl FnOnce(Head, InFlight) -> Transition,
) -> Transition {
    match current {
        None => keep(Outcome::ClaimLost(ClaimLostReason::Missing)),
        Some(Record {
            fingerprint,
            created_at,
            expires_at,
            attempt,
            state: RecordState::InFlight(flight),
        }) if flight.claim == claim => apply(
            Head {
                fingerprint,
                created_at,
                expires_at,
                attempt,
            },
            flight,
        ),
        Some(Record {
            state: RecordState::InFlight(_),
            ..
        }) => keep(Outcome::ClaimLost(ClaimLostReason::TakenOver)),
        Some(_) => keep(Outcome::ClaimLost(ClaimLostReason::Completed)),
    }
}

#[cfg(test)]
mod tests;
