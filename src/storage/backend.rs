//! Storage a store can live on instead of its two files: the trait a custom backend
//! implements (public with the `testing` feature, for fault injection), and the adapters
//! that hand such storage to redb and to the journal.

use std::fmt;
use std::io;
use std::sync::Arc;

use redb::StorageBackend;
use redb::backends::InMemoryBackend;

/// Which storage of a store a backend factory is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageRole {
    /// The database that holds the records.
    Database,
    /// The journal where every commit is appended first.
    Journal,
}

/// Byte-addressed storage for one of a store's two files: what a simulated or
/// fault-injecting disk implements. Every method may fail with the I/O error a real device
/// would give (`ENOSPC` is recognised as a full device).
// A length that can fail has no meaningful `is_empty` beside it.
#[allow(clippy::len_without_is_empty)]
pub trait Backend: Send + Sync + 'static {
    /// The current length, in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `out` from `offset`; reading past the end is an error.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    /// Grows (with zeros) or shrinks the storage to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every earlier write durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Writes `data` at `offset`, growing the storage if needed.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
}

/// Storage held in memory, shared by its clones (so it survives a reopen of the store).
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend(Arc<InMemoryBackend>);

impl MemoryBackend {
    /// Empty storage.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }
}

impl Backend for MemoryBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}

/// A [`Backend`] as redb's storage.
pub(crate) struct AsRedb<B>(pub(crate) B);

impl<B> fmt::Debug for AsRedb<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("custom idemdb backend")
    }
}

impl<B: Backend> StorageBackend for AsRedb<B> {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}

/// Lets several opens share one redb backend (the journal's tests reopen in-memory storage).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct SharedBackend<B: StorageBackend>(pub(crate) Arc<B>);

#[cfg(test)]
impl<B: StorageBackend> StorageBackend for SharedBackend<B> {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}
