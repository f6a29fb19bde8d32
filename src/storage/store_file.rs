//! The database file of a store, opened under its lock and judged only once the lock is
//! held: no other idemdb process can be writing it while it is read.
//!
//! A new store is never built at its own path. It is built in a temporary file beside it and
//! linked into place complete, so a file at a store's path is always a whole store (or a
//! damaged one), never one another process is still creating: two processes creating one
//! store at once both end up opening the one that was linked first.
//!
//! The lock is a `flock` on the database file: exclusive for a writing open, shared for a
//! read-only one, so readers share the file with each other and never with a writer. It is
//! taken on the handle redb then works through, and lasts as long as that handle.

use std::fs::{File, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;

use crate::error::{Error, Result};
use crate::storage::journal::file::journal_path;
use crate::storage::open::OpenOptions;
use crate::storage::tables;

/// redb's file magic: every redb file starts with it.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// The largest file a creation cut short can leave: redb's initial layout is far smaller.
const MAX_UNFINISHED_CREATION: u64 = 16 << 20;
/// redb's header lives in the first page; everything after it is written by commits.
const HEADER_PAGE: u64 = 4096;

/// How often a store that vanishes between being linked and being opened (a dangling
/// symlink at the path, say) is created again before giving up.
const CREATE_ATTEMPTS: usize = 3;

/// Opens the database file at `path`, locked as `options` say (waiting for the lock, or
/// failing with [`Error::Locked`]), and checks under the lock that it holds a redb database.
/// A missing file is created complete first when `options.create` allows it (never for a
/// read-only open).
/// A missing file beside a journal that holds anything is refused (see
/// [`refuse_journal_without_store`]), whatever the open.
pub(crate) fn open_locked(path: &Path, options: OpenOptions) -> Result<File> {
    open_locked_as(path, options, true)
}

/// [`open_locked`] for the readers of a damaged store (check, salvage): a missing file is
/// [`Error::Missing`] even beside a journal, which they go on to read and report.
pub(crate) fn open_locked_or_missing(path: &Path, options: OpenOptions) -> Result<File> {
    open_locked_as(path, options, false)
}

fn open_locked_as(path: &Path, options: OpenOptions, refuse_lone_journal: bool) -> Result<File> {
    for _ in 0..CREATE_ATTEMPTS {
        let opened = if options.read_only {
            std::fs::OpenOptions::new().read(true).open(path)
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
        };
        match opened {
            Ok(file) => {
                lock(&file, path, options)?;
                judge(&file, path, options)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if refuse_lone_journal {
                    refuse_journal_without_store(path)?;
                }
                if !options.create || options.read_only {
                    return Err(Error::Missing {
                        path: path.to_owned(),
                    });
                }
                create_beside(path, options.cache_size)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                return Err(Error::NotAFile {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(io_at(path, e)),
        }
    }
    Err(Error::Missing {
        path: path.to_owned(),
    })
}

/// Takes the file's lock, shared for a read-only open and exclusive otherwise, waiting for
/// it or not as `options` say.
pub(crate) fn lock(file: &File, path: &Path, options: OpenOptions) -> Result<()> {
    let locked = match (options.read_only, options.block_on_lock) {
        (true, true) => file.lock_shared().map_err(TryLockError::Error),
        (false, true) => file.lock().map_err(TryLockError::Error),
        (true, false) => file.try_lock_shared(),
        (false, false) => file.try_lock(),
    };
    match locked {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_owned(),
        }),
        // A file system without flock: redb's own locks are all there is.
        Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => Ok(()),
        Err(TryLockError::Error(e)) => Err(io_at(path, e)),
    }
}

/// Refuses, under the lock, files that must never be opened as a store: a directory, an
/// empty file (most likely a truncated store: creation never leaves one), a file that is
/// not redb at all. A file an interrupted creation of an earlier version left behind is
/// emptied, by a writing open, so redb creates the store in it again.
fn judge(file: &File, path: &Path, options: OpenOptions) -> Result<()> {
    let meta = file.metadata().map_err(|e| io_at(path, e))?;
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_owned(),
        });
    }
    let len = meta.len();
    if len == 0 {
        return Err(Error::EmptyFile {
            path: path.to_owned(),
        });
    }
    if options.create
        && !options.read_only
        && !journal_holds_anything(path)
        && creation_unfinished(len, &mut |offset, out| file.read_exact_at(out, offset))
            .map_err(|e| io_at(path, e))?
    {
        tracing::warn!(
            path = %path.display(),
            "the store file was never fully created (a crash during creation); creating it again"
        );
        // Truncated through the locked handle, not unlinked: a symlink keeps pointing at the
        // same file.
        file.set_len(0).map_err(|e| io_at(path, e))?;
        file.sync_all().map_err(|e| io_at(path, e))?;
        return Ok(());
    }
    let mut head = vec![0u8; REDB_MAGIC.len().min(len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| io_at(path, e))?;
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

/// Refuses to open (let alone create) a store whose file is missing beside its journal: a
/// store creates its journal right after its database file, so a journal alone means the
/// database file was deleted or moved, and creating an empty one would overwrite the
/// journal and with it the acknowledged records it holds. A read-only open says the same
/// rather than "no store here".
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

fn journal_holds_anything(path: &Path) -> bool {
    std::fs::metadata(journal_path(path)).is_ok_and(|m| m.len() > 0)
}

/// Whether a database holds nothing but what an interrupted creation leaves: redb writes
/// its magic number last, after a header and a resize, so a crash in between leaves a file
/// whose magic bytes are zero and whose every page after the header is zero. Such a file
/// never held a record (every store commits its metadata right after creation, which
/// writes pages past the header), so creating it again loses nothing; any other file
/// without the magic is refused.
pub(crate) fn creation_unfinished(
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

/// Builds a new, empty store in a temporary file beside `path` and links it into place,
/// unless another process linked its own first (then that one is the store). The
/// temporary file is removed either way.
fn create_beside(path: &Path, cache_size: usize) -> Result<()> {
    let temp = temporary_name(path)?;
    let built = build_empty_store(&temp, path, cache_size).and_then(|()| {
        match std::fs::hard_link(&temp, path) {
            Ok(()) => sync_parent(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: a rename, which only another creator racing
            // in this very instant could make replace its store (with an equally empty one).
            Err(_) if !path.exists() => std::fs::rename(&temp, path)
                .map_err(|e| io_at(path, e))
                .and_then(|()| sync_parent(path)),
            Err(e) => Err(io_at(path, e)),
        }
    });
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            path = %temp.display(),
            error = %e,
            "could not remove the temporary file of a store's creation"
        ),
    }
    built
}

fn temporary_name(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| Error::NotAFile {
        path: path.to_owned(),
    })?;
    let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut temp = name.to_owned();
    temp.push(format!(".creating-{}-{nonce:016x}", std::process::id()));
    Ok(path.with_file_name(temp))
}

fn build_empty_store(temp: &Path, path: &Path, cache_size: usize) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(temp)
        // The directory is what is missing or unwritable: the store's path names it.
        .map_err(|e| io_at(path, e))?;
    let backend = FileBackend::new(file).map_err(Error::from_redb)?;
    let db = redb::Builder::new()
        .set_cache_size(cache_size)
        .create_with_backend(backend)
        .map_err(Error::from_redb)?;
    tables::check_or_init(&db, path)?;
    db.close().map_err(Error::from_redb)
}

/// Makes the new directory entry durable: a store that acknowledged records must not
/// vanish in a crash because its name did.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_at(parent, e))
}

/// An I/O error about `path`, with the path in its message.
fn io_at(path: &Path, e: std::io::Error) -> Error {
    Error::from_io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}
