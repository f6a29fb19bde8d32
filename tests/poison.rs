//! A panic in one of idemdb's threads poisons the store: every later call, `close`
//! included, answers `Error::Poisoned` (a bug in idemdb), never `Corrupt` or `Closed`, and
//! a reopen carries on with everything acknowledged before.

use std::time::{Duration, Instant};

use idemdb::testing::{PanicSite, inject_panic};
use idemdb::{Begin, Error, Fingerprint, Store, StoreBuilder};

fn execute(store: &Store, scope: &str, key: &str) -> idemdb::Result<()> {
    match store.begin(scope, key, Fingerprint::of(key.as_bytes()))? {
        Begin::Execute(claim) => claim.complete(b"done").map(drop).map_err(|e| e.error),
        other => panic!("{scope}/{key}: a fresh key answered {}", other.kind()),
    }
}

fn assert_poisoned(result: idemdb::Result<impl std::fmt::Debug>, place: &str, what: &str) {
    match result {
        Err(Error::Poisoned { detail }) => {
            assert!(detail.contains(place), "{what}: {detail}");
            assert!(
                detail.contains("a panic injected by a test"),
                "{what}: {detail}"
            );
        }
        other => panic!("{what}: expected Poisoned ({place}), got {other:?}"),
    }
}

/// Every call after the panic is refused as poisoned; the store then reopens with what was
/// acknowledged before it.
fn assert_store_poisoned(store: &Store, place: &str) {
    let error = store
        .get("other", "k")
        .expect_err("get on a poisoned store");
    assert!(
        error.to_string().contains("a bug in idemdb"),
        "the message says whose fault it is: {error}"
    );
    assert_poisoned(store.get("other", "k"), place, "get");
    assert_poisoned(
        store
            .begin("other", "fresh", Fingerprint::of(b"x"))
            .map(|b| b.kind()),
        place,
        "begin",
    );
    assert_poisoned(store.close(), place, "close");
    assert_poisoned(store.close(), place, "a second close");
}

fn reopen_and_find(builder: StoreBuilder, path: &std::path::Path, scope: &str, key: &str) {
    let store = builder.open(path).expect("a poisoned store reopens");
    let record = store
        .get(scope, key)
        .expect("get")
        .expect("the acknowledged record");
    assert_eq!(record.response(), Some(&b"done"[..]));
    store.close().expect("close");
}

#[test]
fn a_panic_on_the_writer_thread_poisons_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("writer.idemdb");
    // Deferred claim syncs send every claim through the writer thread.
    let builder = || Store::builder().sweep_interval(None).defer_claim_sync(true);
    let store = builder().open(&path).expect("open");
    execute(&store, "kept", "k1").expect("an operation before the panic");
    inject_panic(PanicSite::Commit, "writer-panics");
    assert_poisoned(
        execute(&store, "writer-panics", "k"),
        "the writer thread panicked",
        "the begin that met the panic",
    );
    assert_store_poisoned(&store, "the writer thread panicked");
    drop(store);
    reopen_and_find(builder(), &path, "kept", "k1");
}

#[test]
fn a_panic_in_a_commit_on_the_callers_thread_poisons_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("caller.idemdb");
    // A lone durable caller commits on its own thread.
    let builder = || Store::builder().sweep_interval(None);
    let store = builder().open(&path).expect("open");
    execute(&store, "kept", "k1").expect("an operation before the panic");
    inject_panic(PanicSite::Commit, "caller-panics");
    let place = "a commit on the caller's thread panicked";
    assert_poisoned(
        execute(&store, "caller-panics", "k"),
        place,
        "the begin that met the panic",
    );
    assert_store_poisoned(&store, place);
    drop(store);
    reopen_and_find(builder(), &path, "kept", "k1");
}

#[test]
fn a_panic_on_the_folder_thread_poisons_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("folder.idemdb");
    // A fold writes the database: a panic in it leaves idemdb's own state in doubt, so it
    // poisons, on a file verified at open or not (the default; the message then says how
    // to tell damage from a bug).
    let builder = || {
        Store::builder()
            .sweep_interval(None)
            .fold_interval(Duration::from_millis(10))
    };
    let store = builder().open(&path).expect("open");
    inject_panic(PanicSite::Fold, "folder-panics");
    // The commit succeeds; the fold that follows it panics.
    execute(&store, "folder-panics", "k1").expect("the commit before the fold");
    let place = "a fold panicked on thread idemdb-folder";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.get("other", "k") {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            other => {
                assert_poisoned(other, place, "get after the fold");
                break;
            }
        }
    }
    assert_store_poisoned(&store, place);
    drop(store);
    // Nothing was folded or marked clean after the panic: the journal brings it back.
    reopen_and_find(builder(), &path, "folder-panics", "k1");
}

/// An async caller whose commit met the writer's panic is told Poisoned too, as are its
/// later async calls, and the await never holds its thread.
#[test]
fn an_async_caller_meets_the_poison() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("async.idemdb");
    let store = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("open");
    inject_panic(PanicSite::Commit, "async-panics");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let place = "the writer thread panicked";
        let begin = store
            .begin_async("async-panics", "k", Fingerprint::of(b"k"))
            .await;
        assert_poisoned(
            begin.map(|b| b.kind()),
            place,
            "the async begin that met the panic",
        );
        let again = store.begin_async("other", "k", Fingerprint::of(b"k")).await;
        assert_poisoned(again.map(|b| b.kind()), place, "a later async begin");
        assert_poisoned(store.close_async().await, place, "close_async");
    });
}
