//! Every row of the state machine, through the public API.

mod common;

use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::{
    Begin, BeginOptions, ClaimLostReason, Clock, Error, RecordState, RecoveryPolicy, StateKind,
};

#[test]
fn fresh_key_executes_and_the_claim_is_stored_in_flight() {
    let t = TestStore::new();
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    assert_eq!(claim.attempt(), 1);
    assert!(!claim.is_recovery());
    assert_eq!(
        claim.lease_until(),
        common::T0.saturating_add(Duration::from_secs(60))
    );
    assert_eq!(
        claim.expires_at(),
        Some(common::T0.saturating_add(Duration::from_secs(24 * 3600)))
    );
    let record = t.store.get("s", "k").expect("get").expect("stored");
    assert_eq!(record.kind(t.clock.now()), StateKind::InFlight);
    assert_eq!(record.fingerprint(), fp("a"));
    claim.complete(b"done").expect("complete");
}

#[test]
fn completed_key_replays_the_exact_response() {
    let t = TestStore::new();
    let response: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .complete(&response)
        .expect("complete");
    for _ in 0..3 {
        assert_eq!(
            replay(t.store.begin("s", "k", fp("a")).expect("begin")),
            response
        );
    }
    let stats = t.store.stats();
    assert_eq!((stats.executes, stats.replays, stats.completes), (1, 3, 1));
}

#[test]
fn empty_response_is_a_real_response() {
    let t = TestStore::new();
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .complete(b"")
        .expect("complete");
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b""
    );
}

#[test]
fn different_fingerprint_conflicts_in_every_state() {
    let t = TestStore::new();
    // in flight
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    match t.store.begin("s", "k", fp("b")).expect("begin") {
        Begin::Conflict(c) => assert_eq!(c.state, StateKind::InFlight),
        other => panic!("{other:?}"),
    }
    // abandoned
    claim.abandon().expect("abandon");
    match t.store.begin("s", "k", fp("b")).expect("begin") {
        Begin::Conflict(c) => assert_eq!(c.state, StateKind::Abandoned),
        other => panic!("{other:?}"),
    }
    // completed
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("recovery"));
    claim.complete(b"r").expect("complete");
    match t.store.begin("s", "k", fp("b")).expect("begin") {
        Begin::Conflict(c) => assert_eq!(c.state, StateKind::Completed),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.store.stats().conflicts, 3);
}

#[test]
fn live_lease_elsewhere_is_in_progress_with_a_retry_hint() {
    let t = TestStore::new();
    let claim = execute(
        t.store
            .begin_with(
                "s",
                "k",
                fp("a"),
                &BeginOptions::new().lease(Duration::from_secs(30)),
            )
            .expect("begin"),
    );
    t.clock.advance(Duration::from_secs(10));
    let ticket = claim.detach().expect("detach"); // the holder is "elsewhere" now: nobody in this process waits on it
    match t.store.begin("s", "k", fp("a")).expect("begin") {
        Begin::InProgress(p) => {
            assert_eq!(p.retry_after, Duration::from_secs(20));
            assert_eq!(p.claim, ticket.claim);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_lease_is_taken_over_and_flagged_as_a_recovery() {
    let t = TestStore::new();
    let first = execute(
        t.store
            .begin_with(
                "s",
                "k",
                fp("a"),
                &BeginOptions::new()
                    .lease(Duration::from_secs(5))
                    .owner(b"worker-1".to_vec()),
            )
            .expect("begin"),
    );
    let first_id = first.id();
    let expires = first.expires_at();
    let _ticket = first.detach().expect("detach"); // the holder crashes: no complete, no release
    t.clock.advance(Duration::from_millis(4_999));
    assert!(matches!(
        t.store.begin("s", "k", fp("a")).expect("begin"),
        Begin::InProgress(_)
    ));
    t.clock.advance(Duration::from_millis(1));
    let second = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    assert!(second.is_recovery());
    assert_eq!(second.attempt(), 2);
    let recovery = second.recovery().expect("recovery");
    assert_eq!(recovery.previous_claim, first_id);
    assert_eq!(recovery.previous_owner.as_deref(), Some(&b"worker-1"[..]));
    assert_eq!(recovery.abandoned_at, None);
    assert_eq!(
        second.expires_at(),
        expires,
        "retention counts from the first claim"
    );
    second.complete(b"r").expect("complete");
    assert_eq!(t.store.stats().recoveries, 1);
}

#[test]
fn strict_policy_reports_abandoned_until_an_operator_deletes_the_key() {
    let t = TestStore::with(|b| b.recovery(RecoveryPolicy::Strict));
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    let id = claim.id();
    drop(claim);
    for _ in 0..2 {
        match t.store.begin("s", "k", fp("a")).expect("begin") {
            Begin::Abandoned(a) => {
                assert_eq!(a.claim, id);
                assert_eq!(a.since, common::T0);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(t.store.delete("s", "k").expect("delete"));
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .release()
        .expect("release");
    // per-request policy overrides the store's
    let claim = execute(t.store.begin("s", "k2", fp("a")).expect("begin"));
    drop(claim);
    let opts = BeginOptions::new().recovery(RecoveryPolicy::TakeOver);
    assert!(
        execute(
            t.store
                .begin_with("s", "k2", fp("a"), &opts)
                .expect("begin")
        )
        .is_recovery()
    );
}

#[test]
fn release_frees_the_key_for_a_fresh_execution() {
    let t = TestStore::new();
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .release()
        .expect("release");
    assert!(t.store.get("s", "k").expect("get").is_none());
    let again = execute(t.store.begin("s", "k", fp("b")).expect("begin"));
    assert!(!again.is_recovery());
    assert_eq!(again.attempt(), 1);
    assert_eq!(t.store.stats().releases, 1);
}

#[test]
fn dropping_a_claim_abandons_it_and_never_frees_the_key() {
    let t = TestStore::with(|b| b.recovery(RecoveryPolicy::Strict));
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    t.clock.advance(Duration::from_secs(1));
    drop(claim);
    let record = t.store.get("s", "k").expect("get").expect("still there");
    let RecordState::InFlight(f) = record.state() else {
        panic!("still in flight")
    };
    assert_eq!(f.abandoned_at(), Some(t.clock.now()));
    assert!(!f.lease_live(t.clock.now()), "the lease ends at once");
    assert!(matches!(
        t.store.begin("s", "k", fp("a")).expect("begin"),
        Begin::Abandoned(_)
    ));
    assert_eq!(t.store.stats().abandons, 1);
}

#[test]
fn extend_lease_keeps_others_out_longer() {
    let t = TestStore::new();
    let mut claim = execute(
        t.store
            .begin_with(
                "s",
                "k",
                fp("a"),
                &BeginOptions::new().lease(Duration::from_secs(10)),
            )
            .expect("begin"),
    );
    t.clock.advance(Duration::from_secs(9));
    let until = claim.extend_lease(Duration::from_secs(60)).expect("extend");
    assert_eq!(until, t.clock.now().saturating_add(Duration::from_secs(60)));
    assert_eq!(claim.lease_until(), until);
    t.clock.advance(Duration::from_secs(30));
    match t
        .store
        .begin_with("s", "k", fp("a"), &BeginOptions::new().no_wait())
        .expect("begin")
    {
        Begin::InProgress(p) => assert_eq!(p.retry_after, Duration::from_secs(30)),
        other => panic!("{other:?}"),
    }
    claim.complete(b"late but fine").expect("complete");
}

#[test]
fn a_claim_taken_over_cannot_complete_over_the_new_holder() {
    let t = TestStore::new();
    let slow = execute(
        t.store
            .begin_with(
                "s",
                "k",
                fp("a"),
                &BeginOptions::new().lease(Duration::from_secs(1)),
            )
            .expect("begin"),
    );
    let ticket = slow.detach().expect("detach");
    t.clock.advance(Duration::from_secs(2));
    let fresh = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    assert!(fresh.is_recovery());
    // The slow one comes back.
    match t.store.resume(&ticket) {
        Err(Error::ClaimLost(ClaimLostReason::TakenOver)) => {}
        other => panic!("{other:?}"),
    }
    fresh.complete(b"new holder").expect("complete");
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"new holder"
    );
    assert!(matches!(
        t.store.resume(&ticket),
        Err(Error::ClaimLost(ClaimLostReason::Completed))
    ));
}

#[test]
fn detached_claims_resume_and_complete() {
    let mut t = TestStore::new();
    let ticket = execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .detach()
        .expect("detach");
    t.reopen(|b| b);
    let claim = t.store.resume(&ticket).expect("resume");
    assert_eq!(claim.id(), ticket.claim);
    claim.complete(b"after reopen").expect("complete");
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"after reopen"
    );
}

#[test]
fn operator_abandon_of_a_dead_owner() {
    let t = TestStore::with(|b| b.recovery(RecoveryPolicy::Strict));
    let claim = execute(
        t.store
            .begin_with(
                "s",
                "k",
                fp("a"),
                &BeginOptions::new().owner(b"host:123".to_vec()),
            )
            .expect("begin"),
    );
    let ticket = claim.detach().expect("detach");
    let in_progress = match t
        .store
        .begin_with("s", "k", fp("a"), &BeginOptions::new().no_wait())
        .expect("begin")
    {
        Begin::InProgress(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(in_progress.owner.as_deref(), Some(&b"host:123"[..]));
    assert!(
        t.store
            .abandon("s", "k", in_progress.claim)
            .expect("abandon")
    );
    assert!(matches!(
        t.store.begin("s", "k", fp("a")).expect("begin"),
        Begin::Abandoned(_)
    ));
    assert!(
        !t.store
            .abandon("s", "k", idemdb::ClaimId::from_u128(7))
            .expect("wrong claim")
    );
    drop(ticket);
}

#[test]
fn run_executes_once_and_replays() {
    let t = TestStore::new();
    let mut runs = 0;
    for i in 0..3 {
        let out = t
            .store
            .run("s", "k", fp("a"), |claim| {
                runs += 1;
                assert_eq!(claim.attempt(), 1);
                Ok::<_, std::convert::Infallible>(b"once".to_vec())
            })
            .expect("run");
        assert_eq!(out.response, b"once");
        assert_eq!(out.replayed, i > 0);
    }
    assert_eq!(runs, 1);
}

#[test]
fn run_releases_on_error_and_maps_other_answers() {
    let t = TestStore::new();
    let failed = t
        .store
        .run("s", "k", fp("a"), |_| Err::<Vec<u8>, _>("card declined"));
    assert!(matches!(
        failed,
        Err(idemdb::RunError::Failed("card declined"))
    ));
    // released: a retry runs
    let out = t
        .store
        .run("s", "k", fp("a"), |_| Ok::<_, &str>(b"ok".to_vec()))
        .expect("run");
    assert!(!out.replayed);
    let conflict = t
        .store
        .run("s", "k", fp("b"), |_| Ok::<_, &str>(Vec::new()));
    assert!(matches!(conflict, Err(idemdb::RunError::Conflict(_))));
}

#[test]
fn operator_views_count_and_list_records() {
    let t = TestStore::new();
    execute(t.store.begin("a", "done", fp("1")).expect("begin"))
        .complete(b"12345")
        .expect("complete");
    let _held = execute(t.store.begin("a", "held", fp("2")).expect("begin"));
    drop(execute(
        t.store.begin("b", "dropped", fp("3")).expect("begin"),
    ));
    let short = BeginOptions::new()
        .retention(Duration::from_secs(1))
        .lease(Duration::ZERO);
    execute(
        t.store
            .begin_with("b", "old", fp("4"), &short)
            .expect("begin"),
    )
    .complete(b"x")
    .expect("complete");
    t.clock.advance(Duration::from_secs(2));
    let counts = t.store.count_by_state().expect("counts");
    assert_eq!(
        (
            counts.in_flight,
            counts.abandoned,
            counts.completed,
            counts.expired,
            counts.corrupt
        ),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(counts.response_bytes, 6);
    assert_eq!(counts.live(), 3);
    let keys: Vec<String> = t
        .store
        .scan(Some("a"))
        .expect("scan")
        .map(|e| e.expect("entry").key)
        .collect();
    assert_eq!(keys, ["done", "held"]);
    let all: Vec<(String, String)> = t
        .store
        .scan(None)
        .expect("scan")
        .map(|e| e.map(|e| (e.scope, e.key)).expect("entry"))
        .collect();
    assert_eq!(all.len(), 3, "the expired record is not listed: {all:?}");
    let with_expired = t
        .store
        .scan_including_expired(Some("b"))
        .expect("scan")
        .count();
    assert_eq!(with_expired, 2);
}

#[test]
fn scans_page_through_large_scopes() {
    let t = TestStore::new();
    for i in 0..700 {
        execute(
            t.store
                .begin("big", &format!("k{i:04}"), fp("x"))
                .expect("begin"),
        )
        .complete(b"")
        .expect("complete");
    }
    execute(t.store.begin("bigger", "k", fp("x")).expect("begin"))
        .complete(b"")
        .expect("complete");
    let keys: Vec<String> = t
        .store
        .scan(Some("big"))
        .expect("scan")
        .map(|e| e.expect("entry").key)
        .collect();
    assert_eq!(keys.len(), 700);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn store_and_claims_move_across_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<idemdb::Store>();
    send_sync::<idemdb::Claim>();
    send_sync::<idemdb::Error>();
    send_sync::<idemdb::Begin>();
    // a claim taken on one thread completes on another
    let t = TestStore::new();
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    std::thread::spawn(move || claim.complete(b"from another thread").expect("complete"))
        .join()
        .expect("thread");
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"from another thread"
    );
}

/// Captured log output of the calling thread.
#[cfg(debug_assertions)]
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(debug_assertions)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(debug_assertions)]
impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

/// `matches!(store.begin(..), Begin::Execute(_))` drops the claim and so abandons the key:
/// debug builds say so in a warning. Ending a claim any way on purpose says nothing.
#[cfg(debug_assertions)]
#[test]
fn a_claim_dropped_without_an_outcome_is_reported_in_debug_builds() {
    use tracing_subscriber::util::SubscriberInitExt;

    let captured = Captured::default();
    let sink = captured.clone();
    let _logging = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish()
        .set_default();
    let t = TestStore::new();
    for (key, end) in ["complete", "release", "abandon", "detach"]
        .into_iter()
        .enumerate()
    {
        let claim = execute(
            t.store
                .begin("s", &format!("k{key}"), fp("a"))
                .expect("begin"),
        );
        match end {
            "complete" => drop(claim.complete(b"r").expect("complete")),
            "release" => claim.release().expect("release"),
            "abandon" => claim.abandon().expect("abandon"),
            _ => drop(claim.detach().expect("detach")),
        }
    }
    assert!(!captured.text().contains("dropped"), "{}", captured.text());
    let dropped = matches!(
        t.store.begin("s", "mistake", fp("a")).expect("begin"),
        Begin::Execute(_)
    );
    assert!(dropped);
    let log = captured.text();
    assert!(
        log.contains("WARN") && log.contains("claim was dropped without complete"),
        "{log}"
    );
    // The key was abandoned: its retry is a recovery.
    let retry = execute(t.store.begin("s", "mistake", fp("a")).expect("begin"));
    assert!(retry.is_recovery());
    retry.release().expect("release");
}

/// A stored response can be taken by value, from a record or a replay, without a copy.
#[test]
fn a_response_is_taken_by_value() {
    let t = TestStore::new();
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .complete(b"the response")
        .expect("complete");
    let record = t.store.get("s", "k").expect("get").expect("stored");
    assert_eq!(record.into_response(), Some(b"the response".to_vec()));
    let Begin::Replay(replay) = t.store.begin("s", "k", fp("a")).expect("begin") else {
        panic!("replay")
    };
    let response: Vec<u8> = replay.response;
    assert_eq!(response, b"the response");
    let in_flight = execute(t.store.begin("s", "other", fp("a")).expect("begin"));
    let record = t.store.get("s", "other").expect("get").expect("stored");
    assert_eq!(record.into_response(), None);
    in_flight.release().expect("release");
}
