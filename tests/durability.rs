//! What is acknowledged stays: across close and reopen, in every durability mode, and when
//! a commit fails.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::{Begin, BeginOptions, Durability, Error, ManualClock, Record, RecoveryPolicy};

fn populate(store: &idemdb::Store) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for i in 0..300 {
        let scope = format!("scope-{}", i % 3);
        let key = format!("key-{i}");
        let opts = match i % 4 {
            0 => BeginOptions::new().forever(),
            1 => BeginOptions::new().retention(Duration::from_secs(60)),
            _ => BeginOptions::new(),
        };
        let claim = execute(
            store
                .begin_with(&scope, &key, fp(&key), &opts)
                .expect("begin"),
        );
        match i % 5 {
            0 => drop(claim),                           // abandoned
            1 => drop(claim.detach().expect("detach")), // in flight
            _ => {
                claim.complete(format!("r{i}")).expect("complete");
            }
        }
        keys.push((scope, key));
    }
    keys
}

fn snapshot(store: &idemdb::Store, keys: &[(String, String)]) -> Vec<Option<Record>> {
    keys.iter()
        .map(|(s, k)| store.get(s, k).expect("get"))
        .collect()
}

#[test]
fn reopening_after_close_keeps_every_record() {
    let mut t = TestStore::new();
    let keys = populate(&t.store);
    let before = snapshot(&t.store, &keys);
    let counts = t.store.count_by_state().expect("count");
    assert!(before.iter().all(Option::is_some));
    t.reopen(|b| b);
    assert_eq!(snapshot(&t.store, &keys), before);
    assert_eq!(t.store.count_by_state().expect("count"), counts);
    assert_eq!(
        replay(
            t.store
                .begin("scope-2", "key-2", fp("key-2"))
                .expect("begin")
        ),
        b"r2"
    );
}

#[test]
fn every_commit_mode_keeps_acknowledged_records() {
    for (name, configure) in [
        (
            "two-phase",
            (|b: idemdb::StoreBuilder| b.two_phase_commit(true)) as fn(_) -> _,
        ),
        ("quick-repair", |b: idemdb::StoreBuilder| {
            b.quick_repair(true)
        }),
        (
            "non-durable, flushed at close",
            |b: idemdb::StoreBuilder| b.durability(Durability::None),
        ),
        ("no verification", |b: idemdb::StoreBuilder| {
            b.verify_on_open(false)
        }),
    ] {
        let mut t = TestStore::with(configure);
        let keys = populate(&t.store);
        let before = snapshot(&t.store, &keys);
        t.reopen(configure);
        assert_eq!(snapshot(&t.store, &keys), before, "{name}");
    }
}

#[test]
fn dropping_the_store_closes_it_and_keeps_everything() {
    let t = TestStore::new();
    let keys = populate(&t.store);
    let before = snapshot(&t.store, &keys);
    let TestStore {
        dir,
        path,
        clock,
        store,
    } = t;
    drop(store);
    let store = common::builder(&clock)
        .open(&path)
        .expect("reopen after drop");
    assert_eq!(snapshot(&store, &keys), before);
    store.close().expect("close");
    drop(dir);
}

#[test]
fn operations_after_close_fail_with_closed() {
    let t = TestStore::new();
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    let other_handle = t.store.clone();
    t.store.close().expect("close");
    assert!(matches!(
        other_handle.begin("s", "k2", fp("a")),
        Err(Error::Closed)
    ));
    assert!(matches!(other_handle.get("s", "k"), Err(Error::Closed)));
    assert!(matches!(
        claim.complete(b"late").map_err(|e| e.error),
        Err(Error::Closed)
    ));
    t.store.close().expect("a second close is harmless");
}

#[test]
fn a_full_disk_keeps_acknowledging_into_the_journal_then_fails_typed_and_recovers() {
    let clock = ManualClock::new(common::T0);
    let (store, fault) = common::failing_store(
        |b| {
            b.max_response_size(64 * 1024)
                .journal_size(1024 * 1024)
                .fold_interval(Duration::from_millis(20))
        },
        &clock,
    );
    execute(store.begin("s", "done", fp("a")).expect("begin"))
        .complete(b"kept")
        .expect("complete");
    // A check folds first.
    assert!(store.check().expect("check").is_healthy());
    assert_eq!(store.stats().unfolded_records, 0);

    // The disk fills up. The journal is preallocated, so completions keep being durable and
    // acknowledged there, while folds into the database fail.
    fault.store(common::FAULT_NO_SPACE, Ordering::SeqCst);
    let response = vec![7u8; 60 * 1024];
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let key = format!("k{i}");
        let claim = execute(store.begin("s", &key, fp("a")).expect("begin"));
        match claim.complete(&response) {
            Ok(_) => acknowledged.push(key),
            Err(err) => {
                assert!(err.error.is_storage_full(), "{:?}", err.error);
                refused = Some((key, err.claim.expect("the claim comes back")));
                break;
            }
        }
    }
    let (refused_key, claim) = refused.expect("a full journal refuses at last");
    assert!(
        !acknowledged.is_empty(),
        "the journal took completions first"
    );
    assert!(store.stats().failed_folds >= 1, "{:?}", store.stats());
    // Everything acknowledged is served, and the refused key stays held.
    assert_eq!(
        replay(store.begin("s", "done", fp("a")).expect("begin")),
        b"kept"
    );
    for key in &acknowledged {
        assert_eq!(
            replay(store.begin("s", key, fp("a")).expect("begin")),
            response
        );
    }
    assert!(matches!(
        store
            .begin_with("s", &refused_key, fp("a"), &BeginOptions::new().no_wait())
            .expect("begin"),
        Begin::InProgress(_)
    ));

    // Space returns: folds catch up and the same claim completes.
    fault.store(common::FAULT_NONE, Ordering::SeqCst);
    claim
        .complete(&response)
        .expect("complete once space returns");
    assert_eq!(
        replay(store.begin("s", &refused_key, fp("a")).expect("begin")),
        response
    );
    store.close().expect("close folds everything");
}

#[test]
fn a_claim_given_up_after_a_failed_complete_is_never_a_fresh_execution() {
    let clock = ManualClock::new(common::T0);
    let (store, fault) = common::failing_store(|b| b.recovery(RecoveryPolicy::Strict), &clock);
    let claim = execute(store.begin("s", "k", fp("a")).expect("begin"));
    fault.store(common::FAULT_EIO, Ordering::SeqCst);
    let err = claim.complete(b"result").expect_err("device broken");
    assert!(matches!(err.error, Error::Io(_)), "{:?}", err.error);
    drop(err); // the caller gives up: the claim is dropped, and its abandon fails too
    fault.store(common::FAULT_NONE, Ordering::SeqCst);
    // reads recover once the device does, without any write
    std::thread::sleep(Duration::from_millis(150));
    let record = store
        .get("s", "k")
        .expect("readable again")
        .expect("still there");
    assert!(record.response().is_none(), "still in flight");
    clock.advance(Duration::from_secs(61)); // the lease ends on its own
    assert!(matches!(
        store.begin("s", "k", fp("a")).expect("begin"),
        Begin::Abandoned(_)
    ));
}

#[test]
fn a_failed_claim_is_not_acknowledged_and_leaves_nothing() {
    let clock = ManualClock::new(common::T0);
    let (store, fault) = common::failing_store(|b| b, &clock);
    fault.store(common::FAULT_EIO, Ordering::SeqCst);
    assert!(matches!(store.begin("s", "k", fp("a")), Err(Error::Io(_))));
    fault.store(common::FAULT_NONE, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(150));
    assert!(store.get("s", "k").expect("get").is_none());
    execute(store.begin("s", "k", fp("a")).expect("begin"))
        .complete(b"")
        .expect("complete");
}
