//! Opening (and reopening) the redb database behind a store, with every bad file mapped to
//! its own typed error.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{DatabaseError, StorageError};

use crate::error::{Error, Result};
use crate::storage::tables;

/// redb's file magic: every redb file starts with it.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Makes a redb database from a configured redb builder.
pub(crate) type DbFactory =
    Arc<dyn Fn(&redb::Builder) -> std::result::Result<redb::Database, DatabaseError> + Send + Sync>;

/// Settings that apply to every open of the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenOptions {
    pub(crate) cache_size: usize,
    pub(crate) verify: bool,
    pub(crate) create: bool,
}

/// Knows how to open the database, again and again: once at start, and after a failed commit
/// (redb refuses further writes until the database is reopened).
#[derive(Clone)]
pub(crate) struct Opener {
    /// The file, or a label for a custom backend; named in errors.
    path: PathBuf,
    /// `Some` for a custom backend; `None` opens the file at `path`.
    backend: Option<DbFactory>,
    options: OpenOptions,
}

impl Opener {
    pub(crate) fn file(path: PathBuf, options: OpenOptions) -> Opener {
        Opener {
            path,
            backend: None,
            options,
        }
    }

    pub(crate) fn backend(label: PathBuf, factory: DbFactory, options: OpenOptions) -> Opener {
        Opener {
            path: label,
            backend: Some(factory),
            options,
        }
    }

    /// The file, or the label of a custom backend.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the database and checks (or initialises) the idemdb metadata.
    pub(crate) fn open(&self) -> Result<redb::Database> {
        if self.backend.is_none() {
            precheck_file(&self.path, self.options.create)?;
        }
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(self.options.cache_size)
            .set_check_integrity_on_open(self.options.verify);
        // redb can panic on some damaged files (its integrity check prevents that, but it is
        // optional); a panic while opening is reported as corruption instead of unwinding
        // into the caller.
        let opened = catch_unwind(AssertUnwindSafe(|| match &self.backend {
            Some(factory) => factory(&builder),
            None => builder.create(&self.path),
        }));
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

fn map_open_error(err: DatabaseError, path: &Path) -> Error {
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
