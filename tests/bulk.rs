//! Bulk and maintenance calls: `import_many` (one group commit per batch), `flush`, and a
//! bounded `sweep_now_limited`.

mod common;

use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::{Error, Record};

fn completed(t: &TestStore, i: u64) -> Record {
    let now = t.store.now();
    Record::builder(fp(&format!("request {i}")), now)
        .expires_at(Some(now.saturating_add(Duration::from_secs(3600))))
        .completed(now, format!("response {i}").into_bytes())
}

#[test]
fn import_many_writes_in_few_commits_and_replays_every_record() {
    let t = TestStore::new();
    let commits_before = t.store.stats().commits;
    let records = (0..40_000u64).map(|i| ("s", format!("k{i}"), completed(&t, i)));
    assert_eq!(t.store.import_many(records, false).expect("import"), 40_000);
    let commits = t.store.stats().commits - commits_before;
    // One group commit per batch (16 Ki records at most), not one per record.
    assert!((3..=4).contains(&commits), "{commits} commits");
    for i in [0u64, 16_383, 16_384, 39_999] {
        assert_eq!(
            replay(
                t.store
                    .begin("s", &format!("k{i}"), fp(&format!("request {i}")))
                    .expect("begin")
            ),
            format!("response {i}").into_bytes()
        );
    }
    // A live record is kept unless overwriting; the count says what was written.
    let again = (0..10u64).map(|i| ("s", format!("k{i}"), completed(&t, i + 100)));
    assert_eq!(t.store.import_many(again, false).expect("import"), 0);
    let again = (0..10u64).map(|i| ("s", format!("k{i}"), completed(&t, i + 100)));
    assert_eq!(t.store.import_many(again, true).expect("import"), 10);
}

#[test]
fn import_many_refuses_a_bad_key_before_writing_its_batch() {
    let t = TestStore::new();
    let records = vec![
        ("s", "good".to_owned(), completed(&t, 1)),
        ("s", "bad\nkey".to_owned(), completed(&t, 2)),
    ];
    assert!(matches!(
        t.store.import_many(records, false),
        Err(Error::InvalidKey(_))
    ));
    assert!(t.store.get("s", "good").expect("get").is_none());
}

#[test]
fn flush_folds_everything_acknowledged() {
    let t = TestStore::with(|b| b.fold_interval(Duration::from_secs(3600)));
    for i in 0..100 {
        execute(
            t.store
                .begin("s", &format!("k{i}"), fp("a"))
                .expect("begin"),
        )
        .complete(b"r")
        .expect("complete");
    }
    assert!(t.store.stats().unfolded_records > 0);
    t.store.flush().expect("flush");
    let stats = t.store.stats();
    assert_eq!(stats.unfolded_records, 0, "{stats:?}");
    assert!(stats.folded_records >= 100, "{stats:?}");
    t.store.close().expect("close");
    assert!(matches!(t.store.flush(), Err(Error::Closed)));
}

#[test]
fn sweep_now_limited_deletes_at_most_its_limit_and_says_when_it_is_done() {
    let t = TestStore::with(|b| b.sweep_batch(1000));
    let short = idemdb::BeginOptions::new().retention(Duration::from_secs(1));
    for i in 0..25 {
        execute(
            t.store
                .begin_with("s", &format!("k{i}"), fp("a"), &short)
                .expect("begin"),
        )
        .complete(b"r")
        .expect("complete");
    }
    t.clock.advance(Duration::from_secs(2));
    let first = t.store.sweep_now_limited(10).expect("sweep");
    assert_eq!((first.deleted, first.complete), (10, false));
    let second = t.store.sweep_now_limited(10).expect("sweep");
    assert_eq!((second.deleted, second.complete), (10, false));
    let last = t.store.sweep_now_limited(10).expect("sweep");
    assert_eq!((last.deleted, last.complete), (5, true));
    let none = t.store.sweep_now_limited(10).expect("sweep");
    assert_eq!((none.deleted, none.complete), (0, true));
    assert_eq!(t.store.count_by_state().expect("count").expired, 0);
}
