//! Opening (and reopening) the redb database behind a store, and its journal's storage, with
//! every bad file mapped to its own typed error.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{DatabaseError, StorageBackend, StorageError};

use crate::error::{Error, Result};
use crate::storage::backend::StorageRole;
use crate::storage::journal::file::{JournalFile, journal_path};
use crate::storage::overlay::OverlayBackend;
use crate::storage::tables;
use crate::storage::unsynced::UnsyncedWrites;

/// redb's file magic: every redb file starts with it.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// The files a store lives in: copy both, with the store closed, to back it up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreFiles {
    /// The database file: the path the store was opened at.
    pub database: PathBuf,
    /// The journal beside it: the same path with `-journal` appended.
    pub journal: PathBuf,
}

/// Makes the storage for the database or the journal of a store on a custom backend.
pub(crate) type BackendFactory =
    Arc<dyn Fn(StorageRole) -> std::io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// Settings that apply to every open of the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenOptions {
    pub(crate) cache_size: usize,
    pub(crate) verify: bool,
    pub(crate) create: bool,
    /// Open an existing file through an in-memory overlay when the session may leave its
    /// folds to the journal (see `StoreBuilder::short_process`).
    pub(crate) defer_folds: bool,
}

/// Knows how to open the database, again and again: once at start, and after a failed commit
/// (redb refuses further writes until the database is reopened).
#[derive(Clone)]
pub(crate) struct Opener {
    /// The file, or a label for a custom backend; named in errors.
    path: PathBuf,
    /// `Some` for a custom backend; `None` opens the files at `path`.
    backend: Option<BackendFactory>,
    options: OpenOptions,
    /// The database's writes not yet synced, across reopens (see [`UnsyncedWrites`]).
    unsynced: UnsyncedWrites,
}

impl Opener {
    pub(crate) fn file(path: PathBuf, options: OpenOptions) -> Opener {
        Opener {
            path,
            backend: None,
            options,
            unsynced: UnsyncedWrites::default(),
        }
    }

    pub(crate) fn backend(label: PathBuf, factory: BackendFactory, options: OpenOptions) -> Opener {
        Opener {
            path: label,
            backend: Some(factory),
            options,
            unsynced: UnsyncedWrites::default(),
        }
    }

    /// The file, or the label of a custom backend.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether every open verifies every page checksum first: a panic while redb reads a
    /// verified file is not damage.
    pub(crate) fn verifies(&self) -> bool {
        self.options.verify
    }

    /// The store's files; `None` for a store on custom or in-memory storage.
    pub(crate) fn files(&self) -> Option<StoreFiles> {
        self.backend.is_none().then(|| StoreFiles {
            database: self.path.clone(),
            journal: journal_path(&self.path),
        })
    }

    /// Names the journal's file in a corruption error its reading found (the journal itself
    /// only says "journal").
    pub(crate) fn name_journal(&self, error: Error) -> Error {
        match error {
            Error::Corrupt { detail } => {
                let file = match self.files() {
                    Some(files) => files.journal.display().to_string(),
                    None => format!("the journal of {}", self.path.display()),
                };
                Error::Corrupt {
                    detail: format!(
                        "{file}: {}",
                        detail.strip_prefix("journal: ").unwrap_or(&detail)
                    ),
                }
            }
            other => other,
        }
    }

    /// Opens the journal's storage (creating an empty file if there is none).
    pub(crate) fn open_journal(&self) -> Result<Box<dyn StorageBackend>> {
        match &self.backend {
            Some(factory) => factory(StorageRole::Journal).map_err(Error::from_io),
            None => {
                let path = journal_path(&self.path);
                if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
                    return Err(Error::NotAFile { path });
                }
                Ok(Box::new(JournalFile::open(&path).map_err(Error::from_io)?))
            }
        }
    }

    /// Whether this opener reads the database through an in-memory overlay.
    pub(crate) fn overlay(&self) -> bool {
        self.options.defer_folds && self.backend.is_none()
    }

    /// The same opener, writing the database file for real.
    pub(crate) fn writing(&self) -> Opener {
        let mut opener = self.clone();
        opener.options.defer_folds = false;
        opener
    }

    /// Opens an existing, cleanly closed database file through an in-memory overlay, with
    /// the file locked as redb locks it. `None` when the file must be opened for real: it
    /// is missing or empty (creation writes it), or needs repair (which must reach disk,
    /// or every later open would repeat it).
    fn open_overlay(&self) -> Result<Option<redb::Database>> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_file() && meta.len() > 0 => {}
            _ => return Ok(None),
        }
        precheck_file(&self.path, false)?;
        let file = std::fs::File::open(&self.path).map_err(Error::from_io)?;
        if file.try_lock().is_err() {
            return Err(Error::Locked {
                path: self.path.clone(),
            });
        }
        let overlay = OverlayBackend::new(file).map_err(Error::from_io)?;
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut builder = redb::Builder::new();
        let seen = Arc::clone(&repaired);
        builder
            .set_cache_size(self.options.cache_size)
            .set_check_integrity_on_open(self.options.verify)
            .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::Relaxed));
        let opened = catch_unwind(AssertUnwindSafe(|| builder.create_with_backend(overlay)));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(map_open_error(e, &self.path)),
            Err(panic) => return Err(corrupt_from_panic(panic.as_ref())),
        };
        if repaired.load(std::sync::atomic::Ordering::Relaxed) {
            // Dropped, releasing the lock; the caller opens the file for real.
            drop(db);
            return Ok(None);
        }
        match catch_unwind(AssertUnwindSafe(|| tables::check_or_init(&db, &self.path))) {
            Ok(Ok(())) => Ok(Some(db)),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(corrupt_from_panic(panic.as_ref())),
        }
    }

    /// Opens the database for a new session: through the overlay when this opener defers
    /// folds and the file allows it, else for real. Returns the opener the session must use
    /// from then on (for reopens) with the database.
    pub(crate) fn open_session(self) -> Result<(Opener, redb::Database)> {
        if self.overlay()
            && let Some(db) = self.open_overlay()?
        {
            return Ok((self, db));
        }
        let opener = self.writing();
        let db = opener.open_database()?;
        Ok((opener, db))
    }

    /// Opens the database and checks (or initialises) the idemdb metadata.
    pub(crate) fn open_database(&self) -> Result<redb::Database> {
        if self.overlay() {
            // A reopen (after a failed commit) of a session that began on an overlay.
            return self.open_overlay()?.ok_or_else(|| Error::Corrupt {
                detail: format!(
                    "{}: the file needs repair since this process opened it",
                    self.path.display()
                ),
            });
        }
        let storage: Box<dyn StorageBackend> = match &self.backend {
            None => {
                let recreated = self.options.create && reset_unfinished_file(&self.path)?;
                if recreated {
                    tracing::warn!(
                        path = %self.path.display(),
                        "the store file was never fully created (a crash during creation); \
                         creating it again"
                    );
                } else {
                    precheck_file(&self.path, self.options.create)?;
                    refuse_journal_without_store(&self.path)?;
                }
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(self.options.create)
                    .truncate(false)
                    .open(&self.path)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::IsADirectory => Error::NotAFile {
                            path: self.path.clone(),
                        },
                        _ => Error::from_io(e),
                    })?;
                Box::new(FileBackend::new(file).map_err(|e| map_open_error(e, &self.path))?)
            }
            Some(factory) => {
                let storage = factory(StorageRole::Database).map_err(Error::from_io)?;
                let journal_empty = || -> Result<bool> {
                    let journal = factory(StorageRole::Journal).map_err(Error::from_io)?;
                    Ok(journal.len().map_err(Error::from_io)? == 0)
                };
                if self.options.create
                    && backend_creation_unfinished(storage.as_ref())?
                    && journal_empty()?
                {
                    tracing::warn!(
                        store = %self.path.display(),
                        "the store was never fully created (a crash during creation); \
                         creating it again"
                    );
                    storage.set_len(0).map_err(Error::from_io)?;
                }
                storage
            }
        };
        let storage = self.unsynced.wrap(storage);
        // Writes a failed sync left behind are made durable before redb reads the file.
        storage.settle().map_err(Error::from_io)?;
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(self.options.cache_size)
            .set_check_integrity_on_open(self.options.verify);
        // redb can panic on some damaged files (its integrity check prevents that, but it is
        // optional); a panic while opening is reported as corruption instead of unwinding
        // into the caller.
        let opened = catch_unwind(AssertUnwindSafe(|| builder.create_with_backend(storage)));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(map_open_error(e, &self.path)),
            Err(panic) => return Err(corrupt_from_panic(panic.as_ref())),
        };
        match catch_unwind(AssertUnwindSafe(|| tables::check_or_init(&db, &self.path))) {
            Ok(Ok(())) => Ok(db),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(corrupt_from_panic(panic.as_ref())),
        }
    }
}

/// The largest file a creation cut short can leave: redb's initial layout is far smaller.
const MAX_UNFINISHED_CREATION: u64 = 16 << 20;
/// redb's header lives in the first page; everything after it is written by commits.
const HEADER_PAGE: u64 = 4096;

/// Whether a database holds nothing but what an interrupted creation leaves: redb writes
/// its magic number last, after a header and a resize, so a crash in between leaves a file
/// whose magic bytes are zero and whose every page after the header is zero. Such a file
/// never held a record (every store commits its metadata right after creation, which
/// writes pages past the header), so creating it again loses nothing; any other file
/// without the magic is refused as before.
fn creation_unfinished(
    len: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<bool> {
    if len < REDB_MAGIC.len() as u64 || len > MAX_UNFINISHED_CREATION {
        return Ok(false);
    }
    let mut magic = [0u8; REDB_MAGIC.len()];
    read(0, &mut magic)?;
    if magic != [0u8; REDB_MAGIC.len()] {
        return Ok(false);
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = HEADER_PAGE;
    while offset < len {
        let n = chunk.len().min((len - offset) as usize);
        read(offset, &mut chunk[..n])?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}

/// Empties the file at `path` if it holds only what an interrupted creation leaves (see
/// [`creation_unfinished`]) and no journal was ever created beside it (a store creates its
/// journal right after its database, so a store that held anything has one). The file is
/// locked first, as redb locks it: a file another process is creating right now is left
/// alone (that process's open then reports it locked). Returns whether it was emptied.
fn reset_unfinished_file(path: &Path) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(false);
    };
    if !meta.is_file() || meta.len() == 0 {
        return Ok(false);
    }
    if std::fs::metadata(journal_path(path)).is_ok_and(|m| m.len() > 0) {
        return Ok(false);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::from_io)?;
    if file.try_lock().is_err() {
        return Ok(false);
    }
    let unfinished = creation_unfinished(meta.len(), &mut |offset, out| {
        std::os::unix::fs::FileExt::read_exact_at(&file, out, offset)
    })
    .map_err(Error::from_io)?;
    if unfinished {
        // Truncated through the locked handle, not unlinked: a symlink keeps pointing at the
        // same file, and no one else can be writing it meanwhile.
        file.set_len(0).map_err(Error::from_io)?;
        file.sync_all().map_err(Error::from_io)?;
    }
    Ok(unfinished)
}

/// Refuses to create a store file where a journal already exists: a store creates its
/// journal right after its database file, so a journal alone means the database file was
/// deleted or moved, and creating an empty one would overwrite the journal and with it the
/// acknowledged records it holds.
fn refuse_journal_without_store(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let journal = journal_path(path);
    match std::fs::metadata(&journal) {
        Ok(meta) if meta.len() > 0 => Err(Error::Corrupt {
            detail: format!(
                "{}: the store file is missing, but its journal {} ({} bytes) is still there: \
                 the store file was deleted or moved. Put it back; removing the journal instead \
                 starts an empty store and loses every record the journal holds (the records \
                 acknowledged since the last fold; `idemdb export --salvage` reads them)",
                path.display(),
                journal.display(),
                meta.len()
            ),
        }),
        _ => Ok(()),
    }
}

fn backend_creation_unfinished(backend: &dyn StorageBackend) -> Result<bool> {
    let len = backend.len().map_err(Error::from_io)?;
    creation_unfinished(len, &mut |offset, out| backend.read(offset, out)).map_err(Error::from_io)
}

/// Refuses paths that must never become a store: a directory, an empty file (most likely a
/// truncated store), a file that is not redb at all.
fn precheck_file(path: &Path, create: bool) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if create {
                return Ok(());
            }
            return Err(Error::Missing {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(Error::from_io(e)),
    };
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.len() == 0 {
        return Err(Error::EmptyFile {
            path: path.to_owned(),
        });
    }
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    std::fs::File::open(path)
        .and_then(|f| f.take(REDB_MAGIC.len() as u64).read_to_end(&mut head))
        .map_err(Error::from_io)?;
    if head[..] != REDB_MAGIC[..head.len()] {
        return Err(Error::NotAStore {
            path: path.to_owned(),
            reason: "it is not a redb database file".to_owned(),
        });
    }
    if head.len() < REDB_MAGIC.len() {
        return Err(Error::Corrupt {
            detail: format!(
                "{}: truncated to {} bytes, shorter than a database header",
                path.display(),
                head.len()
            ),
        });
    }
    Ok(())
}

/// Refuses a path that is not an existing store file, as opening it would.
pub(crate) fn precheck_existing(path: &Path) -> Result<()> {
    precheck_file(path, false)
}

/// The typed error for a failure redb reports while opening the file at `path`.
pub(crate) fn map_open_error(err: DatabaseError, path: &Path) -> Error {
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => Error::Locked {
            path: path.to_owned(),
        },
        DatabaseError::RepairAborted => Error::Corrupt {
            detail: format!("{}: repair after a crash was aborted", path.display()),
        },
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Corrupt {
                detail: format!("{}: the file is truncated ({io})", path.display()),
            }
        }
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::Corrupt {
                detail: format!("{}: {io}", path.display()),
            }
        }
        DatabaseError::Storage(StorageError::Corrupted(why)) => Error::Corrupt {
            detail: format!("{}: the file is damaged (redb: {why})", path.display()),
        },
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::IsADirectory =>
        {
            Error::NotAFile {
                path: path.to_owned(),
            }
        }
        other => Error::from_redb(other),
    }
}

pub(crate) fn corrupt_from_panic(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    Error::Corrupt {
        detail: format!("the storage engine failed on damaged data: {message}"),
    }
}
