//! Exhaustive tests of the pure state machine: every state, every boundary instant, both
//! fingerprints, both policies.

use super::*;

const FP: Fingerprint = Fingerprint::from_bytes([1; 32]);
const OTHER: Fingerprint = Fingerprint::from_bytes([2; 32]);
const HOLDER: ClaimId = ClaimId::from_u128(11);
const NEW: ClaimId = ClaimId::from_u128(22);
/// The opening that decides: the one that minted `HOLDER` and `NEW`.
const THIS: Opening = NEW.opening();
/// An earlier opening of the store.
const EARLIER: Opening = Opening::new(0x5eed);

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// The shapes a stored record can take, relative to `now`.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Absent,
    Completed,
    InFlight {
        lease_until: u64,
        abandoned: bool,
        holder: Holder,
    },
}

/// Who made an in-flight claim, as the deciding opening sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    ThisOpening,
    EarlierOpening,
    EarlierDetached,
}

impl Holder {
    fn claim(self) -> ClaimId {
        match self {
            Holder::ThisOpening => HOLDER,
            Holder::EarlierOpening | Holder::EarlierDetached => EARLIER.claim(11),
        }
    }
}

/// Every shape, with leases at the boundaries around `now` (including the epoch, which is a
/// real, passed instant and never "unset").
fn shapes(now: u64) -> Vec<Shape> {
    let mut out = vec![Shape::Absent, Shape::Completed];
    for lease_until in [0, now.saturating_sub(1), now, now + 1, now + 60_000] {
        for abandoned in [false, true] {
            for holder in [
                Holder::ThisOpening,
                Holder::EarlierOpening,
                Holder::EarlierDetached,
            ] {
                out.push(Shape::InFlight {
                    lease_until,
                    abandoned,
                    holder,
                });
            }
        }
    }
    out
}

fn expiries(now: u64) -> Vec<Option<u64>> {
    vec![
        None,
        Some(0),
        Some(now.saturating_sub(1)),
        Some(now),
        Some(now + 1),
        Some(u64::MAX),
    ]
}

fn build(shape: Shape, fingerprint: Fingerprint, expires_at: Option<u64>) -> Option<Record> {
    let expires_at = expires_at.map(ts);
    match shape {
        Shape::Absent => None,
        Shape::Completed => Some(
            Record::builder(fingerprint, ts(0))
                .expires_at(expires_at)
                .completed(ts(0), b"stored response".to_vec()),
        ),
        Shape::InFlight {
            lease_until,
            abandoned,
            holder,
        } => Some(
            Record::builder(fingerprint, ts(0))
                .expires_at(expires_at)
                .in_flight(holder.claim(), ts(lease_until))
                .with_owner(Some(b"owner".to_vec()))
                .with_abandoned_at(abandoned.then_some(ts(lease_until)))
                .with_detached(holder == Holder::EarlierDetached),
        ),
    }
}

/// The rules of docs/design.md ("What `begin` answers"), written out independently of
/// `decide`.
fn expected(
    shape: Shape,
    same_fingerprint: bool,
    expires_at: Option<u64>,
    policy: RecoveryPolicy,
    now: u64,
) -> Decision {
    // A claim of an earlier opening that was not detached has lost its holder at once.
    let holder_live =
        |lease_until: u64, holder: Holder| now < lease_until && holder != Holder::EarlierOpening;
    // A record is kept at least until its expiry, and an in-flight one also until its lease
    // ends; from that instant on it is absent.
    let keep_until = match (shape, expires_at) {
        (_, None) => u64::MAX,
        (Shape::InFlight { lease_until, .. }, Some(e)) => e.max(lease_until),
        (_, Some(e)) => e,
    };
    let forever = expires_at.is_none();
    let present = !matches!(shape, Shape::Absent) && (forever || now < keep_until);
    if !present {
        return Decision::Execute { recovery: false };
    }
    if !same_fingerprint {
        return Decision::Conflict;
    }
    match shape {
        Shape::Completed => Decision::Replay,
        Shape::InFlight {
            lease_until,
            holder,
            ..
        } if holder_live(lease_until, holder) => Decision::InProgress {
            retry_after: Duration::from_millis(lease_until - now),
        },
        Shape::InFlight { .. } if policy == RecoveryPolicy::Strict => Decision::Abandoned,
        Shape::InFlight { .. } => Decision::Execute { recovery: true },
        Shape::Absent => Decision::Execute { recovery: false },
    }
}

#[test]
fn decide_matches_the_rules_in_every_case() {
    let mut cases = 0;
    for now in [0u64, 1, 1_000, 1_700_000_000_000] {
        for shape in shapes(now) {
            for expires_at in expiries(now) {
                for same in [true, false] {
                    for policy in [RecoveryPolicy::TakeOver, RecoveryPolicy::Strict] {
                        let record = build(shape, FP, expires_at);
                        let asked = if same { FP } else { OTHER };
                        let got = decide(record.as_ref(), &asked, policy, THIS, ts(now));
                        let want = expected(shape, same, expires_at, policy, now);
                        assert_eq!(
                            got, want,
                            "shape {shape:?} expires {expires_at:?} same {same} {policy:?} now {now}"
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 4 * 32 * 6 * 2 * 2);
}

#[test]
fn transition_agrees_with_decide_for_every_claim() {
    for now in [0u64, 5, 1_700_000_000_000] {
        for shape in shapes(now) {
            for expires_at in expiries(now) {
                for same in [true, false] {
                    for policy in [RecoveryPolicy::TakeOver, RecoveryPolicy::Strict] {
                        let record = build(shape, FP, expires_at);
                        let asked = if same { FP } else { OTHER };
                        let decision = decide(record.as_ref(), &asked, policy, THIS, ts(now));
                        let spec = ClaimSpec::new(asked, NEW)
                            .lease(Duration::from_secs(30))
                            .recovery(policy)
                            .owner(Some(b"me".to_vec()));
                        let t = transition(record.clone(), Operation::Claim(spec), ts(now));
                        let holder = match shape {
                            Shape::InFlight { holder, .. } => holder.claim(),
                            _ => HOLDER,
                        };
                        check_claim_transition(record, decision, t, asked, holder, now);
                    }
                }
            }
        }
    }
}

fn check_claim_transition(
    before: Option<Record>,
    decision: Decision,
    t: Transition,
    asked: Fingerprint,
    holder: ClaimId,
    now: u64,
) {
    let context = format!("{before:?} {decision:?}");
    match (decision, t.outcome) {
        (Decision::Execute { recovery }, Outcome::Execute(e)) => {
            let Change::Put(new) = t.change else {
                panic!("execute must store the claim: {context}")
            };
            assert_eq!(e.claim, NEW);
            assert_eq!(new.in_flight().map(|f| f.claim), Some(NEW), "{context}");
            assert_eq!(
                new.in_flight().map(|f| f.lease_until),
                Some(ts(now + 30_000))
            );
            assert_eq!(
                new.in_flight().and_then(|f| f.owner.clone()),
                Some(b"me".to_vec())
            );
            assert!(!new.is_expired(ts(now)), "a fresh claim is live: {context}");
            assert_eq!(e.recovery.is_some(), recovery, "{context}");
            if recovery {
                let old = before.expect("recovery needs a record");
                assert_eq!(
                    new.created_at, old.created_at,
                    "retention counts from the first claim"
                );
                assert_eq!(new.expires_at, old.expires_at);
                assert_eq!(new.attempt, old.attempt + 1);
                let r = e.recovery.expect("a recovery");
                assert_eq!(r.previous_claim, holder);
                assert!(r.lease_ended_at <= ts(now), "{context}");
            } else {
                assert_eq!(new.created_at, ts(now));
                assert_eq!(new.expires_at, Some(ts(now + 24 * 3600 * 1000)));
                assert_eq!(new.attempt, 1);
                assert_eq!(new.fingerprint, asked);
            }
        }
        (Decision::Replay, Outcome::Replay(r)) => {
            assert_eq!(t.change, Change::Keep);
            assert_eq!(r.response, b"stored response");
        }
        (Decision::Conflict, Outcome::Conflict(c)) => {
            assert_eq!(t.change, Change::Keep);
            let kind = before.expect("conflict needs a record").kind(ts(now));
            assert_eq!(c.state, kind);
        }
        (Decision::InProgress { retry_after }, Outcome::InProgress(p)) => {
            assert_eq!(t.change, Change::Keep);
            assert_eq!(p.retry_after, retry_after);
            assert_eq!(p.claim, holder);
            assert_eq!(p.owner, Some(b"owner".to_vec()));
        }
        (Decision::Abandoned, Outcome::Abandoned(a)) => {
            assert_eq!(t.change, Change::Keep);
            assert_eq!(a.claim, holder);
            assert!(a.since <= ts(now), "{context}");
        }
        (d, o) => panic!("decision {d:?} reported as {o:?}: {context}"),
    }
}

#[test]
fn claim_ops_require_the_holding_claim() {
    let now = 1_000;
    let ops = |claim: ClaimId| {
        vec![
            Operation::Complete {
                claim,
                response: b"r".to_vec(),
            },
            Operation::Release { claim },
            Operation::Abandon { claim },
            Operation::ExtendLease {
                claim,
                lease: Duration::from_secs(5),
            },
            Operation::Detach { claim },
        ]
    };
    for shape in shapes(now) {
        let holder = match shape {
            Shape::InFlight { holder, .. } => holder.claim(),
            _ => HOLDER,
        };
        for expires_at in expiries(now) {
            for claim in [holder, NEW] {
                for op in ops(claim) {
                    let before = build(shape, FP, expires_at);
                    let t = transition(before.clone(), op.clone(), ts(now));
                    let holds = matches!(shape, Shape::InFlight { .. }) && claim == holder;
                    if !holds {
                        let reason = match shape {
                            Shape::Absent => ClaimLostReason::Missing,
                            Shape::Completed => ClaimLostReason::Completed,
                            Shape::InFlight { .. } => ClaimLostReason::TakenOver,
                        };
                        assert_eq!(t.change, Change::Keep, "{op:?} on {shape:?}");
                        assert_eq!(t.outcome, Outcome::ClaimLost(reason), "{op:?} on {shape:?}");
                        continue;
                    }
                    let old = before.expect("held");
                    match (op, t.change, t.outcome) {
                        (
                            Operation::Complete { .. },
                            Change::Put(new),
                            Outcome::Completed {
                                completed_at,
                                expires_at: e,
                            },
                        ) => {
                            assert_eq!(new.response(), Some(&b"r"[..]));
                            assert_eq!(completed_at, ts(now));
                            // The record lives at least the retention (here its expiry:
                            // created at 0) from the completion.
                            assert_eq!(
                                e,
                                old.expires_at
                                    .map(|x| ts(x.as_millis().saturating_add(now)))
                            );
                            assert_eq!(new.expires_at, e);
                            // Never stored expired, unless its retention is zero (only an
                            // import can make such a record).
                            if old.expires_at != Some(ts(0)) {
                                assert!(!new.is_expired(ts(now)), "never stored expired");
                            }
                            assert_eq!(
                                (new.created_at, new.attempt, new.fingerprint),
                                (old.created_at, old.attempt, old.fingerprint)
                            );
                        }
                        (Operation::Release { .. }, Change::Delete, Outcome::Released) => {}
                        (Operation::Abandon { .. }, Change::Put(new), Outcome::AbandonRecorded) => {
                            let f = new.in_flight().expect("still in flight");
                            assert!(!f.lease_live(ts(now)), "abandon ends the lease at once");
                            assert_eq!(f.abandoned_at, Some(ts(now)));
                            assert_eq!(f.claim, holder);
                            assert_eq!(f.owner, Some(b"owner".to_vec()));
                            assert_eq!(new.expires_at, old.expires_at);
                        }
                        (Operation::Detach { .. }, Change::Put(new), Outcome::Detached) => {
                            let f = new.in_flight().expect("still in flight");
                            assert!(f.detached);
                            let RecordState::InFlight(was) = &old.state else {
                                panic!("held")
                            };
                            assert_eq!(f.lease_until, was.lease_until);
                            assert_eq!(f.owner, was.owner);
                            assert_eq!(new.expires_at, old.expires_at);
                        }
                        (
                            Operation::ExtendLease { .. },
                            Change::Put(new),
                            Outcome::LeaseExtended { lease_until },
                        ) => {
                            assert_eq!(lease_until, ts(now + 5_000));
                            let f = new.in_flight().expect("still in flight");
                            assert_eq!(f.lease_until, lease_until);
                            assert_eq!(f.abandoned_at, None);
                        }
                        (op, change, outcome) => panic!("{op:?} gave {change:?} {outcome:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn sweep_deletes_only_expired_records_still_indexed_at_the_instant() {
    let now = 1_000;
    for shape in shapes(now) {
        for expires_at in expiries(now) {
            let before = build(shape, FP, expires_at);
            let indexed_at = before.as_ref().and_then(Record::sweep_at);
            for probe in [indexed_at, Some(ts(now - 1)), Some(ts(0))]
                .into_iter()
                .flatten()
            {
                let t = transition(
                    before.clone(),
                    Operation::Sweep { sweep_at: probe },
                    ts(now),
                );
                let due = before
                    .as_ref()
                    .is_some_and(|r| r.is_expired(ts(now)) && r.sweep_at() == Some(probe));
                assert_eq!(t.outcome, Outcome::Swept { deleted: due });
                assert_eq!(
                    t.change == Change::Delete,
                    due,
                    "{shape:?} {expires_at:?} {probe:?}"
                );
            }
        }
    }
}

#[test]
fn a_record_reclaimed_after_its_index_entry_was_read_is_not_swept() {
    // The sweeper read (expires_at = 100, key). Then the key expired and was claimed anew.
    let old = build(Shape::Completed, FP, Some(100)).expect("record");
    let reclaim = transition(
        Some(old.clone()),
        Operation::Claim(ClaimSpec::new(FP, NEW)),
        ts(150),
    );
    let Change::Put(fresh) = reclaim.change else {
        panic!("expired key is claimed anew")
    };
    let t = transition(Some(fresh), Operation::Sweep { sweep_at: ts(100) }, ts(200));
    assert_eq!(t.change, Change::Keep);
    assert_eq!(t.outcome, Outcome::Swept { deleted: false });
    // while the old record itself would have been swept
    let t = transition(Some(old), Operation::Sweep { sweep_at: ts(100) }, ts(200));
    assert_eq!(t.change, Change::Delete);
}

#[test]
fn delete_and_import() {
    let now = 1_000;
    for shape in shapes(now) {
        for expires_at in expiries(now) {
            let before = build(shape, FP, expires_at);
            let live = before.as_ref().is_some_and(|r| !r.is_expired(ts(now)));
            let t = transition(before.clone(), Operation::Delete, ts(now));
            assert_eq!(t.outcome, Outcome::Deleted { existed: live });
            assert_eq!(t.change == Change::Delete, before.is_some());

            let incoming = build(Shape::Completed, OTHER, Some(5_000)).expect("record");
            for overwrite in [false, true] {
                let t = transition(
                    before.clone(),
                    Operation::Import {
                        record: incoming.clone(),
                        overwrite,
                    },
                    ts(now),
                );
                let written = overwrite || !live;
                assert_eq!(t.outcome, Outcome::Imported { written });
                assert_eq!(t.change == Change::Put(incoming.clone()), written);
            }
        }
    }
}

#[test]
fn forever_records_never_expire_and_have_no_sweep_instant() {
    let spec = ClaimSpec::new(FP, NEW).retention(None);
    let t = transition(None, Operation::Claim(spec), ts(0));
    let Change::Put(r) = t.change else {
        panic!("claimed")
    };
    assert_eq!(r.expires_at, None);
    assert_eq!(r.sweep_at(), None);
    assert!(!r.is_expired(ts(u64::MAX)));
}

#[test]
fn a_live_lease_keeps_an_in_flight_record_past_its_retention() {
    let spec = ClaimSpec::new(FP, NEW)
        .retention(Some(Duration::from_secs(1)))
        .lease(Duration::from_secs(60));
    let Change::Put(r) = transition(None, Operation::Claim(spec), ts(0)).change else {
        panic!("claimed")
    };
    assert_eq!(r.sweep_at(), Some(ts(60_000)));
    let d = decide(Some(&r), &FP, RecoveryPolicy::TakeOver, THIS, ts(30_000));
    assert!(matches!(d, Decision::InProgress { .. }));
    assert_eq!(
        decide(Some(&r), &FP, RecoveryPolicy::TakeOver, THIS, ts(60_000)),
        Decision::Execute { recovery: false }
    );
}

#[test]
fn zero_lease_is_abandoned_at_once() {
    let spec = ClaimSpec::new(FP, NEW).lease(Duration::ZERO);
    let Change::Put(r) = transition(None, Operation::Claim(spec), ts(500)).change else {
        panic!("claimed")
    };
    assert_eq!(
        decide(Some(&r), &FP, RecoveryPolicy::Strict, THIS, ts(500)),
        Decision::Abandoned
    );
    assert_eq!(
        decide(Some(&r), &FP, RecoveryPolicy::TakeOver, THIS, ts(500)),
        Decision::Execute { recovery: true }
    );
}

#[test]
fn clock_jumps_never_panic_and_follow_absolute_instants() {
    let spec = ClaimSpec::new(FP, NEW).lease(Duration::from_secs(10));
    let Change::Put(r) = transition(None, Operation::Claim(spec), ts(1_000_000)).change else {
        panic!("claimed")
    };
    // far backwards: the lease appears longer, the record stays live
    assert_eq!(
        decide(Some(&r), &FP, RecoveryPolicy::TakeOver, THIS, ts(0)),
        Decision::InProgress {
            retry_after: Duration::from_millis(1_010_000)
        }
    );
    // far forwards: everything has expired
    assert_eq!(
        decide(Some(&r), &FP, RecoveryPolicy::TakeOver, THIS, ts(u64::MAX)),
        Decision::Execute { recovery: false }
    );
    // saturating arithmetic at the end of time
    let spec = ClaimSpec::new(FP, NEW)
        .lease(Duration::MAX)
        .retention(Some(Duration::MAX));
    let t = transition(None, Operation::Claim(spec), ts(u64::MAX - 1));
    assert!(matches!(t.outcome, Outcome::Execute(ref e) if e.lease_until == ts(u64::MAX)));
}

/// Only one process holds the store: a claim an earlier opening made and never detached
/// has lost its holder as soon as the store is reopened, live lease or not. A detached one
/// keeps its lease.
#[test]
fn a_claim_of_an_earlier_opening_has_no_holder_unless_detached() {
    let earlier = ClaimSpec::new(FP, EARLIER.claim(1)).lease(Duration::from_secs(60));
    let Change::Put(held) = transition(None, Operation::Claim(earlier), ts(1_000)).change else {
        panic!("claimed")
    };
    let at = ts(2_000);
    assert!(matches!(
        decide(Some(&held), &FP, RecoveryPolicy::TakeOver, EARLIER, at),
        Decision::InProgress { .. }
    ));
    assert_eq!(
        decide(Some(&held), &FP, RecoveryPolicy::TakeOver, THIS, at),
        Decision::Execute { recovery: true }
    );
    assert_eq!(
        decide(Some(&held), &FP, RecoveryPolicy::Strict, THIS, at),
        Decision::Abandoned
    );
    let retry = ClaimSpec::new(FP, NEW);
    let Outcome::Execute(e) = transition(Some(held.clone()), Operation::Claim(retry), at).outcome
    else {
        panic!("the retry executes")
    };
    let recovery = e.recovery.expect("flagged as a recovery");
    assert_eq!(recovery.previous_claim, EARLIER.claim(1));
    assert_eq!(
        recovery.lease_ended_at, at,
        "found gone now, before its lease ended"
    );
    assert_eq!(e.attempt, 2);

    let detach = Operation::Detach {
        claim: EARLIER.claim(1),
    };
    let Change::Put(detached) = transition(Some(held), detach, at).change else {
        panic!("detached")
    };
    assert_eq!(
        decide(Some(&detached), &FP, RecoveryPolicy::TakeOver, THIS, at),
        Decision::InProgress {
            retry_after: Duration::from_secs(59)
        }
    );
    assert_eq!(
        decide(
            Some(&detached),
            &FP,
            RecoveryPolicy::TakeOver,
            THIS,
            ts(61_000)
        ),
        Decision::Execute { recovery: true }
    );
}

/// Completing late in a long lease, after the retention has run out, stores a record that
/// lives the retention from the completion (it used to be stored already expired).
#[test]
fn a_late_completion_is_never_stored_expired() {
    let spec = ClaimSpec::new(FP, NEW)
        .retention(Some(Duration::from_secs(1)))
        .lease(Duration::from_secs(60));
    let Change::Put(held) = transition(None, Operation::Claim(spec), ts(0)).change else {
        panic!("claimed")
    };
    let complete = Operation::Complete {
        claim: NEW,
        response: b"r".to_vec(),
    };
    let t = transition(Some(held), complete, ts(30_000));
    assert_eq!(
        t.outcome,
        Outcome::Completed {
            completed_at: ts(30_000),
            expires_at: Some(ts(31_000)),
        }
    );
    let Change::Put(done) = t.change else {
        panic!("stored")
    };
    assert_eq!(
        decide(Some(&done), &FP, RecoveryPolicy::TakeOver, THIS, ts(30_999)),
        Decision::Replay
    );
    assert!(done.is_expired(ts(31_000)));
}
