//! Record generations: new keys go into the newest generation, later changes are written
//! where a key lives, sweeps empty and drop old generations, and stores from before
//! generations open with their records in place. `Store::check` folds, so each call below
//! moves what is journaled into the generations.

mod common;

use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::Begin;
use redb::ReadableTable;

const GENERATION: usize = 25;

fn small_generations(b: idemdb::StoreBuilder) -> idemdb::StoreBuilder {
    b.generation_size(GENERATION)
        .default_retention(Duration::from_secs(60))
}

fn key(i: usize) -> String {
    format!("key-{i:04}")
}

fn complete(t: &TestStore, i: usize) {
    execute(t.store.begin("s", &key(i), fp("req")).expect("begin"))
        .complete(format!("response {i}").as_bytes())
        .expect("complete");
}

fn assert_healthy(t: &TestStore) {
    let report = t.store.check().expect("check");
    assert!(report.is_healthy(), "{report:?}");
}

#[test]
fn keys_spread_over_generations_stay_readable_in_key_order() {
    let mut t = TestStore::with(small_generations);
    // 600 keys, folded 20 at a time: about 30 generations, so a scan's pages (256 records)
    // each merge many of them.
    for round in 0..30 {
        for i in round * 20..(round + 1) * 20 {
            complete(&t, i);
        }
        assert_healthy(&t);
    }
    assert!(
        t.store.stats().generations >= 20,
        "600 records in generations of 25: {:?}",
        t.store.stats()
    );
    for i in 0..600 {
        assert_eq!(
            replay(t.store.begin("s", &key(i), fp("req")).expect("begin")),
            format!("response {i}").as_bytes()
        );
    }
    // A different request under a stored key is still a conflict, whichever generation
    // holds it.
    assert!(matches!(
        t.store.begin("s", &key(3), fp("other")).expect("begin"),
        Begin::Conflict(_)
    ));
    let keys: Vec<String> = t
        .store
        .scan(Some("s"))
        .expect("scan")
        .map(|e| e.expect("entry").key)
        .collect();
    let expected: Vec<String> = (0..600).map(key).collect();
    assert_eq!(keys, expected, "one entry per key, in key order");

    // After a reopen the filters are read back (sealed) or rebuilt (current).
    let generations = t.store.stats().generations;
    t.reopen(small_generations);
    assert_eq!(t.store.stats().generations, generations);
    for i in (0..600).step_by(7) {
        assert_eq!(
            replay(t.store.begin("s", &key(i), fp("req")).expect("begin")),
            format!("response {i}").as_bytes()
        );
    }
    assert_healthy(&t);
}

#[test]
fn a_key_claimed_in_one_generation_is_completed_in_it() {
    let t = TestStore::with(small_generations);
    let claim = execute(t.store.begin("s", "early", fp("req")).expect("begin"));
    assert_healthy(&t);
    // Enough new keys to seal the generation holding the claim.
    for i in 0..60 {
        complete(&t, i);
        if i % 20 == 19 {
            assert_healthy(&t);
        }
    }
    claim.complete(b"late answer").expect("complete");
    assert_healthy(&t);
    assert_eq!(
        replay(t.store.begin("s", "early", fp("req")).expect("begin")),
        b"late answer"
    );
    // `assert_healthy` above found no key in two generations.
}

#[test]
fn sweeps_empty_old_generations_and_they_are_dropped() {
    let t = TestStore::with(small_generations);
    for round in 0..4 {
        for i in round * 25..(round + 1) * 25 {
            complete(&t, i);
        }
        assert_healthy(&t);
    }
    let before = t.store.stats().generations;
    assert!(before >= 3, "{:?}", t.store.stats());
    t.clock.advance(Duration::from_secs(61));
    // New keys after the old ones expired, so the current generation stays in use.
    for i in 1000..1010 {
        complete(&t, i);
    }
    assert_eq!(t.store.sweep_now().expect("sweep"), 100);
    assert_healthy(&t);
    // The sweep's fold of 100 deletions does not seal the current generation, which holds
    // 10 records: only it is left.
    let after = t.store.stats().generations;
    assert_eq!(
        after, 1,
        "emptied generations are dropped: {before} before, {after} after"
    );
    for i in 0..100 {
        assert!(t.store.get("s", &key(i)).expect("get").is_none());
    }
    for i in 1000..1010 {
        assert!(t.store.get("s", &key(i)).expect("get").is_some());
    }
    // A key of a dropped generation can be claimed afresh.
    complete(&t, 5);
    assert_healthy(&t);
    assert_eq!(
        replay(t.store.begin("s", &key(5), fp("req")).expect("begin")),
        b"response 5"
    );
}

#[test]
fn a_store_from_before_generations_opens_with_its_records() {
    let mut t = TestStore::new();
    for i in 0..40 {
        complete(&t, i);
    }
    t.store.close().expect("close");
    // Make it what the previous format left: one records table, no generations table,
    // format 2.
    {
        let db = redb::Database::create(&t.path).expect("redb");
        let w = db.begin_write().expect("write");
        assert!(
            w.delete_table(redb::TableDefinition::<u64, &[u8]>::new(
                "idemdb_generations"
            ))
            .expect("delete")
        );
        w.open_table(redb::TableDefinition::<&str, &[u8]>::new("idemdb_meta"))
            .expect("meta")
            .insert("format", &2u32.to_le_bytes()[..])
            .expect("insert");
        w.commit().expect("commit");
    }
    t.reopen(small_generations);
    t.store.close().expect("close");
    {
        let db = redb::Database::create(&t.path).expect("redb");
        let r = redb::ReadableDatabase::begin_read(&db).expect("read");
        let meta = r
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("idemdb_meta"))
            .expect("meta");
        let format = meta.get("format").expect("get").expect("format");
        assert_eq!(
            format.value(),
            &3u32.to_le_bytes()[..],
            "upgraded to format 3"
        );
    }
    t.reopen(small_generations);
    for i in 0..40 {
        assert_eq!(
            replay(t.store.begin("s", &key(i), fp("req")).expect("begin")),
            format!("response {i}").as_bytes()
        );
    }
    // The old table is sealed as generation 0 at the next fold; new keys go elsewhere.
    for i in 40..50 {
        complete(&t, i);
    }
    assert_healthy(&t);
    assert_eq!(t.store.stats().generations, 2);
    t.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(t.store.sweep_now().expect("sweep"), 50);
    assert_healthy(&t);
    assert!(t.store.get("s", &key(1)).expect("get").is_none());
    assert_eq!(
        t.store.stats().generations,
        1,
        "the emptied old generation is dropped"
    );
}

#[test]
fn check_reports_a_sealed_filter_that_lost_its_keys() {
    let mut t = TestStore::with(small_generations);
    for round in 0..3 {
        for i in round * 20..(round + 1) * 20 {
            complete(&t, i);
        }
        assert_healthy(&t);
    }
    t.store.close().expect("close");
    // Clear every bit of generation 0's persisted filter, keeping its form valid: lookups
    // would now pass over that generation's keys.
    {
        let db = redb::Database::create(&t.path).expect("redb");
        let w = db.begin_write().expect("write");
        {
            let mut rows = w
                .open_table(redb::TableDefinition::<u64, &[u8]>::new(
                    "idemdb_generations",
                ))
                .expect("generations");
            let row = rows
                .get(0)
                .expect("get")
                .expect("generation 0")
                .value()
                .to_vec();
            assert!(row.len() > 2, "generation 0 is sealed with a filter");
            let mut cleared = row[..2].to_vec();
            cleared.resize(row.len(), 0);
            rows.insert(0, cleared.as_slice()).expect("insert");
        }
        w.commit().expect("commit");
    }
    let report = idemdb::maintenance::check(&t.path).expect("check");
    assert!(!report.is_healthy());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == idemdb::maintenance::ProblemKind::UnfilteredRecord),
        "{report:?}"
    );
    t.reopen(small_generations);
}
