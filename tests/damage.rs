//! Damage to a store's files is reported and survivable: a journal cut short or with a
//! damaged frame, a store file missing beside its journal, a damaged store file. Each is
//! named by `check` (with the file and what can still be read), and `salvage` gets every
//! decodable record out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idemdb::maintenance::{self, ProblemKind};
use idemdb::{Error, Fingerprint, Store};

/// The response stored under key `k{i}`: distinctive bytes, easy to find in the files.
fn response(i: usize) -> Vec<u8> {
    format!("response-{i:05}-")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(600)
        .collect()
}

fn journal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

fn write_records(store: &Store, range: std::ops::Range<usize>) {
    for i in range {
        let key = format!("k{i}");
        let claim = store
            .begin("s", &key, Fingerprint::of(key.as_bytes()))
            .expect("begin")
            .into_claim()
            .expect("a new key executes");
        claim.complete(response(i)).expect("complete");
    }
}

/// The files of a store as a crash leaves them: `folded` records closed into the database
/// file, then `journaled` more acknowledged only in the journal (no fold before the copy).
fn crash_image(folded: usize, journaled: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let live = dir.path().join("live.idemdb");
    let open = || {
        Store::builder()
            .sweep_interval(None)
            .fold_interval(Duration::from_secs(3600))
            .open(&live)
            .expect("open")
    };
    let store = open();
    write_records(&store, 0..folded);
    store.close().expect("close");
    let store = open();
    write_records(&store, folded..folded + journaled);
    let path = dir.path().join("crashed.idemdb");
    std::fs::copy(&live, &path).expect("copy the database file");
    std::fs::copy(journal_of(&live), journal_of(&path)).expect("copy the journal");
    store.close().expect("close");
    (dir, path)
}

/// Offsets of every frame in a journal file, in file order (frames start on 512-byte
/// boundaries with the magic "IDJF").
fn frame_offsets(journal: &[u8]) -> Vec<usize> {
    (4096..journal.len())
        .step_by(512)
        .filter(|&at| journal[at..].starts_with(b"IDJF"))
        .collect()
}

fn flip(bytes: &mut [u8], at: usize, n: usize) {
    for b in &mut bytes[at..at + n] {
        *b ^= 0x5a;
    }
}

fn kinds(report: &maintenance::CheckReport) -> Vec<ProblemKind> {
    report.problems.iter().map(|p| p.kind).collect()
}

fn salvaged_keys(salvage: &maintenance::Salvage) -> Vec<String> {
    salvage.entries.iter().map(|e| e.key.clone()).collect()
}

#[test]
fn a_journal_cut_short_is_refused_reported_and_salvaged() {
    let (_dir, path) = crash_image(0, 300);
    let journal = journal_of(&path);
    let len = std::fs::metadata(&journal).expect("journal").len();
    assert!(len > 290_000, "the journal holds the 300 records: {len}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .and_then(|f| f.set_len(290_000))
        .expect("cut the journal");

    match Store::open(&path) {
        Err(Error::Corrupt { detail }) => {
            assert!(detail.contains("cut short"), "{detail}");
            assert!(detail.contains(&journal.display().to_string()), "{detail}");
        }
        other => panic!("a journal cut short must be refused: {other:?}"),
    }

    let report = maintenance::check(&path).expect("check reports");
    assert!(!report.is_healthy());
    assert!(
        kinds(&report).contains(&ProblemKind::JournalCutShort),
        "{report:?}"
    );
    let journal_report = report.journal.as_ref().expect("journal report");
    assert!(journal_report.cut_short);
    assert!(journal_report.frames > 0 && journal_report.frames < 600);

    let salvage = maintenance::salvage(&path).expect("salvage");
    let keys = salvaged_keys(&salvage);
    assert!(!keys.is_empty() && keys.len() < 300, "{}", keys.len());
    for entry in &salvage.entries {
        let i: usize = entry.key[1..].parse().expect("k{i}");
        if let Some(r) = entry.record.response() {
            assert_eq!(r, &response(i)[..]);
        }
    }
    assert!(
        salvage.skipped.iter().any(|s| s.contains("preallocated")),
        "{:?}",
        salvage.skipped
    );
}

#[test]
fn a_damaged_last_frame_is_reported_as_a_discarded_tail() {
    let (_dir, path) = crash_image(0, 300);
    let journal = journal_of(&path);
    let mut bytes = std::fs::read(&journal).expect("journal");
    let last = *frame_offsets(&bytes).last().expect("frames");
    flip(&mut bytes, last + 200, 4);
    std::fs::write(&journal, &bytes).expect("damage the last frame");

    let report = maintenance::check(&path).expect("check");
    assert!(!report.is_healthy(), "{report:?}");
    assert!(
        kinds(&report).contains(&ProblemKind::DiscardedJournalTail),
        "{report:?}"
    );
    let tail = report
        .journal
        .as_ref()
        .and_then(|j| j.discarded_tail)
        .expect("a discarded tail");
    assert_eq!((tail.offset, tail.frames), (last as u64, 1));
    assert!(tail.bytes >= 512, "{tail:?}");
    // What a torn append leaves is survivable: the store opens (the discarded completion is
    // an in-flight claim again, as after a crash mid-append).
    let store = Store::open(&path).expect("the store still opens");
    assert!(store.get("s", "k0").expect("get").is_some());
    store.close().expect("close");
}

#[test]
fn a_damaged_frame_in_the_middle_is_reported_and_its_neighbours_salvaged() {
    let (_dir, path) = crash_image(100, 200);
    let journal = journal_of(&path);
    let mut bytes = std::fs::read(&journal).expect("journal");
    let frames = frame_offsets(&bytes);
    let middle = frames[frames.len() / 2];
    flip(&mut bytes, middle + 100, 16);
    std::fs::write(&journal, &bytes).expect("damage a frame");

    assert!(matches!(Store::open(&path), Err(Error::Corrupt { .. })));
    let report = maintenance::check(&path).expect("check reports");
    assert!(
        kinds(&report).contains(&ProblemKind::DamagedJournalFrame),
        "{report:?}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.detail.contains(&journal.display().to_string())),
        "{report:?}"
    );

    let salvage = maintenance::salvage(&path).expect("salvage");
    let keys = salvaged_keys(&salvage);
    // Everything folded, and every journaled record but the damaged frame's.
    assert!(keys.len() >= 299, "{} of 300", keys.len());
    for i in (0..100).chain(250..300) {
        assert!(keys.contains(&format!("k{i}")), "k{i} salvaged");
    }
    assert!(!salvage.skipped.is_empty());
}

#[test]
fn a_store_file_missing_beside_its_journal_is_refused_not_recreated() {
    let (_dir, path) = crash_image(0, 20);
    let journal = journal_of(&path);
    let before = std::fs::read(&journal).expect("journal");
    std::fs::remove_file(&path).expect("delete the store file");

    match Store::open(&path) {
        Err(Error::Corrupt { detail }) => {
            assert!(detail.contains(&path.display().to_string()), "{detail}");
            assert!(detail.contains("missing"), "{detail}");
            assert!(detail.contains("removing the journal"), "{detail}");
        }
        other => panic!("must be refused: {other:?}"),
    }
    assert!(!path.exists(), "no new store file");
    assert_eq!(std::fs::read(&journal).expect("journal"), before);

    // The journal's records can still be got out.
    let salvage = maintenance::salvage(&path).expect("salvage");
    assert_eq!(salvage.entries.len(), 20, "{:?}", salvage.skipped);
}

#[test]
fn every_kind_of_open_refuses_a_store_file_missing_beside_its_journal() {
    let (dir, path) = crash_image(0, 20);
    let journal = journal_of(&path);
    let before = std::fs::read(&journal).expect("journal");
    std::fs::remove_file(&path).expect("delete the store file");

    let builders = [
        ("a short-process open", Store::builder().short_process(true)),
        ("a read-only open", Store::builder().read_only(true)),
        (
            "an open that waits for the lock",
            Store::builder().block_on_lock(true),
        ),
    ];
    for (kind, builder) in builders {
        match builder.sweep_interval(None).open(&path) {
            Err(Error::Corrupt { detail }) => {
                assert!(detail.contains("missing"), "{kind}: {detail}");
                assert!(detail.contains("removing the journal"), "{kind}: {detail}");
            }
            other => panic!("{kind} must be refused: {other:?}"),
        }
        assert!(!path.exists(), "{kind}: no new store file");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".creating-")),
            "{kind}: no store was built beside it: {names:?}"
        );
        assert_eq!(std::fs::read(&journal).expect("journal"), before, "{kind}");
    }
}

/// A clean store of 2,000 records with 16 bytes of one record's leaf page changed.
fn damaged_store_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("d.idemdb");
    let store = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("open");
    write_records(&store, 0..2000);
    store.close().expect("close");
    let mut bytes = std::fs::read(&path).expect("read");
    let needle = b"response-01000-";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record is in the file");
    flip(&mut bytes, at, 16);
    std::fs::write(&path, &bytes).expect("damage");
    (dir, path)
}

#[test]
fn a_damaged_store_file_is_reported_with_the_records_still_readable() {
    let (_dir, path) = damaged_store_file();
    let report = maintenance::check(&path).expect("check reports damage");
    assert!(!report.is_healthy());
    assert!(!report.pages_verified);
    let damaged: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::DamagedFile)
        .collect();
    assert!(!damaged.is_empty(), "{report:?}");
    assert!(
        damaged
            .iter()
            .any(|p| p.detail.contains(&path.display().to_string())),
        "{damaged:?}"
    );
    assert_eq!(report.records, 2000, "every record is still readable");
}

#[test]
fn a_store_with_a_damaged_page_still_opens_and_serves_its_other_keys() {
    let (_dir, path) = damaged_store_file();
    let store = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("a normal open does not verify every page");
    let record = store.get("s", "k5").expect("get").expect("k5");
    assert_eq!(record.response(), Some(&response(5)[..]));
    write_records(&store, 5000..5001);
    store.close().expect("close");
    let salvage = maintenance::salvage(&path).expect("salvage");
    assert_eq!(salvage.entries.len(), 2001);
}
