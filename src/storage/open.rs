//! Opening (and reopening) the redb database behind a store, and its journal's storage, with
//! every bad file mapped to its own typed error.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{DatabaseError, StorageBackend, StorageError};

use crate::error::{Error, Result};
use crate::storage::backend::StorageRole;
use crate::storage::journal::file::{JournalFile, journal_path};
use crate::storage::overlay::OverlayBackend;
use crate::storage::unsynced::UnsyncedWrites;
use crate::storage::{store_file, tables};

/// The page cache of the read-only look at a file's format: it reads a few pages.
const PROBE_CACHE: usize = 1 << 20;

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
    /// Open without ever writing: a shared lock, the file opened for reading only.
    pub(crate) read_only: bool,
    /// Wait for another process's lock to go instead of failing with `Error::Locked`.
    pub(crate) block_on_lock: bool,
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

    /// The same opener for the reopens after a failed commit: they never wait for the lock.
    /// The one holder a reopen can meet is most likely this process's own earlier handle,
    /// kept alive by a reader that is stuck, and waiting for it would wait for ever.
    pub(crate) fn for_reopens(mut self) -> Opener {
        self.options.block_on_lock = false;
        self
    }

    /// The same opener, writing the database file for real.
    pub(crate) fn writing(&self) -> Opener {
        let mut opener = self.clone();
        opener.options.defer_folds = false;
        opener
    }

    /// The database file, locked and judged as every open of it is (see
    /// [`store_file::open_locked`]): exclusive, even for an overlay session, whose journal
    /// writes need the store to itself as much as a writing session's. Held across the
    /// fallback from an overlay to a writing open, so no other process slips in between.
    pub(crate) fn lock_file(&self) -> Result<File> {
        store_file::open_locked(&self.path, self.options)
    }

    /// Opens the locked database `file` through an in-memory overlay. `None` when the file
    /// must be opened for real: it is empty (an unfinished creation, emptied under the
    /// lock), needs repair (which must reach disk, or every later open would repeat it), or
    /// needs initialising or upgrading (or every process would do it again in memory).
    pub(crate) fn open_overlay_on(&self, file: &File) -> Result<Option<redb::Database>> {
        if file.metadata().map_err(Error::from_io)?.len() == 0 {
            return Ok(None);
        }
        let handle = file.try_clone().map_err(Error::from_io)?;
        let overlay = OverlayBackend::new(handle).map_err(Error::from_io)?;
        let repaired = Arc::new(AtomicBool::new(false));
        let mut builder = redb::Builder::new();
        let seen = Arc::clone(&repaired);
        builder
            .set_cache_size(self.options.cache_size)
            .set_check_integrity_on_open(self.options.verify)
            .set_repair_callback(move |_| seen.store(true, Ordering::Relaxed));
        let opened = catch_unwind(AssertUnwindSafe(|| builder.create_with_backend(overlay)));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(map_open_error(e, &self.path)),
            Err(panic) => return Err(corrupt_from_panic(panic.as_ref())),
        };
        if repaired.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match catch_unwind(AssertUnwindSafe(|| tables::check_readable(&db, &self.path))) {
            Ok(Ok(())) => Ok(Some(db)),
            Ok(Err(Error::ReadOnly { .. })) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(corrupt_from_panic(panic.as_ref())),
        }
    }

    /// Opens the locked database `file` for writing (also the fallback from an overlay,
    /// with the lock still held). `tables_checked` says an overlay already found the file
    /// an idemdb store this build reads: the look for a foreign file (which lets the lock
    /// go for an instant, see [`refuse_foreign`](Self::refuse_foreign)) is then skipped.
    pub(crate) fn open_writing_on(
        &self,
        file: &File,
        tables_checked: bool,
    ) -> Result<redb::Database> {
        let file = file.try_clone().map_err(Error::from_io)?;
        if !tables_checked {
            self.refuse_foreign(&file)?;
        }
        let storage = FileBackend::new(file).map_err(|e| map_open_error(e, &self.path))?;
        self.open_storage(Box::new(storage))
    }

    /// Opens the database for reading only (under a shared lock, through a handle opened
    /// read-only), and checks that it is an idemdb store this build reads. Nothing is ever
    /// written: a database a crash left unrepaired, or one that needs upgrading, is
    /// [`Error::ReadOnly`].
    pub(crate) fn open_read_only_database(&self) -> Result<redb::ReadOnlyDatabase> {
        if self.backend.is_some() {
            return Err(Error::InvalidConfig {
                option: "read_only",
                reason: "a read-only store must be a file".to_owned(),
            });
        }
        let file = store_file::open_locked(&self.path, self.options)?;
        let backend = FileBackend::new(file).map_err(|e| map_open_error(e, &self.path))?;
        let mut builder = redb::Builder::new();
        builder.set_cache_size(self.options.cache_size);
        let opened = catch_unwind(AssertUnwindSafe(|| {
            builder.open_read_only_with_backend(backend)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(DatabaseError::RepairAborted)) => {
                return Err(Error::ReadOnly {
                    path: self.path.clone(),
                    needs: "repairing what a crash left unfinished".to_owned(),
                });
            }
            Ok(Err(e)) => return Err(map_open_error(e, &self.path)),
            Err(panic) => return Err(corrupt_from_panic(panic.as_ref())),
        };
        match catch_unwind(AssertUnwindSafe(|| tables::check_readable(&db, &self.path))) {
            Ok(Ok(())) => Ok(db),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(corrupt_from_panic(panic.as_ref())),
        }
    }

    /// Refuses, before redb's writing open marks the file's header, a redb file that is not
    /// an idemdb store or is of a newer format: a refused open writes nothing. It looks
    /// through a read-only handle sharing the locked file's description, which leaves the
    /// lock released or shared when it closes: the lock is taken again after it. A file
    /// the read-only handle cannot open (a crash left it unrepaired, or it is damaged) is
    /// left to the writing open to repair or report.
    fn refuse_foreign(&self, file: &std::fs::File) -> Result<()> {
        if file.metadata().map_err(Error::from_io)?.len() == 0 {
            return Ok(());
        }
        let probe = file.try_clone().map_err(Error::from_io)?;
        let verdict = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
            let backend = FileBackend::new(probe).map_err(|e| map_open_error(e, &self.path))?;
            let mut builder = redb::Builder::new();
            builder.set_cache_size(PROBE_CACHE);
            let Ok(db) = builder.open_read_only_with_backend(backend) else {
                return Ok(());
            };
            match tables::check_readable(&db, &self.path) {
                Err(e @ (Error::NotAStore { .. } | Error::NewerFormat { .. })) => Err(e),
                _ => Ok(()),
            }
        }))
        .unwrap_or(Ok(()));
        store_file::lock(file, &self.path, self.options)?;
        verdict
    }

    /// Opens the database and checks (or initialises) the idemdb metadata.
    pub(crate) fn open_database(&self) -> Result<redb::Database> {
        if self.overlay() {
            // A reopen (after a failed commit) of a session that began on an overlay.
            let file = self.lock_file()?;
            return self.open_overlay_on(&file)?.ok_or_else(|| Error::Corrupt {
                detail: format!(
                    "{}: the file needs repair since this process opened it",
                    self.path.display()
                ),
            });
        }
        let storage: Box<dyn StorageBackend> = match &self.backend {
            None => return self.open_writing_on(&self.lock_file()?, false),
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
        self.open_storage(storage)
    }

    /// Opens redb for writing on `storage` and checks (or initialises) the idemdb metadata.
    fn open_storage(&self, storage: Box<dyn StorageBackend>) -> Result<redb::Database> {
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

fn backend_creation_unfinished(backend: &dyn StorageBackend) -> Result<bool> {
    let len = backend.len().map_err(Error::from_io)?;
    store_file::creation_unfinished(len, &mut |offset, out| backend.read(offset, out))
        .map_err(Error::from_io)
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
