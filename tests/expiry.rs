//! Retention, exact expiry at read time, and the sweeper. The clock is injected: no test
//! sleeps for a record to expire.

mod common;

use std::time::{Duration, Instant};

use common::{TestStore, execute, fp, replay};
use idemdb::{Begin, BeginOptions, Clock, Error, ManualClock, Timestamp};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn expiry_is_exact_to_the_millisecond_before_any_sweep() {
    let t = TestStore::with(|b| b.default_retention(Duration::from_secs(10)));
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .complete(b"r")
        .expect("complete");
    let expires = common::T0.saturating_add(Duration::from_secs(10));
    assert_eq!(
        t.store
            .get("s", "k")
            .expect("get")
            .and_then(|r| r.expires_at()),
        Some(expires)
    );
    t.clock.set(Timestamp::from_millis(expires.as_millis() - 1));
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"r"
    );
    assert!(t.store.get("s", "k").expect("get").is_some());
    t.clock.set(expires);
    assert!(
        t.store.get("s", "k").expect("get").is_none(),
        "absent at expires_at"
    );
    // expired counts as absent: even another fingerprint executes
    let claim = execute(t.store.begin("s", "k", fp("other")).expect("begin"));
    assert!(!claim.is_recovery());
    claim.release().expect("release");
    t.clock.set(Timestamp::from_millis(expires.as_millis() + 1));
    assert!(t.store.get("s", "k").expect("get").is_none());
    execute(t.store.begin("s", "k", fp("a")).expect("begin"))
        .complete(b"second window")
        .expect("complete");
}

#[test]
fn per_request_retention_from_one_second_to_the_maximum() {
    let t = TestStore::with(|b| {
        b.max_retention(Duration::from_secs(3600))
            .default_retention(Duration::from_secs(60))
    });
    let one_s = BeginOptions::new().retention(Duration::from_secs(1));
    let claim = execute(
        t.store
            .begin_with("s", "short", fp("a"), &one_s)
            .expect("begin"),
    );
    assert_eq!(
        claim.expires_at(),
        Some(common::T0.saturating_add(Duration::from_secs(1)))
    );
    claim.complete(b"").expect("complete");
    let max = BeginOptions::new().retention(Duration::from_secs(3600));
    execute(
        t.store
            .begin_with("s", "long", fp("a"), &max)
            .expect("begin"),
    )
    .complete(b"")
    .expect("complete");
    for bad in [Duration::ZERO, ms(999), Duration::from_secs(3601)] {
        let opts = BeginOptions::new().retention(bad);
        match t.store.begin_with("s", "bad", fp("a"), &opts) {
            Err(Error::InvalidRetention {
                requested,
                min,
                max,
            }) => {
                assert_eq!(requested, bad);
                assert_eq!(min, Duration::from_secs(1));
                assert_eq!(max, Duration::from_secs(3600));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        t.store.get("s", "bad").expect("get").is_none(),
        "nothing stored"
    );
    t.clock.advance(Duration::from_secs(1));
    assert!(t.store.get("s", "short").expect("get").is_none());
    assert!(t.store.get("s", "long").expect("get").is_some());
}

#[test]
fn forever_records_outlive_everything_and_are_never_swept() {
    let t = TestStore::new();
    let forever = BeginOptions::new().forever();
    let claim = execute(
        t.store
            .begin_with("ids", "crm-4815", fp("a"), &forever)
            .expect("begin"),
    );
    assert_eq!(claim.expires_at(), None);
    claim.complete(b"entity 4815").expect("complete");
    t.clock.set(Timestamp::from_millis(u64::MAX - 1));
    assert_eq!(t.store.sweep_now().expect("sweep"), 0);
    assert_eq!(
        replay(t.store.begin("ids", "crm-4815", fp("a")).expect("begin")),
        b"entity 4815"
    );
}

#[test]
fn a_live_lease_outlasts_a_short_retention() {
    let t = TestStore::new();
    let opts = BeginOptions::new()
        .retention(Duration::from_secs(1))
        .lease(Duration::from_secs(60));
    let claim = execute(t.store.begin_with("s", "k", fp("a"), &opts).expect("begin"));
    t.clock.advance(Duration::from_secs(30));
    assert_eq!(
        t.store.sweep_now().expect("sweep"),
        0,
        "a live claim is never swept"
    );
    assert!(matches!(
        t.store
            .begin_with("s", "k", fp("a"), &BeginOptions::new().no_wait())
            .expect("begin"),
        Begin::InProgress(_)
    ));
    claim.complete(b"r").expect("complete");
    // Completed after its retention: kept the retention from the completion, then swept.
    assert!(t.store.get("s", "k").expect("get").is_some());
    assert_eq!(t.store.sweep_now().expect("sweep"), 0);
    t.clock.advance(Duration::from_secs(1));
    assert!(t.store.get("s", "k").expect("get").is_none());
    assert_eq!(t.store.sweep_now().expect("sweep"), 1);
}

#[test]
fn the_sweeper_deletes_exactly_the_expired_records() {
    let t = TestStore::with(|b| b.sweep_batch(7));
    let short = BeginOptions::new().retention(Duration::from_secs(5));
    for i in 0..40 {
        let opts = if i % 2 == 0 {
            short.clone()
        } else {
            BeginOptions::new()
        };
        execute(
            t.store
                .begin_with("s", &format!("k{i}"), fp("a"), &opts)
                .expect("begin"),
        )
        .complete(b"")
        .expect("complete");
    }
    // an in-flight record with a short retention but an abandoned lease: swept too
    let dropped = execute(
        t.store
            .begin_with("s", "dropped", fp("a"), &short)
            .expect("begin"),
    );
    drop(dropped);
    t.clock.advance(ms(4_999));
    assert_eq!(t.store.sweep_now().expect("sweep"), 0);
    t.clock.advance(ms(1));
    assert_eq!(t.store.sweep_now().expect("sweep"), 21);
    assert_eq!(t.store.sweep_now().expect("sweep"), 0);
    let left: Vec<String> = t
        .store
        .scan_including_expired(None)
        .expect("scan")
        .map(|e| e.expect("entry").key)
        .collect();
    assert_eq!(left.len(), 20);
    assert!(
        left.iter()
            .all(|k| k[1..].parse::<u32>().expect("number") % 2 == 1)
    );
    let stats = t.store.stats();
    assert_eq!(stats.expired_swept, 21);
    assert!(stats.sweeps >= 3, "21 records in batches of 7: {stats:?}");
}

#[test]
fn the_background_sweeper_works_in_bounded_batches() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(common::T0);
    let store = idemdb::Store::builder()
        .clock(clock.clone())
        .sweep_interval(Some(ms(5)))
        .sweep_batch(10)
        .open(dir.path().join("s.idemdb"))
        .expect("open");
    let short = BeginOptions::new().retention(Duration::from_secs(1));
    for i in 0..95 {
        execute(
            store
                .begin_with("s", &format!("k{i}"), fp("a"), &short)
                .expect("begin"),
        )
        .complete(b"")
        .expect("complete");
    }
    let before = store.stats();
    assert_eq!(before.largest_batch, 1);
    clock.advance(Duration::from_secs(1));
    let started = Instant::now();
    while store.stats().expired_swept < 95 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sweeper stalled: {:?}",
            store.stats()
        );
        std::thread::sleep(ms(5));
    }
    let after = store.stats();
    assert_eq!(after.expired_swept, 95);
    assert!(
        after.largest_batch <= 10,
        "a sweep commit exceeded its batch: {after:?}"
    );
    assert!(after.sweeps >= 10);
    assert_eq!(store.count_by_state().expect("count").expired, 0);
    store.close().expect("close");
}

#[test]
fn keys_claimed_anew_while_the_sweeper_runs_are_never_lost() {
    for round in 0..3 {
        let t = TestStore::with(|b| b.sweep_batch(25).fold_interval(Duration::from_millis(2)));
        let short = BeginOptions::new().retention(Duration::from_secs(1));
        let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
        for key in &keys {
            execute(
                t.store
                    .begin_with("s", key, fp("old"), &short)
                    .expect("begin"),
            )
            .complete(b"old")
            .expect("complete");
        }
        t.clock.advance(Duration::from_secs(2));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let swept = std::thread::scope(|s| {
            let sweeper = s.spawn(|| {
                let mut swept = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    swept += t.store.sweep_now().expect("sweep");
                }
                swept
            });
            // Every key, expired, is claimed anew while the sweeper races through them.
            for key in &keys {
                execute(t.store.begin("s", key, fp("new")).expect("begin"))
                    .complete(b"new")
                    .expect("complete");
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            sweeper.join().expect("sweeper")
        });
        for key in &keys {
            assert_eq!(
                replay(t.store.begin("s", key, fp("new")).expect("begin")),
                b"new",
                "round {round}: {key} was lost"
            );
        }
        assert_eq!(t.store.count_by_state().expect("count").completed, 400);
        // the sweeper really raced the claims: it deleted expired records meanwhile
        assert!(swept > 0 && swept <= 400, "round {round}: {swept}");
    }
}

#[test]
fn clock_jumps_back_and_forward_across_restarts() {
    let mut t = TestStore::with(|b| b.default_retention(Duration::from_secs(3600)));
    execute(t.store.begin("s", "done", fp("a")).expect("begin"))
        .complete(b"r")
        .expect("complete");
    let lease = BeginOptions::new().lease(Duration::from_secs(60));
    let _held = execute(
        t.store
            .begin_with("s", "held", fp("a"), &lease)
            .expect("begin"),
    )
    .detach()
    .expect("detach");
    // backwards by a day: records live longer (instants are absolute), nothing panics
    t.clock.rewind(Duration::from_secs(24 * 3600));
    t.reopen(|b| b.default_retention(Duration::from_secs(3600)));
    assert_eq!(
        replay(t.store.begin("s", "done", fp("a")).expect("begin")),
        b"r"
    );
    match t
        .store
        .begin_with("s", "held", fp("a"), &BeginOptions::new().no_wait())
        .expect("begin")
    {
        Begin::InProgress(p) => assert_eq!(p.retry_after, Duration::from_secs(24 * 3600 + 60)),
        other => panic!("{other:?}"),
    }
    // a record created while the clock was behind
    execute(t.store.begin("s", "early", fp("a")).expect("begin"))
        .complete(b"e")
        .expect("complete");
    // forwards by two days: everything has expired
    t.clock.advance(Duration::from_secs(3 * 24 * 3600));
    t.reopen(|b| b.default_retention(Duration::from_secs(3600)));
    for key in ["done", "held", "early"] {
        assert!(t.store.get("s", key).expect("get").is_none(), "{key}");
    }
    assert_eq!(t.store.sweep_now().expect("sweep"), 3);
    assert_eq!(t.clock.now(), t.store.now());
}

/// Stores ("s", "k") with a 5 s retention and ("s", "other") with an hour's, then closes
/// the store and overwrites the bytes of ("s", "k") in the file with garbage, leaving its
/// expiry-index entry (due at T0 + 5 s) behind.
fn store_with_a_damaged_record() -> TestStore {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let mut t = TestStore::new();
    for (key, retention) in [("k", 5), ("other", 3600)] {
        let options = BeginOptions::new().retention(Duration::from_secs(retention));
        execute(
            t.store
                .begin_with("s", key, fp("a"), &options)
                .expect("begin"),
        )
        .complete(b"r")
        .expect("complete");
    }
    t.store.close().expect("close");
    let records = TableDefinition::<&[u8], &[u8]>::new("idemdb_records");
    let db = redb::Database::open(&t.path).expect("open redb");
    let damaged: Vec<u8> = {
        let read = db.begin_read().expect("read");
        let table = read.open_table(records).expect("records");
        let keys: Vec<Vec<u8>> = table
            .iter()
            .expect("iter")
            .map(|entry| entry.expect("entry").0.value().to_vec())
            .collect();
        keys.into_iter()
            .find(|key| key.ends_with(b"k"))
            .expect("the record of k")
    };
    let write = db.begin_write().expect("write");
    write
        .open_table(records)
        .expect("records")
        .insert(damaged.as_slice(), &b"\x01garbage"[..])
        .expect("insert");
    write.commit().expect("commit");
    db.close().expect("close redb");
    t.reopen(|b| b);
    t
}

/// The sweeper trusts the expiry index to match the records exactly: a damaged record
/// replaced by a live one must take its old index entry along, or a later sweep would
/// delete the live record.
#[test]
fn a_damaged_record_replaced_leaves_no_index_entry_to_sweep_the_new_one() {
    let t = store_with_a_damaged_record();
    let live = t.store.get("s", "other").expect("get").expect("record");
    assert!(t.store.import("s", "k", live, true).expect("import"));
    // A check folds first, then finds no index entry without its record.
    let report = t.store.check().expect("check");
    assert!(report.is_healthy(), "{report:?}");
    t.clock.advance(Duration::from_secs(10));
    assert_eq!(t.store.sweep_now().expect("sweep"), 0);
    assert!(t.store.get("s", "k").expect("get").is_some());
}

/// An operator can delete a damaged record, and its index entry goes with it.
#[test]
fn a_damaged_record_can_be_deleted() {
    let t = store_with_a_damaged_record();
    assert!(matches!(t.store.get("s", "k"), Err(Error::Corrupt { .. })));
    assert!(t.store.delete("s", "k").expect("delete"));
    let report = t.store.check().expect("check");
    assert!(report.is_healthy(), "{report:?}");
    assert!(t.store.get("s", "k").expect("get").is_none());
}

/// A store written before the expiry index was kept exact may hold an entry left behind by
/// a damaged record that was replaced. Opening it removes such entries once, so a sweep
/// (which trusts the index) never deletes the live record.
#[test]
fn a_store_from_before_the_exact_index_is_cleaned_on_open() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let mut t = TestStore::new();
    let hour = BeginOptions::new().retention(Duration::from_secs(3600));
    execute(t.store.begin_with("s", "k", fp("a"), &hour).expect("begin"))
        .complete(b"live")
        .expect("complete");
    t.store.close().expect("close");
    let records = TableDefinition::<&[u8], &[u8]>::new("idemdb_records");
    let expiry = TableDefinition::<&[u8], ()>::new("idemdb_expiry");
    let meta = TableDefinition::<&str, &[u8]>::new("idemdb_meta");
    let db = redb::Database::open(&t.path).expect("open redb");
    let key: Vec<u8> = {
        let read = db.begin_read().expect("read");
        let table = read.open_table(records).expect("records");
        let first = table.iter().expect("iter").next().expect("one record");
        first.expect("entry").0.value().to_vec()
    };
    let write = db.begin_write().expect("write");
    {
        // What an earlier build could leave: an entry due at T0 + 5 s for the live key,
        // and no mark that the index is exact.
        let mut index = (common::T0.as_millis() + 5_000).to_be_bytes().to_vec();
        index.extend_from_slice(&key);
        write
            .open_table(expiry)
            .expect("expiry")
            .insert(index.as_slice(), ())
            .expect("insert");
        write
            .open_table(meta)
            .expect("meta")
            .remove("index_exact")
            .expect("remove");
    }
    write.commit().expect("commit");
    db.close().expect("close redb");

    t.reopen(|b| b);
    assert!(t.store.check().expect("check").is_healthy());
    t.clock.advance(Duration::from_secs(10));
    assert_eq!(t.store.sweep_now().expect("sweep"), 0);
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"live"
    );
}

/// A completion after the retention has run out (the lease outlasted it) is never stored
/// already expired: its record lives at least the retention from the completion, so the
/// next retry replays instead of executing again.
#[test]
fn a_late_completion_lives_the_retention_from_its_completion() {
    let t = TestStore::new();
    let options = BeginOptions::new()
        .retention(Duration::from_secs(1))
        .lease(Duration::from_secs(60));
    let claim = execute(
        t.store
            .begin_with("s", "k", fp("a"), &options)
            .expect("begin"),
    );
    t.clock.advance(Duration::from_secs(30));
    let completion = claim.complete(b"late").expect("complete inside the lease");
    assert_eq!(completion.completed_at, t.clock.now());
    assert_eq!(
        completion.expires_at,
        Some(t.clock.now().saturating_add(Duration::from_secs(1)))
    );
    assert_eq!(
        replay(
            t.store
                .begin_with("s", "k", fp("a"), &options)
                .expect("begin")
        ),
        b"late"
    );
    t.clock.advance(ms(999));
    assert_eq!(
        replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"late"
    );
    t.clock.advance(ms(1));
    assert!(t.store.get("s", "k").expect("get").is_none());
}

/// Inside the retention too, a completion's record lives the retention from the completion:
/// the later of the first claim's expiry and the completion plus the retention.
#[test]
fn every_completion_lives_at_least_the_retention_after_it() {
    let t = TestStore::with(|b| b.default_retention(Duration::from_secs(10)));
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    t.clock.advance(Duration::from_secs(4));
    let completion = claim.complete(b"r").expect("complete");
    // Lives 10 s from the completion: the later of the two bounds.
    assert_eq!(
        completion.expires_at,
        Some(common::T0.saturating_add(Duration::from_secs(14)))
    );
}
