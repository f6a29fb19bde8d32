//! A store opened read-only reads everything a writing open reads, refuses every write
//! with `Error::ReadOnly`, shares the file with other readers but not with a writer, and
//! leaves the files byte-for-byte as they were; a refused open writes nothing either.

use std::path::{Path, PathBuf};

use idemdb::{Begin, Error, Fingerprint, RecordState, Store};

fn fp(s: &str) -> Fingerprint {
    Fingerprint::of(s.as_bytes())
}

/// Every file in the store's directory with its bytes: nothing may appear, vanish or change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A store with one completed key, one key in flight and one deleted key, closed.
fn store_with_records(dir: &Path) -> PathBuf {
    let path = dir.join("ro.idemdb");
    let store = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("open");
    let Begin::Execute(claim) = store.begin("s", "done", fp("a")).expect("begin") else {
        panic!("new key")
    };
    claim.complete(b"result").expect("complete");
    let Begin::Execute(claim) = store.begin("s", "running", fp("b")).expect("begin") else {
        panic!("new key")
    };
    let _ticket = claim.detach();
    let Begin::Execute(claim) = store.begin("s", "gone", fp("c")).expect("begin") else {
        panic!("new key")
    };
    claim.complete(b"x").expect("complete");
    assert!(store.delete("s", "gone").expect("delete"));
    store.close().expect("close");
    path
}

fn read_only(path: &Path) -> idemdb::Result<Store> {
    Store::builder().read_only(true).open(path)
}

#[test]
fn a_read_only_store_reads_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = store_with_records(dir.path());
    let before = snapshot(dir.path());

    let store = read_only(&path).expect("read-only open");
    let done = store.get("s", "done").expect("get").expect("present");
    assert!(matches!(done.state(), RecordState::Completed(_)));
    assert!(matches!(
        store
            .get("s", "running")
            .expect("get")
            .expect("present")
            .state(),
        RecordState::InFlight(_)
    ));
    assert!(store.get("s", "gone").expect("get").is_none());
    match store
        .begin("s", "done", fp("a"))
        .expect("a replay needs no write")
    {
        Begin::Replay(replay) => assert_eq!(replay.response, b"result"),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        store
            .begin("s", "done", fp("other"))
            .expect("a conflict needs no write"),
        Begin::Conflict(_)
    ));
    assert_eq!(store.scan(None).expect("scan").count(), 2);
    assert!(store.check().expect("check").is_healthy());
    let _ = store.stats();

    for refused in [
        store.begin("s", "new", fp("n")).map(drop),
        store.delete("s", "done").map(drop),
        store.sweep_now().map(drop),
    ] {
        match refused {
            Err(Error::ReadOnly { path: p, needs }) => {
                assert_eq!(p, path);
                assert!(!needs.is_empty());
            }
            other => panic!("expected Error::ReadOnly, got {other:?}"),
        }
    }
    store.close().expect("close");
    assert!(snapshot(dir.path()) == before, "the files changed");
}

#[test]
fn read_only_opens_share_the_file_and_exclude_a_writer() {
    let dir = tempfile::tempdir().expect("dir");
    let path = store_with_records(dir.path());
    let first = read_only(&path).expect("first reader");
    let second = read_only(&path).expect("a second reader shares the file");
    assert!(matches!(
        Store::builder().sweep_interval(None).open(&path),
        Err(Error::Locked { .. })
    ));
    first.close().expect("close");
    second.close().expect("close");
    let writer = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("writer");
    assert!(matches!(read_only(&path), Err(Error::Locked { .. })));
    writer.close().expect("close");
}

#[test]
fn a_read_only_open_never_creates_a_store() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("none.idemdb");
    assert!(matches!(read_only(&path), Err(Error::Missing { .. })));
    assert!(snapshot(dir.path()).is_empty(), "nothing was created");
}

#[test]
fn refused_opens_write_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, b"somebody's notes, not a store\n").expect("write");
    let newer = store_with_records(dir.path());
    {
        let db = redb::Database::create(&newer).expect("redb");
        let w = db.begin_write().expect("write");
        w.open_table(redb::TableDefinition::<&str, &[u8]>::new("idemdb_meta"))
            .expect("meta")
            .insert("format", &99u32.to_le_bytes()[..])
            .expect("insert");
        w.commit().expect("commit");
    }
    let before = snapshot(dir.path());
    for ro in [true, false] {
        let builder = || Store::builder().read_only(ro).sweep_interval(None);
        assert!(matches!(
            builder().open(&foreign),
            Err(Error::NotAStore { .. })
        ));
        assert!(matches!(
            builder().open(&newer),
            Err(Error::NewerFormat { .. })
        ));
        assert!(
            snapshot(dir.path()) == before,
            "a refused open (read_only {ro}) changed the files"
        );
    }
}

/// A store whose last holder did not fold what it journaled (here: a copy of its files
/// taken while it was open, whose database redb itself has since repaired): a read-only
/// open reads the journal's unfolded records into memory, and writes nothing.
#[test]
fn a_read_only_open_reads_what_the_journal_holds_beyond_the_last_fold() {
    let dir = tempfile::tempdir().expect("dir");
    let live = dir.path().join("live.idemdb");
    let store = Store::builder()
        .sweep_interval(None)
        .fold_interval(std::time::Duration::from_secs(3600))
        .open(&live)
        .expect("open");
    for i in 0..20 {
        let Begin::Execute(claim) = store.begin("s", &format!("k{i}"), fp("a")).expect("begin")
        else {
            panic!("new key")
        };
        claim
            .complete(format!("r{i}").as_bytes())
            .expect("complete");
    }
    let copy_dir = tempfile::tempdir().expect("dir");
    let copy = copy_dir.path().join("copy.idemdb");
    let files = store.files().expect("files");
    std::fs::copy(&files.database, &copy).expect("copy database");
    let mut copy_journal = copy.as_os_str().to_owned();
    copy_journal.push("-journal");
    std::fs::copy(&files.journal, &copy_journal).expect("copy journal");
    store.close().expect("close");
    // redb repairs its own file; idemdb's checkpoint still says the journal is not folded.
    redb::Database::open(&copy)
        .expect("redb repairs the copy")
        .close()
        .expect("close");

    let before = snapshot(copy_dir.path());
    let reader = read_only(&copy).expect("read-only open");
    for i in 0..20 {
        let record = reader
            .get("s", &format!("k{i}"))
            .expect("get")
            .unwrap_or_else(|| panic!("k{i} is read from the journal"));
        assert_eq!(record.response(), Some(format!("r{i}").as_bytes()));
    }
    assert_eq!(reader.scan(None).expect("scan").count(), 20);
    reader.close().expect("close");
    assert!(snapshot(copy_dir.path()) == before, "the files changed");
}
