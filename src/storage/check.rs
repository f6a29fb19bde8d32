//! The integrity check of the tables: every record must decode, carry a framed key, sit in
//! its generation's key filter and in no other generation, and be indexed for expiry where
//! it expires; every expiry-index entry must match its record. Used offline by
//! `maintenance::check` and online by [`Engine::check`](crate::storage::Engine::check).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use crate::codec;
use crate::error::{Error, Result};
use crate::key::split_storage_key;
use crate::storage::generations::{DEFAULT_GENERATION_KEYS, Filters, RecordsView};
use crate::storage::journal::Journal;
use crate::storage::journal::file::{JournalFile, journal_path};
use crate::storage::open::{OpenOptions, Opener, corrupt_from_panic};
use crate::storage::poison::panic_message;
use crate::storage::salvage::{open_read_only, read_checkpoint};
use crate::storage::tables::{EXPIRY, index_key, split_index_key};
use crate::time::Timestamp;

/// How many problems a [`CheckReport`] lists; it counts all of them.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// A kind of problem [`check`](crate::maintenance::check) can find above the page level.
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
    /// The database file is damaged: its pages do not verify, or it cannot be opened. The
    /// detail names the file and what failed.
    DamagedFile,
    /// The journal ends in frames that do not verify: an append a crash cut short (never
    /// acknowledged), or damage. They were not replayed.
    DiscardedJournalTail,
    /// The journal file is shorter than the extent its header records: it was cut short,
    /// and acknowledged frames after its end are lost.
    JournalCutShort,
    /// An intact journal frame lies after a damaged one: an acknowledged frame was damaged.
    DamagedJournalFrame,
    /// The journal cannot be read at all (missing while needed, or its header is damaged).
    UnreadableJournal,
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
            ProblemKind::DamagedFile => "damaged_file",
            ProblemKind::DiscardedJournalTail => "discarded_journal_tail",
            ProblemKind::JournalCutShort => "journal_cut_short",
            ProblemKind::DamagedJournalFrame => "damaged_journal_frame",
            ProblemKind::UnreadableJournal => "unreadable_journal",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found by [`check`](crate::maintenance::check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Where and what, in words.
    pub detail: String,
}

/// Frames at the end of the journal that recovery could not replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscardedTail {
    /// Where the first of them starts in the journal file.
    pub offset: u64,
    /// How many frames (counted by their headers; a frame whose header is damaged ends the
    /// count).
    pub frames: u64,
    /// The bytes they span.
    pub bytes: u64,
}

/// The journal beside a checked store, as recovery finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalReport {
    /// The journal file.
    pub path: PathBuf,
    /// Intact frames not yet folded into the database file (replayed by the next open).
    pub frames: u64,
    /// Frames at the end that do not verify, if any.
    pub discarded_tail: Option<DiscardedTail>,
    /// Whether the file is shorter than its recorded extent.
    pub cut_short: bool,
}

/// What [`check`](crate::maintenance::check) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The file checked.
    pub path: PathBuf,
    /// Whether every page of the database file verified. When not, `records` counts the
    /// records that could still be read (see [`salvage`](crate::maintenance::salvage)).
    pub pages_verified: bool,
    /// The journal, when the store has one and it could be read.
    pub journal: Option<JournalReport>,
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
            pages_verified: true,
            journal: None,
            records: 0,
            index_entries: 0,
            problem_count: 0,
            problems: Vec::new(),
        }
    }

    /// Whether the store is sound: its pages verified, its journal intact, and no problem
    /// in the records or the index.
    pub fn is_healthy(&self) -> bool {
        self.problem_count == 0
    }

    pub(crate) fn add(&mut self, kind: ProblemKind, detail: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(Problem { kind, detail });
        }
    }
}

/// Runs `f` on a file opened with every page verified (see [`open_verified`]): a panic
/// then is not damage but a bug, reported as [`Error::Internal`] rather than unwinding into
/// the caller.
pub(crate) fn guarded<T>(doing: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::Internal {
            detail: format!("{doing} panicked: {}", panic_message(panic.as_ref())),
        })
    })
}

/// Runs `f` on a file that was never verified (a read-only look before the check, or a
/// salvage): a panic inside redb is then likely damage, reported as [`Error::Corrupt`].
pub(crate) fn guarded_unverified<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))
}

/// Checks the store at `path` (which nothing else holds): first its journal, read-only, as
/// recovery will find it; then `fold` (an open and orderly close, which replays the journal);
/// then every page and table of the database file. Damage is reported, not returned as an
/// error: the report then says what is damaged and how many records can still be read.
pub(crate) fn check_store(
    path: &Path,
    cache_size: usize,
    fold: impl FnOnce() -> Result<()>,
) -> Result<CheckReport> {
    let mut report = CheckReport::new(path.to_owned());
    inspect_journal(path, cache_size, &mut report)?;
    let journal_damaged = report.problem_count > 0;
    let checked = fold().and_then(|()| {
        let db = open_verified(path, cache_size)?;
        guarded("checking the tables", || check_tables(&db, &mut report))?;
        db.close().map_err(Error::from_redb)
    });
    match checked {
        Ok(()) => Ok(report),
        Err(Error::Corrupt { detail }) => {
            // The open failed on the journal's damage, already reported; otherwise on the
            // database file's.
            if !journal_damaged {
                let named = if detail.contains(&path.display().to_string()) {
                    detail
                } else {
                    format!("{}: {detail}", path.display())
                };
                report.add(ProblemKind::DamagedFile, named);
            }
            report.pages_verified = false;
            let readable = crate::storage::salvage(path, cache_size)?;
            report.records = readable.entries.len() as u64 + readable.skipped_records;
            report.index_entries = 0;
            for skipped in readable.skipped {
                report.add(ProblemKind::DamagedFile, skipped);
            }
            if readable.skipped_records > 0 {
                report.add(
                    ProblemKind::UndecodableRecord,
                    format!(
                        "{} records are found but cannot be decoded",
                        readable.skipped_records
                    ),
                );
            }
            Ok(report)
        }
        Err(e) => Err(e),
    }
}

/// Reports the journal as recovery will find it, reading both files without writing.
fn inspect_journal(path: &Path, cache_size: usize, report: &mut CheckReport) -> Result<()> {
    let checkpoint = match open_read_only(path, cache_size) {
        Ok(db) => {
            let checkpoint = guarded_unverified(|| read_checkpoint(&db));
            db.close()?;
            // An unreadable checkpoint is the database file's damage: the open reports it.
            checkpoint.ok().flatten()
        }
        // Refusals that the open would give anyway are given now, before anything writes.
        Err(
            e @ (Error::Locked { .. }
            | Error::Missing { .. }
            | Error::NotAStore { .. }
            | Error::NotAFile { .. }),
        ) => {
            return Err(e);
        }
        Err(Error::EmptyFile { path }) => return Err(Error::EmptyFile { path }),
        // A file that needs repair after a crash, or is damaged: the open sorts it out.
        Err(_) => None,
    };
    let Some(cp) = checkpoint else {
        return Ok(());
    };
    let journal = journal_path(path);
    let present = std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0);
    if !present {
        if !cp.clean {
            report.add(
                ProblemKind::UnreadableJournal,
                format!(
                    "{}: missing, but the store was not closed cleanly: the operations acknowledged since the last fold are lost",
                    journal.display()
                ),
            );
        }
        return Ok(());
    }
    let io = JournalFile::open_read_only(&journal).map_err(Error::from_io)?;
    let header = match Journal::read_header(&io) {
        Ok(header) => header,
        Err(e) => {
            if !cp.clean {
                report.add(
                    ProblemKind::UnreadableJournal,
                    format!("{}: {e}", journal.display()),
                );
            }
            return Ok(());
        }
    };
    if header.journal_id != cp.journal_id {
        if !cp.clean {
            report.add(
                ProblemKind::UnreadableJournal,
                format!("{}: it belongs to another store", journal.display()),
            );
        }
        return Ok(());
    }
    let found = match Journal::inspect(&io, &header, cp.tail, cp.folded_lsn) {
        Ok(found) => found,
        Err(e) => {
            report.add(
                ProblemKind::UnreadableJournal,
                format!("{}: {e}", journal.display()),
            );
            return Ok(());
        }
    };
    if let Some(cut) = found.cut_short {
        report.add(
            ProblemKind::JournalCutShort,
            format!(
                "{}: the file is {} bytes but was preallocated to {} bytes: it was cut short, and whatever was acknowledged after offset {} is lost ({} frames before it are intact)",
                journal.display(),
                cut.len,
                cut.extent,
                cut.len,
                found.frames.len()
            ),
        );
    }
    if let Some(tail) = found.discarded {
        report.add(
            ProblemKind::DiscardedJournalTail,
            format!(
                "{}: {} frames ({} bytes) at offset {} do not verify and are discarded: an append a crash cut short, or damage",
                journal.display(),
                tail.frames,
                tail.bytes,
                tail.offset
            ),
        );
    }
    if let Some(lost) = found.intact_after_damage {
        report.add(
            ProblemKind::DamagedJournalFrame,
            format!(
                "{}: the frames end at offset {}, but frame {} at offset {} is intact: an acknowledged frame between them is damaged",
                journal.display(),
                found.end,
                lost.lsn,
                lost.offset
            ),
        );
    }
    report.journal = Some(JournalReport {
        path: journal,
        frames: found.frames.len() as u64,
        discarded_tail: found.discarded.map(|t| DiscardedTail {
            offset: t.offset,
            frames: t.frames,
            bytes: t.bytes,
        }),
        cut_short: found.cut_short.is_some(),
    });
    Ok(())
}

/// Opens the database file at `path` for offline work, verifying every page checksum first
/// (and rolling back what a crash left unfinished), so damaged pages are a typed error
/// before anything reads the trees.
pub(crate) fn open_verified(path: &Path, cache_size: usize) -> Result<redb::Database> {
    Opener::file(
        path.to_owned(),
        OpenOptions {
            cache_size,
            verify: true,
            create: false,
            defer_folds: false,
            read_only: false,
            block_on_lock: false,
        },
    )
    .open_database()
}

pub(crate) fn check_tables(db: &redb::Database, report: &mut CheckReport) -> Result<()> {
    check_readable_tables(db, report)
}

/// [`check_tables`] of a database opened writable or read-only.
pub(crate) fn check_readable_tables(
    db: &impl ReadableDatabase,
    report: &mut CheckReport,
) -> Result<()> {
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
