//! Reading what can still be read from a damaged store: its database file read-only and
//! without page verification, each records table from both ends up to the damage, and the
//! journal's intact frames on top. Nothing is written to either file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use redb::backends::FileBackend;

use crate::codec;
use crate::error::{Error, Result};
use crate::key::split_storage_key;
use crate::scan::ScanEntry;
use crate::storage::check::guarded_unverified;
use crate::storage::journal::file::{JournalFile, journal_path};
use crate::storage::journal::{Inspection, Journal};
use crate::storage::open::OpenOptions;
use crate::storage::overlay::OverlayBackend;
use crate::storage::store_file;
use crate::storage::tables::{self, Checkpoint};

/// What [`salvage`](crate::maintenance::salvage) read from a store and what it had to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Salvage {
    /// The database file.
    pub path: PathBuf,
    /// Every record that could be decoded, in key order (expired ones included), with the
    /// journal's unfolded changes applied.
    pub entries: Vec<ScanEntry>,
    /// Records found but not decodable (their key or their bytes are damaged).
    pub skipped_records: u64,
    /// What could not be read, in words: each names the file and the part of it.
    pub skipped: Vec<String>,
    /// Records taken from the journal (changes not yet folded into the database file).
    pub from_journal: u64,
}

/// Reads every record that can still be decoded from the store at `path` and its journal.
pub(crate) fn salvage(path: &Path, cache_size: usize) -> Result<Salvage> {
    let mut out = Salvage {
        path: path.to_owned(),
        entries: Vec::new(),
        skipped_records: 0,
        skipped: Vec::new(),
        from_journal: 0,
    };
    let mut raw: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let checkpoint = match open_read_only(path, cache_size) {
        Ok(db) => {
            let checkpoint = guarded_unverified(|| read_checkpoint(&db));
            read_tables(&db, path, &mut raw, &mut out.skipped);
            checkpoint.unwrap_or_else(|e| {
                out.skipped
                    .push(format!("{}: the journal checkpoint: {e}", path.display()));
                None
            })
        }
        Err(Error::Missing { .. }) => {
            out.skipped
                .push(format!("{}: the store file is missing", path.display()));
            None
        }
        Err(e @ Error::Locked { .. }) => return Err(e),
        Err(e) => {
            out.skipped
                .push(format!("{}: unreadable: {e}", path.display()));
            None
        }
    };
    out.from_journal = apply_journal(path, checkpoint, &mut raw, &mut out.skipped);
    for (key, value) in raw {
        let Some((scope, name)) = split_storage_key(&key) else {
            out.skipped_records += 1;
            continue;
        };
        match codec::decode(&value) {
            Ok(record) => out.entries.push(ScanEntry {
                scope: scope.to_owned(),
                key: name.to_owned(),
                record,
            }),
            Err(_) => out.skipped_records += 1,
        }
    }
    Ok(out)
}

/// The database file opened for reading only.
pub(crate) enum ReadOnly {
    /// A cleanly closed file, as redb reads it read-only.
    Clean(redb::ReadOnlyDatabase),
    /// A file a crash left needing repair: repaired in memory, never on disk.
    Repaired(redb::Database),
}

impl ReadOnly {
    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        match self {
            ReadOnly::Clean(db) => db.begin_read(),
            ReadOnly::Repaired(db) => db.begin_read(),
        }
        .map_err(Error::from_redb)
    }

    pub(crate) fn close(self) -> Result<()> {
        match self {
            ReadOnly::Clean(db) => db.close(),
            // Dropped, not closed: closing would write the allocator state (to memory).
            ReadOnly::Repaired(db) => {
                drop(db);
                Ok(())
            }
        }
        .map_err(Error::from_redb)
    }
}

/// Opens the database file without writing to it and without verifying its pages, under
/// a shared lock taken before the file is judged. A file that needs repair (a crash left
/// it open) is repaired in memory only, on the same locked file.
pub(crate) fn open_read_only(path: &Path, cache_size: usize) -> Result<ReadOnly> {
    let options = OpenOptions {
        cache_size,
        verify: false,
        create: false,
        defer_folds: false,
        read_only: true,
        block_on_lock: false,
    };
    let file = store_file::open_locked_or_missing(path, options)?;
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_size);
    let map = |e| crate::storage::open::map_open_error(e, path);
    let handle = file.try_clone().map_err(Error::from_io)?;
    let clean = guarded_unverified(|| {
        let backend = FileBackend::new(handle).map_err(map)?;
        builder.open_read_only_with_backend(backend).map_err(map)
    });
    match clean {
        Ok(db) => Ok(ReadOnly::Clean(db)),
        Err(Error::Locked { path }) => Err(Error::Locked { path }),
        Err(_) => {
            // redb's refused open let the lock go with its handle: taken again, then the
            // repair is made in memory over the same file.
            store_file::lock(&file, path, options)?;
            let overlay = OverlayBackend::new(file).map_err(Error::from_io)?;
            guarded_unverified(|| builder.create_with_backend(overlay).map_err(map))
                .map(ReadOnly::Repaired)
        }
    }
}

/// The last checkpoint, from a database opened read-only.
pub(crate) fn read_checkpoint(db: &ReadOnly) -> Result<Option<Checkpoint>> {
    let read = db.begin_read()?;
    tables::read_checkpoint_from(&read)
}

/// Copies every readable row of every records table into `raw`, newer generations over
/// older ones. A table that fails part way is read again from its end backwards, so only
/// the rows between the two failures are lost.
fn read_tables(
    db: &ReadOnly,
    path: &Path,
    raw: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    skipped: &mut Vec<String>,
) {
    let names = guarded_unverified(|| {
        let read = db.begin_read()?;
        let mut names: Vec<(u64, String)> = read
            .list_tables()
            .map_err(Error::from_redb)?
            .filter_map(|t| generation_of(t.name()).map(|g| (g, t.name().to_owned())))
            .collect();
        names.sort();
        Ok(names)
    });
    let names = match names {
        Ok(names) => names,
        Err(e) => {
            skipped.push(format!("{}: the list of tables: {e}", path.display()));
            return;
        }
    };
    for (_, name) in names {
        let forward = guarded_unverified(|| read_rows(db, &name, false, raw));
        if let Err(e) = forward {
            let backward = guarded_unverified(|| read_rows(db, &name, true, raw));
            let how = match backward {
                Ok(()) => "the rows between the damage and the end were read backwards".to_owned(),
                Err(again) => format!("reading backwards also failed: {again}"),
            };
            skipped.push(format!(
                "{}: table {name} is damaged ({e}); {how}",
                path.display()
            ));
        }
    }
}

/// The generation a records table holds, from its name.
fn generation_of(name: &str) -> Option<u64> {
    if name == "idemdb_records" {
        return Some(0);
    }
    name.strip_prefix("idemdb_records.")?.parse().ok()
}

fn read_rows(
    db: &ReadOnly,
    name: &str,
    backwards: bool,
    raw: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<()> {
    let read = db.begin_read()?;
    let table = read
        .open_table(TableDefinition::<&[u8], &[u8]>::new(name))
        .map_err(Error::from_redb)?;
    let mut keep = |entry: std::result::Result<_, redb::StorageError>| -> Result<bool> {
        let (key, value): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
            entry.map_err(Error::from_redb)?;
        // Read backwards, a row already read forwards means the two reads met.
        let known = raw.contains_key(key.value());
        raw.insert(key.value().to_vec(), value.value().to_vec());
        Ok(known && backwards)
    };
    let rows = table.iter().map_err(Error::from_redb)?;
    if backwards {
        for entry in rows.rev() {
            if keep(entry)? {
                break;
            }
        }
    } else {
        for entry in rows {
            keep(entry)?;
        }
    }
    Ok(())
}

/// Applies the journal's frames newer than the checkpoint (or, with no readable checkpoint,
/// every intact frame, oldest first) to `raw`. Returns how many changes it applied.
fn apply_journal(
    path: &Path,
    checkpoint: Option<Checkpoint>,
    raw: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    skipped: &mut Vec<String>,
) -> u64 {
    let journal = journal_path(path);
    if std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) == 0 {
        if checkpoint.is_some_and(|c| !c.clean) {
            skipped.push(format!(
                "{}: the journal is missing; what it held is lost",
                journal.display()
            ));
        }
        return 0;
    }
    let frames = match read_journal(&journal, checkpoint) {
        Ok(found) => {
            if let Some(note) = found.1 {
                skipped.push(note);
            }
            found.0
        }
        Err(e) => {
            skipped.push(format!("{}: unreadable: {e}", journal.display()));
            return 0;
        }
    };
    let mut applied = 0;
    for (_, changes) in frames {
        for (key, value) in changes {
            applied += 1;
            match value {
                Some(value) => raw.insert(key, value),
                None => raw.remove(&key),
            };
        }
    }
    applied
}

type Frames = Vec<(u64, Vec<(Vec<u8>, Option<Vec<u8>>)>)>;

fn read_journal(
    journal: &Path,
    checkpoint: Option<Checkpoint>,
) -> Result<(Frames, Option<String>)> {
    let io = JournalFile::open_read_only(journal).map_err(Error::from_io)?;
    let header = Journal::read_header(&io)?;
    let usable = checkpoint.filter(|c| c.journal_id == header.journal_id);
    let Some(cp) = usable else {
        // Which frames are already in the database is unknown: replay all, oldest first.
        return Ok((
            Journal::scan_all(&io, &header)?,
            Some(format!(
                "{}: no checkpoint names this journal; every intact frame was applied",
                journal.display()
            )),
        ));
    };
    let found: Inspection = Journal::inspect(&io, &header, cp.tail, cp.folded_lsn)?;
    let note = describe_journal_damage(journal, &found);
    let mut frames = found.frames;
    if found.intact_after_damage.is_some() {
        // Frames past the damage are intact: take them too.
        let last = found.last_lsn;
        frames.extend(
            Journal::scan_all(&io, &header)?
                .into_iter()
                .filter(|(lsn, _)| *lsn > last),
        );
    }
    Ok((frames, note))
}

/// One sentence on what the journal lost, if anything.
pub(crate) fn describe_journal_damage(journal: &Path, found: &Inspection) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(cut) = found.cut_short {
        parts.push(format!(
            "the file is {} bytes but was preallocated to {} bytes: whatever followed offset {} is lost",
            cut.len, cut.extent, cut.len
        ));
    }
    if let Some(tail) = found.discarded {
        parts.push(format!(
            "{} frames ({} bytes) at offset {} do not verify and were skipped",
            tail.frames, tail.bytes, tail.offset
        ));
    }
    if let Some(lost) = found.intact_after_damage {
        parts.push(format!(
            "frame {} at offset {} is intact after a damaged one",
            lost.lsn, lost.offset
        ));
    }
    (!parts.is_empty()).then(|| format!("{}: {}", journal.display(), parts.join("; ")))
}
