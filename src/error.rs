//! The one error type of the crate, and the rules a key or scope can break.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::canonical_json::JsonError;

/// Shorthand for `std::result::Result<T, idemdb::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in idemdb.
///
/// Each kind of bad input or bad file has a variant of its own, so callers can map them to
/// their own responses (an HTTP status, a CLI exit code) without parsing messages.
/// The type is `Clone` because a failed group commit fails every operation in it, and each
/// caller receives the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The idempotency key breaks the store's key policy.
    #[error("invalid idempotency key: {0}")]
    InvalidKey(KeyError),
    /// The scope breaks the scope rules (1–255 bytes of UTF-8, no control characters).
    #[error("invalid scope: {0}")]
    InvalidScope(KeyError),
    /// A per-request retention outside `1 s ..= max_retention`.
    #[error("invalid retention {requested:?}: it must be between {min:?} and {max:?} (or forever)")]
    InvalidRetention {
        /// What the caller asked for.
        requested: Duration,
        /// The shortest retention allowed.
        min: Duration,
        /// The store's maximum retention.
        max: Duration,
    },
    /// A lease that the store does not accept.
    #[error("invalid lease {requested:?}: {reason}")]
    InvalidLease {
        /// What the caller asked for.
        requested: Duration,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A response larger than the store's `max_response_size`.
    #[error("response of {size} bytes exceeds the store's limit of {limit} bytes")]
    ResponseTooLarge {
        /// Size of the response offered.
        size: usize,
        /// The store's limit.
        limit: usize,
    },
    /// An owner tag larger than [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN).
    #[error("owner tag of {size} bytes exceeds the limit of {limit} bytes")]
    OwnerTooLarge {
        /// Size of the tag offered.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A builder option with a value the store cannot work with.
    #[error("invalid configuration: {option}: {reason}")]
    InvalidConfig {
        /// The option's name, as the builder method is called.
        option: &'static str,
        /// Why the value was refused.
        reason: String,
    },
    /// A fingerprint field declared as JSON is not valid JSON.
    #[error("fingerprint field {field:?} is not valid JSON: {source}")]
    InvalidJson {
        /// The field's name.
        field: String,
        /// Where and why parsing failed.
        source: JsonError,
    },
    /// The path holds a file that is not an idemdb store: another program's redb database, or
    /// not a redb file at all.
    #[error("{}: not an idemdb store ({reason})", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The path holds an empty file. An idemdb store is never empty, so this is most likely a
    /// store that was truncated; idemdb refuses to create a new store over it.
    #[error(
        "{}: the file is empty; refusing to create a new store over an existing file (remove it to start afresh)",
        path.display()
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// No store exists at the path, and the store was opened without creating one.
    #[error("{}: no store exists at this path", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The path names a directory or another non-regular file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The store was written by a newer version of idemdb.
    #[error(
        "{}: written in store format {found}, but this build of idemdb reads formats up to {supported}",
        path.display()
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The format version found in the file.
        found: u32,
        /// The newest format this build understands.
        supported: u32,
    },
    /// The store's file, or a record in it, is damaged.
    #[error("the store is corrupt: {detail}")]
    Corrupt {
        /// What was found to be wrong.
        detail: String,
    },
    /// Another process (or another open `Store` in this process) holds the file.
    #[error("{}: the store is open in another process or handle", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The store was opened read-only ([`StoreBuilder::read_only`](crate::StoreBuilder::read_only)),
    /// and the operation would have written to it. Also returned by a read-only open of a
    /// store that cannot be read without writing first (one left unrepaired by a crash, or
    /// of an older format that needs upgrading): open it writable once.
    #[error("{}: opened read-only; {needs} would write to it", path.display())]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// What would have written.
        needs: String,
    },
    /// The device is out of space. Reads keep working; writes resume once space returns.
    #[error("out of storage space: {0}")]
    StorageFull(Arc<std::io::Error>),
    /// Any other I/O error from the operating system.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// An error reported by the storage engine underneath idemdb that has no more specific
    /// variant. Its message says what happened; its source chain, where it has one, goes on
    /// to the cause.
    #[error("storage engine error: {0}")]
    Storage(#[source] StorageError),
    /// The store was closed; no further operations are accepted.
    #[error("the store is closed")]
    Closed,
    /// A thread of idemdb panicked (a bug in idemdb, not a damaged file): the store refuses
    /// every later call, `close` included, with this error. What was acknowledged before is
    /// durable; reopen the store to carry on, and please report the bug.
    #[error(
        "the store is poisoned by a bug in idemdb (please report it), caught where {detail}; reopen the store"
    )]
    Poisoned {
        /// Where the panic was caught, and its message, e.g. "the writer thread panicked:
        /// ...".
        detail: String,
    },
    /// Something that cannot happen did: a bug in idemdb. Please report it.
    #[error("internal error (a bug in idemdb): {detail}")]
    Internal {
        /// What went wrong.
        detail: String,
    },
    /// The claim no longer holds its key, so it can no longer complete, release or extend it.
    #[error("the claim no longer holds its key: {0}")]
    ClaimLost(ClaimLostReason),
}

/// An error of the storage engine underneath idemdb, kept opaque so that idemdb's API does
/// not change with the engine's: read its message, or walk its
/// [`source`](std::error::Error::source) chain.
#[derive(Debug, Clone)]
pub struct StorageError(Arc<redb::Error>);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// Why a claim lost its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimLostReason {
    /// The record is gone: deleted by an operator, or expired and swept.
    #[error("the record no longer exists")]
    Missing,
    /// The record was completed (by this claim earlier, or by a later claim).
    #[error("the record is already completed")]
    Completed,
    /// Another claim took the key over after this claim's lease ended.
    #[error("another claim took the key over after this claim's lease ended")]
    TakenOver,
}

/// A rule an idempotency key or a scope breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty string.
    #[error("it is empty")]
    Empty,
    /// Longer than the limit, counted in bytes of UTF-8.
    #[error("it is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Longer than the limit of a [`KeyPolicy::OpaqueChars`](crate::KeyPolicy::OpaqueChars),
    /// counted in characters (Unicode scalar values).
    #[error("it is {len} characters long; the limit is {max} characters")]
    TooManyCharacters {
        /// Its length in characters.
        len: usize,
        /// The limit in characters.
        max: usize,
    },
    /// A control character (including NUL) somewhere in it.
    #[error("it contains the control character U+{code:04X} at byte {index}")]
    ControlCharacter {
        /// Byte offset of the character.
        index: usize,
        /// The character's code point.
        code: u32,
    },
    /// Not in RFC 9562 hyphenated text form.
    #[error("it is not a UUID in RFC 9562 text form (8-4-4-4-12 hexadecimal digits): {reason}")]
    NotAUuid {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A UUID of the wrong variant (not the RFC 9562 variant `10xx`).
    #[error("it is not an RFC 9562 variant UUID")]
    UuidVariant,
    /// A UUID whose version the key policy does not allow.
    #[error("it is a version {version} UUID; this store accepts versions {allowed}")]
    UuidVersion {
        /// The version found.
        version: u8,
        /// The versions allowed, as a list like `3, 4, 7`.
        allowed: String,
    },
}

impl Error {
    /// Maps a redb error to the most specific variant.
    pub(crate) fn from_redb(err: impl Into<redb::Error>) -> Error {
        match err.into() {
            redb::Error::Corrupted(detail) => Error::Corrupt { detail },
            redb::Error::Io(io) => Error::from_io(io),
            redb::Error::DatabaseClosed => Error::Closed,
            redb::Error::ValueTooLarge(size) => Error::ResponseTooLarge {
                size,
                limit: u32::MAX as usize,
            },
            other => Error::Storage(StorageError(Arc::new(other))),
        }
    }

    /// Maps an I/O error, recognising a full device.
    pub(crate) fn from_io(err: std::io::Error) -> Error {
        let full = err.kind() == std::io::ErrorKind::StorageFull
            || err.kind() == std::io::ErrorKind::QuotaExceeded
            || err.raw_os_error() == Some(28); // ENOSPC, also when wrapped by a backend
        if full {
            Error::StorageFull(Arc::new(err))
        } else {
            Error::Io(Arc::new(err))
        }
    }

    /// Whether the error says the device is full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::StorageFull(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_error_shows_the_engines_message_and_keeps_its_chain() {
        let io = std::io::Error::other("the disk hiccuped");
        let engine = redb::Error::Io(io);
        let expected = engine.to_string();
        let error = Error::Storage(StorageError(Arc::new(engine)));
        assert_eq!(
            error.to_string(),
            format!("storage engine error: {expected}")
        );
        let source = std::error::Error::source(&error).expect("the storage error is the source");
        assert_eq!(source.to_string(), expected);
        assert!(source.downcast_ref::<StorageError>().is_some());
    }
}
