//! Conflicts on every path (fresh, lost race, waiter, completed, after restart) and scope
//! isolation.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::{Begin, BeginOptions, StateKind};

#[test]
fn conflict_on_a_fresh_in_flight_key() {
    let t = TestStore::new();
    let _claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    assert!(matches!(
        t.store.begin("s", "k", fp("b")).expect("begin"),
        Begin::Conflict(_)
    ));
}

#[test]
fn conflict_for_the_loser_of_a_race_between_two_requests() {
    for _ in 0..20 {
        let t = TestStore::new();
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<&'static str> = std::thread::scope(|s| {
            let handles: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|which| {
                    let store = t.store.clone();
                    let barrier = Arc::clone(&barrier);
                    s.spawn(move || {
                        barrier.wait();
                        match store.begin("s", "k", fp(which)).expect("begin") {
                            Begin::Execute(claim) => {
                                claim.complete(which.as_bytes()).expect("complete");
                                "execute"
                            }
                            Begin::Conflict(_) => "conflict",
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let mut sorted = results.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["conflict", "execute"], "{results:?}");
    }
}

#[test]
fn a_waiter_with_another_request_gets_a_conflict_without_waiting_out_its_bound() {
    let t = TestStore::with(|b| b.wait(Duration::from_secs(60)));
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    let started = std::time::Instant::now();
    match t.store.begin("s", "k", fp("b")).expect("begin") {
        Begin::Conflict(c) => assert_eq!(c.state, StateKind::InFlight),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    claim.complete(b"a").expect("complete");
}

#[test]
fn a_waiter_for_the_same_request_that_meets_another_request_after_waking_conflicts() {
    let t = TestStore::with(|b| b.wait(Duration::from_secs(60)));
    let holder = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| t.store.begin("s", "k", fp("b")).expect("begin"));
        std::thread::sleep(Duration::from_millis(50));
        holder.complete(b"a").expect("complete");
        assert!(matches!(waiter.join().expect("thread"), Begin::Conflict(_)));
    });
}

#[test]
fn conflict_on_a_completed_key() {
    let t = TestStore::new();
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .complete(b"r")
        .expect("complete");
    match t.store.begin("s", "k", fp("b")).expect("begin") {
        Begin::Conflict(c) => {
            assert_eq!(c.state, StateKind::Completed);
            assert_eq!(c.created_at, common::T0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn conflict_and_replay_after_a_restart() {
    let mut t = TestStore::new();
    execute(t.store.begin("s", "done", fp("a")).expect("begin"))
        .complete(b"stored")
        .expect("complete");
    let _in_flight = execute(t.store.begin("s", "held", fp("a")).expect("begin"))
        .detach()
        .expect("detach");
    t.reopen(|b| b);
    assert!(matches!(
        t.store.begin("s", "done", fp("b")).expect("begin"),
        Begin::Conflict(_)
    ));
    assert!(matches!(
        t.store.begin("s", "held", fp("b")).expect("begin"),
        Begin::Conflict(_)
    ));
    assert_eq!(
        replay(t.store.begin("s", "done", fp("a")).expect("begin")),
        b"stored"
    );
    assert!(matches!(
        t.store
            .begin_with("s", "held", fp("a"), &BeginOptions::new().no_wait())
            .expect("begin"),
        Begin::InProgress(_)
    ));
}

#[test]
fn scopes_never_see_each_others_records() {
    let t = TestStore::new();
    execute(t.store.begin("tenant-a", "k", fp("a")).expect("begin"))
        .complete(b"for a")
        .expect("complete");
    // same key, other scope: a fresh, unrelated request, even with another fingerprint
    let claim = execute(t.store.begin("tenant-b", "k", fp("b")).expect("begin"));
    claim.complete(b"for b").expect("complete");
    assert_eq!(
        replay(t.store.begin("tenant-a", "k", fp("a")).expect("begin")),
        b"for a"
    );
    assert_eq!(
        replay(t.store.begin("tenant-b", "k", fp("b")).expect("begin")),
        b"for b"
    );
    assert!(t.store.delete("tenant-a", "k").expect("delete"));
    assert!(t.store.get("tenant-a", "k").expect("get").is_none());
    assert!(t.store.get("tenant-b", "k").expect("get").is_some());
}

#[test]
fn scope_and_key_pairs_that_concatenate_alike_stay_apart() {
    let t = TestStore::new();
    let pairs = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a:b:c", "x"),
        ("ab", "c"),
        ("a", "bc"),
    ];
    for (i, (scope, key)) in pairs.iter().enumerate() {
        execute(t.store.begin(scope, key, fp("same")).expect("begin"))
            .complete(i.to_string())
            .expect("complete");
    }
    for (i, (scope, key)) in pairs.iter().enumerate() {
        assert_eq!(
            replay(t.store.begin(scope, key, fp("same")).expect("begin")),
            i.to_string().as_bytes()
        );
    }
    let in_a: Vec<String> = t
        .store
        .scan(Some("a"))
        .expect("scan")
        .map(|e| e.expect("entry").key)
        .collect();
    assert_eq!(in_a, ["b:c", "bc"]);
}

#[test]
fn sweeping_one_scope_never_touches_another() {
    let t = TestStore::new();
    let short = BeginOptions::new().retention(Duration::from_secs(1));
    for i in 0..50 {
        execute(
            t.store
                .begin_with("short", &format!("k{i}"), fp("x"), &short)
                .expect("begin"),
        )
        .complete(b"")
        .expect("complete");
        execute(
            t.store
                .begin("long", &format!("k{i}"), fp("x"))
                .expect("begin"),
        )
        .complete(b"")
        .expect("complete");
    }
    t.clock.advance(Duration::from_secs(2));
    assert_eq!(t.store.sweep_now().expect("sweep"), 50);
    assert_eq!(
        t.store
            .scan_including_expired(Some("short"))
            .expect("scan")
            .count(),
        0
    );
    assert_eq!(t.store.scan(Some("long")).expect("scan").count(), 50);
}
