//! Scenarios of docs/reliability.md that no other file names on its own: 9 (a request
//! mutated after `begin`), 11 (abandoned claims around the lease end, a 0 ms lease, racing
//! take-overs) and 23 (file size under churn, long readers, compaction). docs/reliability.md
//! maps every scenario to its tests.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::{Begin, BeginOptions, Durability, Fingerprint, Store};

/// Scenario 9: the fingerprint is a value taken at `begin`; changing the request
/// afterwards (a handler that edits its body in place) changes nothing stored.
#[test]
fn s09_a_request_mutated_after_begin_changes_nothing() {
    let t = TestStore::new();
    let mut body = br#"{"to":"a@example.com","text":"hi"}"#.to_vec();
    let original = Fingerprint::builder()
        .field("method", b"POST")
        .json_field("body", &body)
        .expect("json")
        .finish();
    let claim = execute(t.store.begin("s", "k", original).expect("begin"));
    body.clear();
    body.extend_from_slice(br#"{"to":"b@example.com"}"#);
    claim.complete(b"sent").expect("complete");

    let retry = Fingerprint::builder()
        .field("method", b"POST")
        .json_field("body", br#"{ "text":"hi", "to":"a@example.com" }"#)
        .expect("json")
        .finish();
    assert_eq!(
        replay(t.store.begin("s", "k", retry).expect("retry")),
        b"sent"
    );
    let mutated = Fingerprint::builder()
        .field("method", b"POST")
        .json_field("body", &body)
        .expect("json")
        .finish();
    assert!(matches!(
        t.store.begin("s", "k", mutated).expect("mutated"),
        Begin::Conflict(_)
    ));
}

/// Scenario 11: a claim whose holder vanished (detached, never ended) is in progress up to
/// its lease end, taken over at and after it; a 0 ms lease is taken over at once; an
/// extension pushes the end back.
#[test]
fn s11_retry_before_at_and_after_the_lease_end() {
    let t = TestStore::new();
    let lease = Duration::from_secs(10);
    let opts = BeginOptions::new().lease(lease).no_wait();
    let first = execute(t.store.begin_with("s", "k", fp("r"), &opts).expect("begin"));
    let until = first.lease_until();
    let _ticket = first.detach().expect("detach");

    t.clock.advance(lease - Duration::from_millis(1));
    match t
        .store
        .begin_with("s", "k", fp("r"), &opts)
        .expect("before")
    {
        Begin::InProgress(p) => assert_eq!(p.retry_after, Duration::from_millis(1)),
        other => panic!("1 ms before the lease end: {other:?}"),
    }
    t.clock.advance(Duration::from_millis(1));
    assert_eq!(t.store.now(), until);
    let second = execute(t.store.begin_with("s", "k", fp("r"), &opts).expect("at"));
    assert!(
        second.is_recovery(),
        "at the lease end the key is taken over"
    );
    assert_eq!(second.attempt(), 2);

    // An extension keeps it: 1 ms after the old end, still in progress.
    let mut second = second;
    second.extend_lease(lease * 2).expect("extend");
    t.clock.advance(lease + Duration::from_millis(1));
    assert!(matches!(
        t.store
            .begin_with("s", "k", fp("r"), &opts)
            .expect("extended"),
        Begin::InProgress(_)
    ));
    let _second = second.detach().expect("detach");
    t.clock.advance(lease * 2);
    let third = execute(t.store.begin_with("s", "k", fp("r"), &opts).expect("after"));
    assert_eq!(third.attempt(), 3);
    third.complete(b"done").expect("complete");

    // A 0 ms lease is over as soon as it is granted.
    let zero = BeginOptions::new().lease(Duration::ZERO).no_wait();
    let z = execute(
        t.store
            .begin_with("s", "zero", fp("r"), &zero)
            .expect("zero"),
    );
    let _z = z.detach().expect("detach");
    let taken = execute(
        t.store
            .begin_with("s", "zero", fp("r"), &zero)
            .expect("take over"),
    );
    assert!(taken.is_recovery());
    taken.release().expect("release");
}

/// Scenario 11: callers racing to take over one abandoned claim: exactly one wins; the
/// others see it in progress (or, once it completed, replay it).
#[test]
fn s11_racing_take_overs_have_exactly_one_winner() {
    for round in 0..20 {
        let t = TestStore::new();
        let key = format!("k{round}");
        let lease = BeginOptions::new().lease(Duration::from_secs(5)).no_wait();
        let first = execute(
            t.store
                .begin_with("s", &key, fp("r"), &lease)
                .expect("begin"),
        );
        drop(first); // abandoned: its lease ends now
        let store = t.store.clone();
        let barrier = Arc::new(Barrier::new(8));
        let answers: Vec<_> = (0..8)
            .map(|_| {
                let store: Store = store.clone();
                let barrier = Arc::clone(&barrier);
                let key = key.clone();
                let lease = lease.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    match store.begin_with("s", &key, fp("r"), &lease).expect("race") {
                        Begin::Execute(claim) => {
                            assert!(claim.is_recovery());
                            claim.complete(b"once").expect("complete");
                            "execute"
                        }
                        Begin::InProgress(_) => "in progress",
                        Begin::Replay(r) => {
                            assert_eq!(r.response, b"once");
                            "replay"
                        }
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let answers: Vec<&str> = answers
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        assert_eq!(
            answers.iter().filter(|a| **a == "execute").count(),
            1,
            "round {round}: {answers:?}"
        );
        let record = t.store.get("s", &key).expect("get").expect("record");
        assert_eq!(record.attempt(), 2, "round {round}");
    }
}

fn file_bytes(store: &idemdb::Store) -> u64 {
    let files = store.files().expect("a store in a file");
    std::fs::metadata(files.database).map_or(0, |m| m.len())
        + std::fs::metadata(files.journal).map_or(0, |m| m.len())
}

/// Scenario 23: under steady churn (records written, expired and swept, round after
/// round) the files stop growing; a scan held open across the churn only delays reuse;
/// offline compaction shrinks the file once most records are gone.
#[test]
fn s23_file_size_plateaus_under_churn_and_compaction_shrinks_it() {
    let mut t = TestStore::with(|b| {
        b.durability(Durability::None)
            .max_response_size(64 * 1024)
            .journal_size(4 << 20)
            .default_retention(Duration::from_secs(60))
    });
    let rounds = 16;
    let per_round = 3_000;
    let mut sizes = Vec::new();
    let mut scan = None;
    for round in 0..rounds {
        for i in 0..per_round {
            let k = format!("r{round}-{i}");
            let claim = execute(t.store.begin("churn", &k, fp(&k)).expect("begin"));
            claim.complete(vec![b'x'; 200]).expect("complete");
        }
        if round == 3 {
            // A long reader: a scan left open, part-read, across the later rounds.
            let mut s = t.store.scan(Some("churn")).expect("scan");
            assert!(s.next().is_some());
            scan = Some(s);
        }
        t.clock.advance(Duration::from_secs(61));
        let swept = t.store.sweep_now().expect("sweep");
        assert_eq!(swept, per_round as u64, "round {round}");
        t.store.check().expect("check folds and verifies");
        sizes.push(file_bytes(&t.store));
    }
    // The reader finishes without error, whatever it sees of the churned records.
    for entry in scan.take().expect("scan") {
        entry.expect("a long scan reads on");
    }
    eprintln!("churn: file bytes per round {sizes:?}");
    // Each round writes about 0.8 MB of records. Without reuse the second half of the
    // rounds would end at least 6 MB above the first; redb grows its file in steps of a
    // few MB, so allow one such step.
    let half = sizes.len() / 2;
    let first = sizes[..half].iter().copied().max().unwrap_or(0);
    let second = sizes[half..].iter().copied().max().unwrap_or(0);
    assert!(
        second <= first + (3 << 20),
        "the files kept growing under steady churn: {sizes:?}"
    );

    // Most records gone: compaction gives the space back.
    for i in 0..20_000 {
        let k = format!("big-{i}");
        let claim = execute(t.store.begin("big", &k, fp(&k)).expect("begin"));
        claim.complete(vec![b'y'; 200]).expect("complete");
    }
    t.clock.advance(Duration::from_secs(61));
    t.store.sweep_now().expect("sweep");
    t.store.close().expect("close");
    let report = idemdb::maintenance::compact(&t.path).expect("compact");
    assert!(
        report.size_after < report.size_before,
        "compaction did not shrink the file: {report:?}"
    );
    t.reopen(|b| b);
    let counts = t.store.count_by_state().expect("count");
    assert_eq!(counts.completed + counts.in_flight + counts.expired, 0);
}
