//! Offline maintenance of a store file: an integrity check and compaction.
//!
//! Both need the file to themselves: a file another process holds is [`Error::Locked`].
//! Each first opens the store and closes it again, which replays whatever its journal holds
//! after a crash and folds everything into the database file, and then works on that file
//! directly. Every bad file (missing, empty, foreign, of a newer format, damaged) is the
//! same typed [`Error`] that opening a store gives.
//!
//! ```
//! use idemdb::{Fingerprint, Store, maintenance};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("jobs.idemdb");
//! let store = Store::open(&path)?;
//! if let Some(claim) = store.begin("cron", "nightly", Fingerprint::of(b"backup"))?.into_claim() {
//!     claim.complete(b"done")?;
//! }
//! store.close()?;
//!
//! let report = maintenance::check(&path)?;
//! assert!(report.is_healthy());
//! assert_eq!(report.records, 1);
//!
//! let compacted = maintenance::compact(&path)?;
//! assert!(compacted.size_after <= compacted.size_before);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use crate::codec;
use crate::error::{Error, Result};
use crate::key::split_storage_key;
use crate::storage::{
    DEFAULT_GENERATION_KEYS, EXPIRY, Filters, OpenOptions, Opener, RecordsView, corrupt_from_panic,
    index_key, split_index_key,
};
use crate::time::Timestamp;

/// Page cache for the maintenance tools: they read each page about once.
const CACHE_SIZE: usize = 64 * 1024 * 1024;

/// How many problems a [`CheckReport`] lists; it counts all of them.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// A kind of problem [`check`] can find above the page level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record's bytes do not decode: `begin`, `get` and scans report it as corrupt.
    UndecodableRecord,
    /// A record's storage key is not a framed (scope, key) pair.
    MalformedKey,
    /// An expiry-index entry too short to hold an instant.
    MalformedIndexEntry,
    /// An expiry-index entry whose record is missing or sweeps at another instant: harmless
    /// (the sweeper skips it), but a sign of damage.
    DanglingIndexEntry,
    /// A record that should expire but has no expiry-index entry: the sweeper will never
    /// delete it (it still counts as absent once expired).
    UnindexedRecord,
    /// A key held by more than one generation of the records table: which record a read
    /// finds is then arbitrary.
    DuplicateRecord,
    /// A record its generation's key filter does not hold: a lookup of its key may miss it
    /// and treat the key as new.
    UnfilteredRecord,
}

impl ProblemKind {
    /// A short lower-case name, e.g. `undecodable_record`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::UndecodableRecord => "undecodable_record",
            ProblemKind::MalformedKey => "malformed_key",
            ProblemKind::MalformedIndexEntry => "malformed_index_entry",
            ProblemKind::DanglingIndexEntry => "dangling_index_entry",
            ProblemKind::UnindexedRecord => "unindexed_record",
            ProblemKind::DuplicateRecord => "duplicate_record",
            ProblemKind::UnfilteredRecord => "unfiltered_record",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Where and what, in words.
    pub detail: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The file checked.
    pub path: PathBuf,
    /// Records read (expired ones included).
    pub records: u64,
    /// Expiry-index entries read.
    pub index_entries: u64,
    /// How many problems were found in all.
    pub problem_count: u64,
    /// The first [`MAX_LISTED_PROBLEMS`] problems.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub(crate) fn new(path: PathBuf) -> CheckReport {
        CheckReport {
            path,
            records: 0,
            index_entries: 0,
            problem_count: 0,
            problems: Vec::new(),
        }
    }

    /// Whether the file is sound: its pages verified (or [`check`] would have failed), and
    /// no problem in the records or the index.
    pub fn is_healthy(&self) -> bool {
        self.problem_count == 0
    }

    fn add(&mut self, kind: ProblemKind, detail: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(Problem { kind, detail });
        }
    }
}

/// What [`compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// The file's size before, in bytes.
    pub size_before: u64,
    /// The file's size after, in bytes.
    pub size_after: u64,
    /// How many compaction passes moved data (0: the file was already compact).
    pub passes: u32,
}

/// Opens and closes the store: recovery replays its journal, and the orderly close folds
/// every change into the database file, so the tables hold everything.
fn fold_journal(path: &Path) -> Result<()> {
    crate::Store::builder()
        .create_if_missing(false)
        .sweep_interval(None)
        .cache_size(CACHE_SIZE)
        .open(path)?
        .close()
}

fn opener(path: &Path, verify: bool) -> Opener {
    Opener::file(
        path.to_owned(),
        OpenOptions {
            cache_size: CACHE_SIZE,
            verify,
            create: false,
        },
    )
}

/// Runs `f`, reporting a panic inside redb (damaged data) as [`Error::Corrupt`].
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))
}

/// Checks the store file at `path`: every page checksum (redb's integrity check; what a
/// crash left unfinished is rolled back, as on any open), then every record (it must decode and carry a framed key) and the
/// expiry index (each entry must match its record, and each expiring record must be indexed).
///
/// A file damaged beyond repair is `Err(`[`Error::Corrupt`]`)`; problems found in a readable
/// file are listed in the report.
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
    let path = path.as_ref();
    // Opening with verification runs redb's full check (and the repair any open after a
    // crash does) before anything reads the trees, so damaged pages are a typed error,
    // never tripped over.
    fold_journal(path)?;
    let db = opener(path, true).open_database()?;
    let mut report = CheckReport::new(path.to_owned());
    guarded(|| check_tables(&db, &mut report))?;
    db.close().map_err(Error::from_redb)?;
    Ok(report)
}

pub(crate) fn check_tables(db: &redb::Database, report: &mut CheckReport) -> Result<()> {
    // The filters come from the same snapshot as the tables: a fold committing meanwhile
    // (an online check) must not make them disagree.
    let txn = db.begin_read().map_err(Error::from_redb)?;
    let filters = Filters::load_from(&txn, DEFAULT_GENERATION_KEYS)?;
    let records = RecordsView::open(&txn, &filters)?;
    let expiry = txn.open_table(EXPIRY).map_err(Error::from_redb)?;

    for (generation, table) in records.tables() {
        for entry in table.iter().map_err(Error::from_redb)? {
            let (key, value) = entry.map_err(Error::from_redb)?;
            check_record(
                &records,
                &expiry,
                generation,
                key.value(),
                value.value(),
                report,
            )?;
        }
    }

    for entry in expiry.iter().map_err(Error::from_redb)? {
        let (index, _) = entry.map_err(Error::from_redb)?;
        let index = index.value();
        report.index_entries += 1;
        let Some((at, key)) = split_index_key(index) else {
            report.add(
                ProblemKind::MalformedIndexEntry,
                format!("expiry-index entry {} is too short", hex_preview(index)),
            );
            continue;
        };
        let matches = match records.get(key)? {
            // An undecodable record was reported above.
            Some(value) => codec::decode(&value)
                .map(|r| r.sweep_at() == Some(at))
                .unwrap_or(true),
            None => false,
        };
        if !matches {
            report.add(
                ProblemKind::DanglingIndexEntry,
                format!(
                    "expiry-index entry at {} for {} matches no record",
                    Timestamp::as_millis(at),
                    describe_key(key)
                ),
            );
        }
    }
    Ok(())
}

/// Checks one stored record: its key, its bytes, that no other generation holds its key,
/// and its expiry-index entry.
fn check_record(
    records: &RecordsView,
    expiry: &redb::ReadOnlyTable<&'static [u8], ()>,
    generation: u64,
    key: &[u8],
    value: &[u8],
    report: &mut CheckReport,
) -> Result<()> {
    report.records += 1;
    // With every key in its own generation's filter, the filtered lookups below are exact.
    if !records.filter_holds(generation, key) {
        report.add(
            ProblemKind::UnfilteredRecord,
            format!(
                "{} in generation {generation} is missing from its key filter",
                describe_key(key)
            ),
        );
    }
    if records.holders(key)? > 1 {
        report.add(
            ProblemKind::DuplicateRecord,
            format!(
                "{} in generation {generation} is also held by another",
                describe_key(key)
            ),
        );
    }

    let Some((scope, name)) = split_storage_key(key) else {
        report.add(
            ProblemKind::MalformedKey,
            format!("record key {} is not a (scope, key) pair", hex_preview(key)),
        );
        return Ok(());
    };
    let record = match codec::decode(value) {
        Ok(record) => record,
        Err(e) => {
            report.add(
                ProblemKind::UndecodableRecord,
                format!("scope {scope:?} key {name:?}: {e}"),
            );
            return Ok(());
        }
    };
    if let Some(at) = record.sweep_at() {
        let index = index_key(at, key);
        if expiry
            .get(index.as_slice())
            .map_err(Error::from_redb)?
            .is_none()
        {
            report.add(
                ProblemKind::UnindexedRecord,
                format!(
                    "scope {scope:?} key {name:?}: no expiry-index entry for {}",
                    at.as_millis()
                ),
            );
        }
    }
    Ok(())
}

fn describe_key(key: &[u8]) -> String {
    match split_storage_key(key) {
        Some((scope, name)) => format!("scope {scope:?} key {name:?}"),
        None => hex_preview(key),
    }
}

fn hex_preview(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for b in bytes.iter().take(32) {
        out.push_str(&format!("{b:02x}"));
    }
    if bytes.len() > 32 {
        out.push('…');
    }
    out
}

/// Compacts the store file at `path`, returning the space freed by deleted and swept
/// records to the file system. Verifies the file's checksums first, so a damaged file is
/// refused ([`Error::Corrupt`]) rather than rewritten.
pub fn compact(path: impl AsRef<Path>) -> Result<CompactReport> {
    let path = path.as_ref();
    fold_journal(path)?;
    let mut db = opener(path, true).open_database()?;
    let size_before = file_size(path)?;
    // Each pass moves what it can; redb reports when nothing more moved. The bound only
    // guards against a pass that keeps reporting progress.
    let mut passes = 0;
    while passes < 64 {
        let moved = guarded(|| db.compact().map_err(Error::from_redb))?;
        if !moved {
            break;
        }
        passes += 1;
    }
    db.close().map_err(Error::from_redb)?;
    Ok(CompactReport {
        size_before,
        size_after: file_size(path)?,
        passes,
    })
}

fn file_size(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(Error::from_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RECORDS;
    use crate::{Fingerprint, Store};

    #[test]
    fn check_finds_a_healthy_store_healthy_and_compact_shrinks_after_deletes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.idemdb");
        let store = Store::builder()
            .sweep_interval(None)
            .open(&path)
            .expect("open");
        let big = vec![7u8; 64 * 1024];
        for i in 0..40 {
            let key = format!("k{i}");
            let claim = store
                .begin("s", &key, Fingerprint::of(key.as_bytes()))
                .expect("begin")
                .into_claim()
                .expect("execute");
            claim.complete(&big).expect("complete");
        }
        for i in 0..40 {
            store.delete("s", &format!("k{i}")).expect("delete");
        }
        store.close().expect("close");

        let report = check(&path).expect("check");
        assert!(report.is_healthy(), "{report:?}");
        assert_eq!(report.records, 0);

        let compacted = compact(&path).expect("compact");
        assert!(
            compacted.size_after < compacted.size_before,
            "{compacted:?}"
        );
        assert!(check(&path).expect("check again").is_healthy());
    }

    #[test]
    fn check_reports_damaged_records_and_index_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("damaged.idemdb");
        let store = Store::open(&path).expect("open");
        let claim = store
            .begin("s", "good", Fingerprint::of(b"x"))
            .expect("begin")
            .into_claim()
            .expect("execute");
        claim.complete(b"ok").expect("complete");
        store.close().expect("close");

        // Damage the tables the way a bug or a foreign writer could.
        let db = redb::Database::open(&path).expect("open redb");
        let write = db.begin_write().expect("write");
        {
            let mut records = write.open_table(RECORDS).expect("records");
            let bad_key = crate::key::storage_key("s", "bad");
            records
                .insert(bad_key.as_slice(), &b"\x01garbage"[..])
                .expect("insert");
            records.insert(&[0xffu8][..], &b""[..]).expect("insert");
            let mut expiry = write.open_table(EXPIRY).expect("expiry");
            let orphan = index_key(Timestamp::from_millis(5), b"\x01sgone");
            expiry.insert(orphan.as_slice(), ()).expect("insert");
            expiry.insert(&b"abc"[..], ()).expect("insert");
        }
        write.commit().expect("commit");
        db.close().expect("close redb");

        let report = check(&path).expect("check");
        assert!(!report.is_healthy());
        assert_eq!(report.records, 3);
        let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
        assert!(kinds.contains(&ProblemKind::UndecodableRecord), "{kinds:?}");
        assert!(kinds.contains(&ProblemKind::MalformedKey), "{kinds:?}");
        assert!(
            kinds.contains(&ProblemKind::DanglingIndexEntry),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&ProblemKind::MalformedIndexEntry),
            "{kinds:?}"
        );
        assert_eq!(report.problem_count, 4);
    }

    #[test]
    fn check_and_compact_refuse_a_held_or_missing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("held.idemdb");
        let store = Store::open(&path).expect("open");
        assert!(matches!(check(&path), Err(Error::Locked { .. })));
        assert!(matches!(compact(&path), Err(Error::Locked { .. })));
        store.close().expect("close");
        let missing = dir.path().join("missing.idemdb");
        assert!(matches!(check(&missing), Err(Error::Missing { .. })));
        assert!(!missing.exists(), "check must not create a store");
    }
}
