//! Short-process sessions (`StoreBuilder::short_process`): one operation per open, as the
//! command line works. The database file is not written by such a session, yet every
//! acknowledged operation survives a crash at any point, and once the journal holds a
//! quarter of its size a session folds it into the database file for real.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idemdb::{Fingerprint, Store, StoreBuilder};

fn short() -> StoreBuilder {
    Store::builder()
        .sweep_interval(None)
        .short_process(true)
        .fold_interval(Duration::from_millis(10))
}

fn journal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

fn record(store: &Store, key: &str, response: &[u8]) {
    let claim = store
        .begin("s", key, Fingerprint::of(key.as_bytes()))
        .expect("begin")
        .into_claim()
        .expect("a new key executes");
    claim.complete(response).expect("complete");
}

/// Copies both files of the store at `from` to `to`, as a crash at this instant leaves them.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy the database file");
    std::fs::copy(journal_of(from), journal_of(to)).expect("copy the journal");
}

#[test]
fn short_sessions_leave_the_database_file_alone_and_lose_nothing_in_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.idemdb");
    // The first session creates the store: it writes the database file.
    let store = short().open(&path).expect("create");
    record(&store, "k0", b"r0");
    store.close().expect("close");
    let database = std::fs::read(&path).expect("read");

    for i in 1..30 {
        let store = short().open(&path).expect("open");
        // Earlier sessions' results are there, from the journal.
        for j in 0..i {
            let got = store.get("s", &format!("k{j}")).expect("get");
            assert!(got.is_some(), "session {i}: k{j} missing");
        }
        record(&store, &format!("k{i}"), format!("r{i}").as_bytes());
        std::thread::sleep(Duration::from_millis(20)); // let a fold run (in memory)
        if i % 10 == 5 {
            let image = dir.path().join(format!("crash-{i}.idemdb"));
            crash_copy(&path, &image);
            let reopened = Store::builder()
                .sweep_interval(None)
                .open(&image)
                .expect("a crash image opens");
            for j in 0..=i {
                let got = reopened
                    .get("s", &format!("k{j}"))
                    .expect("get")
                    .unwrap_or_else(|| panic!("crash at session {i}: k{j} lost"));
                assert_eq!(got.response(), Some(format!("r{j}").as_bytes()));
            }
            reopened.close().expect("close");
        }
        store.close().expect("close");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            database,
            "session {i} wrote the database file"
        );
    }
}

#[test]
fn a_short_session_folds_for_real_once_the_journal_is_a_quarter_full() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("f.idemdb");
    let open = || {
        short()
            .journal_size(1024 * 1024)
            .max_response_size(64 * 1024)
            .open(&path)
            .expect("open")
    };
    let store = open();
    store.close().expect("close");
    let created = std::fs::read(&path).expect("read");
    let big = vec![7u8; 20_000];
    let mut folded_at = None;
    for i in 0..40 {
        let store = open();
        record(&store, &format!("k{i}"), &big);
        store.close().expect("close");
        if folded_at.is_none() && std::fs::read(&path).expect("read") != created {
            folded_at = Some(i);
        }
    }
    let folded_at = folded_at.expect("a session folded into the database file");
    // A quarter of 1 MiB is about 13 frames of 20 kB.
    assert!(
        (8..30).contains(&folded_at),
        "folded at session {folded_at}"
    );
    let store = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("open");
    for i in 0..40 {
        let got = store
            .get("s", &format!("k{i}"))
            .expect("get")
            .expect("kept");
        assert_eq!(got.response(), Some(&big[..]));
    }
    store.close().expect("close");
}

#[test]
fn a_short_session_after_a_crash_of_a_writing_session_repairs_for_real() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.idemdb");
    let store = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("open");
    record(&store, "a", b"1");
    let image = dir.path().join("image.idemdb");
    crash_copy(&path, &image);
    store.close().expect("close");

    let store = short().open(&image).expect("open the crash image");
    assert!(store.get("s", "a").expect("get").is_some());
    record(&store, "b", b"2");
    store.close().expect("close");
    let store = short().open(&image).expect("open again");
    assert!(store.get("s", "a").expect("get").is_some());
    assert!(store.get("s", "b").expect("get").is_some());
    store.close().expect("close");
}

#[test]
fn a_short_session_refuses_a_journal_with_a_damaged_frame_before_intact_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("d.idemdb");
    for i in 0..12 {
        let store = short().open(&path).expect("open");
        record(&store, &format!("k{i}"), &[i as u8; 700]);
        store.close().expect("close");
    }
    let journal = journal_of(&path);
    let mut bytes = std::fs::read(&journal).expect("journal");
    let frames: Vec<usize> = (4096..bytes.len())
        .step_by(512)
        .filter(|&at| bytes[at..].starts_with(b"IDJF"))
        .collect();
    // Damage a frame in the middle: its payload, and in another copy its header.
    let middle = frames[frames.len() / 2];
    for (name, at) in [("payload", middle + 100), ("header", middle + 8)] {
        let mut damaged = bytes.clone();
        for b in &mut damaged[at..at + 16] {
            *b ^= 0x5a;
        }
        std::fs::write(&journal, &damaged).expect("damage");
        match short().open(&path) {
            Err(idemdb::Error::Corrupt { detail }) => {
                assert!(detail.contains("intact"), "{name}: {detail}")
            }
            other => panic!("{name}: a damaged acknowledged frame must be refused: {other:?}"),
        }
    }
    std::fs::write(&journal, &bytes).expect("restore");
    bytes.clear();
    let store = short().open(&path).expect("the undamaged journal opens");
    assert!(store.get("s", "k11").expect("get").is_some());
    store.close().expect("close");
}

#[test]
fn a_short_session_blocking_on_the_lock_waits_for_the_holder_to_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("held.idemdb");
    // Two sessions: the second finds an unclean checkpoint, so later short sessions read
    // the file through the overlay.
    for key in ["a", "b"] {
        let store = short().open(&path).expect("open");
        record(&store, key, b"1");
        store.close().expect("close");
    }
    let holders: [(&str, StoreBuilder); 2] = [
        ("a short session", short()),
        ("a writing session", Store::builder().sweep_interval(None)),
    ];
    for (holding, builder) in holders {
        let holder = builder.open(&path).expect("holder");
        assert!(
            matches!(short().open(&path), Err(idemdb::Error::Locked { .. })),
            "{holding}: an open that does not wait is refused"
        );
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || short().block_on_lock(true).open(&waiter_path));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !waiter.is_finished(),
            "{holding}: the waiter waits while the store is held"
        );
        holder.close().expect("close");
        let store = waiter
            .join()
            .expect("thread")
            .unwrap_or_else(|e| panic!("{holding}: the waiter opens the store: {e}"));
        assert!(store.get("s", "b").expect("get").is_some());
        store.close().expect("close");
    }
}

/// The format the store's meta table records, read straight from the file.
fn format_of(path: &Path) -> Vec<u8> {
    let db = redb::Database::create(path).expect("redb");
    let read = redb::ReadableDatabase::begin_read(&db).expect("read");
    let meta = read
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("idemdb_meta"))
        .expect("meta");
    meta.get("format")
        .expect("get")
        .expect("format")
        .value()
        .to_vec()
}

#[test]
fn a_short_session_upgrades_an_older_format_on_disk_not_in_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.idemdb");
    for key in ["a", "b"] {
        let store = short().open(&path).expect("open");
        record(&store, key, b"1");
        store.close().expect("close");
    }
    // What the previous format left: no generations table, format 2 (the checkpoint still
    // says the journal holds what was not folded, which would let the overlay serve it).
    {
        let db = redb::Database::create(&path).expect("redb");
        let write = db.begin_write().expect("write");
        assert!(
            write
                .delete_table(redb::TableDefinition::<u64, &[u8]>::new(
                    "idemdb_generations"
                ))
                .expect("delete")
        );
        write
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("idemdb_meta"))
            .expect("meta")
            .insert("format", &2u32.to_le_bytes()[..])
            .expect("insert");
        write.commit().expect("commit");
    }
    let store = short().open(&path).expect("open the older format");
    assert!(store.get("s", "a").expect("get").is_some());
    assert!(store.get("s", "b").expect("get").is_some());
    store.close().expect("close");
    assert_eq!(
        format_of(&path),
        3u32.to_le_bytes(),
        "the upgrade reached the file, so no later process repeats it"
    );
}

#[test]
fn a_read_only_open_sees_what_short_sessions_left_in_the_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("r.idemdb");
    for i in 0..5 {
        let store = short().open(&path).expect("open");
        record(&store, &format!("k{i}"), format!("r{i}").as_bytes());
        store.close().expect("close");
    }
    let database = std::fs::read(&path).expect("read");
    let journal = std::fs::read(journal_of(&path)).expect("read");
    let reader = Store::builder()
        .read_only(true)
        .open(&path)
        .expect("read-only");
    for i in 0..5 {
        let got = reader
            .get("s", &format!("k{i}"))
            .expect("get")
            .unwrap_or_else(|| panic!("k{i} missing"));
        assert_eq!(got.response(), Some(format!("r{i}").as_bytes()));
    }
    reader.close().expect("close");
    assert_eq!(std::fs::read(&path).expect("read"), database);
    assert_eq!(std::fs::read(journal_of(&path)).expect("read"), journal);
}
