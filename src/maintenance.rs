//! Offline maintenance of a store file: an integrity check and compaction.
//!
//! Both need the file to themselves: a file another process holds is [`Error::Locked`](crate::Error::Locked).
//! Each first opens the store and closes it again, which replays whatever its journal holds
//! after a crash and folds everything into the database file, and then works on that file
//! directly. Every bad file (missing, empty, foreign, of a newer format, damaged) is the
//! same typed [`Error`](crate::Error) that opening a store gives.
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

use std::path::Path;

use crate::error::Result;
pub use crate::storage::{
    CheckReport, CompactReport, DiscardedTail, JournalReport, MAX_LISTED_PROBLEMS, Problem,
    ProblemKind, Salvage,
};

/// Page cache for the maintenance tools: they read each page about once.
const CACHE_SIZE: usize = 64 * 1024 * 1024;

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

/// Checks the store at `path`: its journal as recovery finds it (frames to replay, a
/// discarded tail, a file cut short), then every page checksum (redb's integrity check;
/// what a crash left unfinished is rolled back, as on any open), then every record (it must
/// decode and carry a framed key) and the expiry index (each entry must match its record,
/// and each expiring record must be indexed).
///
/// Damage is reported, not returned as an error: a damaged database file or journal gives a
/// report whose problems name the file and what is damaged, with
/// [`pages_verified`](CheckReport::pages_verified) false and
/// [`records`](CheckReport::records) counting what can still be read. A file that is not a
/// store, missing, empty or held by another process is an error, as on opening.
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
    let path = path.as_ref();
    crate::storage::check_store(path, CACHE_SIZE, || fold_journal(path))
}

/// Reads every record that can still be decoded from the store at `path` and its journal,
/// writing nothing: the database file is read without page verification (each records
/// table from both ends, up to any damage), then the journal's intact frames newer than
/// the last fold are applied. For getting the records out of a store that no longer opens;
/// the result says what had to be skipped.
pub fn salvage(path: impl AsRef<Path>) -> Result<Salvage> {
    crate::storage::salvage(path.as_ref(), CACHE_SIZE)
}

/// Compacts the store file at `path`, returning the space freed by deleted and swept
/// records to the file system. Verifies the file's checksums first, so a damaged file is
/// refused ([`Error::Corrupt`](crate::Error::Corrupt)) rather than rewritten.
pub fn compact(path: impl AsRef<Path>) -> Result<CompactReport> {
    let path = path.as_ref();
    fold_journal(path)?;
    crate::storage::compact_file(path, CACHE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::storage::{EXPIRY, RECORDS, index_key};
    use crate::time::Timestamp;
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
