//! Keeping the writes to the database and the journal until a sync makes them durable, so
//! that a failed sync can be retried with its writes rather than without them.
//!
//! Linux marks the pages of a failed `fsync` clean ("fsyncgate"): the next `fsync` succeeds
//! without writing them, while reads still return the new bytes from the page cache. redb's
//! next commit would then build on pages that never reach the disk, and a power cut leaves a
//! database whose newest commit points at them. So every write to the database file is kept
//! (a copy of its bytes) until a sync succeeds; after a failed sync the kept writes are
//! written again before the next sync, including the first sync of a reopened database,
//! before redb reads the file. A fold that fails this way is retried, and the journal keeps
//! its frames until a fold succeeds, so nothing acknowledged depends on the lost pages.
//!
//! The journal of a durable store is wrapped the same way: a frame written without a sync
//! (a sweep's tombstones, a deferred claim) and lost to a failed sync would otherwise leave
//! a hole under the later frames a successful sync covers, and recovery stops at a hole.

use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::{BackendError, StorageBackend};

/// Copies of written bytes are kept up to this many bytes between two syncs; past it only
/// the written ranges are kept, and a retry re-reads them from the file (the page cache still
/// holds them unless memory pressure evicted them). A fold of 200,000 keys writes well under
/// this.
const COPY_LIMIT: usize = 256 << 20;

/// One change to the file since the last successful sync.
#[derive(Debug)]
enum PendingWrite {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// A write whose bytes were not copied (over [`COPY_LIMIT`]).
    Range {
        offset: u64,
        len: usize,
    },
    SetLen(u64),
}

#[derive(Debug)]
struct Log {
    changes: Vec<PendingWrite>,
    copied: usize,
    /// Bytes copied at most (see [`COPY_LIMIT`]).
    copy_limit: usize,
    /// A sync failed since the changes were made: they must be written again.
    sync_failed: bool,
}

impl Log {
    fn new(copy_limit: usize) -> Log {
        Log {
            changes: Vec::new(),
            copied: 0,
            copy_limit,
            sync_failed: false,
        }
    }
}

/// The database file's writes since its last successful sync, shared by every backend the
/// store opens on the file (a failed commit makes the store reopen the database, and the
/// writes of the failed sync must reach the reopened file).
#[derive(Debug, Clone)]
pub(crate) struct UnsyncedWrites {
    log: Arc<Mutex<Log>>,
}

impl Default for UnsyncedWrites {
    fn default() -> Self {
        UnsyncedWrites::with_copy_limit(COPY_LIMIT)
    }
}

impl UnsyncedWrites {
    fn with_copy_limit(limit: usize) -> UnsyncedWrites {
        UnsyncedWrites {
            log: Arc::new(Mutex::new(Log::new(limit))),
        }
    }

    /// Wraps `inner` so its writes are kept here until a sync succeeds.
    pub(crate) fn wrap(&self, inner: Box<dyn StorageBackend>) -> KeepingBackend {
        KeepingBackend {
            inner,
            log: Arc::clone(&self.log),
        }
    }
}

/// A storage backend that keeps its writes until a sync succeeds, and writes them again
/// before the sync after a failed one.
#[derive(Debug)]
pub(crate) struct KeepingBackend {
    inner: Box<dyn StorageBackend>,
    log: Arc<Mutex<Log>>,
}

impl KeepingBackend {
    /// Makes durable whatever a failed sync left behind, before the file is read: the file
    /// then holds on disk exactly what it shows.
    pub(crate) fn settle(&self) -> std::io::Result<()> {
        if self.log.lock().sync_failed {
            self.sync_data()
        } else {
            Ok(())
        }
    }

    /// Writes every kept change again, in order, so the next sync covers them. The bytes of
    /// uncopied writes are read first, before any copy is written back over them: the file
    /// holds their latest bytes now, and later kept changes are replayed after them.
    fn rewrite(&self, log: &Log) -> std::io::Result<()> {
        let len = self.inner.len()?;
        let mut read_back = Vec::new();
        for change in &log.changes {
            if let PendingWrite::Range { offset, len: n } = change {
                // A later truncation may have cut the range: what is gone needs no rewrite.
                let end = (*offset + *n as u64).min(len);
                let mut bytes = vec![0; end.saturating_sub(*offset) as usize];
                self.inner.read(*offset, &mut bytes)?;
                read_back.push(bytes);
            }
        }
        let mut read_back = read_back.into_iter();
        for change in &log.changes {
            match change {
                PendingWrite::Write { offset, bytes } => self.inner.write(*offset, bytes)?,
                PendingWrite::Range { offset, .. } => {
                    let bytes = read_back.next().unwrap_or_default();
                    if !bytes.is_empty() {
                        self.inner.write(*offset, &bytes)?;
                    }
                }
                PendingWrite::SetLen(len) => self.inner.set_len(*len)?,
            }
        }
        Ok(())
    }
}

impl StorageBackend for KeepingBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        // Kept even if it fails: it may have taken effect in part, and what redb meant is
        // what a retry must reproduce.
        self.log.lock().changes.push(PendingWrite::SetLen(len));
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        // redb's commits are serialised and do not write while they sync, so holding the log
        // across the sync blocks nothing but a reopen's settle.
        let mut log = self.log.lock();
        if log.sync_failed {
            self.rewrite(&log)?;
        }
        match self.inner.sync_data() {
            Ok(()) => {
                *log = Log::new(log.copy_limit);
                Ok(())
            }
            Err(e) => {
                log.sync_failed = true;
                Err(e)
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        {
            let mut log = self.log.lock();
            if log.copied + data.len() <= log.copy_limit {
                log.copied += data.len();
                log.changes.push(PendingWrite::Write {
                    offset,
                    bytes: data.to_vec(),
                });
            } else {
                log.changes.push(PendingWrite::Range {
                    offset,
                    len: data.len(),
                });
            }
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that behaves as Linux does after a failed `fsync`: the writes it covered stay
    /// readable but are forgotten, so a later sync does not make them durable.
    #[derive(Debug, Default)]
    struct ForgetfulFile {
        state: Mutex<FileState>,
    }

    #[derive(Debug, Default)]
    struct FileState {
        live: Vec<u8>,
        durable: Vec<u8>,
        dirty: Vec<(usize, usize)>,
        fail_next_sync: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct SharedFile(Arc<ForgetfulFile>);

    impl StorageBackend for SharedFile {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.0.state.lock().live.len() as u64)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            let state = self.0.state.lock();
            let start = offset as usize;
            out.copy_from_slice(&state.live[start..start + out.len()]);
            Ok(())
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            let mut state = self.0.state.lock();
            let old = state.live.len();
            state.live.resize(len as usize, 0);
            state
                .dirty
                .push((old.min(len as usize), old.max(len as usize)));
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            let mut state = self.0.state.lock();
            let dirty = std::mem::take(&mut state.dirty);
            if std::mem::take(&mut state.fail_next_sync) {
                return Err(std::io::Error::other("injected"));
            }
            let len = state.live.len();
            state.durable.resize(len, 0);
            for (start, end) in dirty {
                let end = end.min(len);
                if start < end {
                    let bytes = state.live[start..end].to_vec();
                    state.durable[start..end].copy_from_slice(&bytes);
                }
            }
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            let mut state = self.0.state.lock();
            let (start, end) = (offset as usize, offset as usize + data.len());
            if state.live.len() < end {
                state.live.resize(end, 0);
            }
            state.live[start..end].copy_from_slice(data);
            state.dirty.push((start, end));
            Ok(())
        }
    }

    fn durable(file: &SharedFile) -> Vec<u8> {
        file.0.state.lock().durable.clone()
    }

    fn fail_next_sync(file: &SharedFile) {
        file.0.state.lock().fail_next_sync = true;
    }

    fn writes_survive_a_failed_sync(copy_limit: usize) {
        let file = SharedFile::default();
        let unsynced = UnsyncedWrites::with_copy_limit(copy_limit);
        let backend = unsynced.wrap(Box::new(file.clone()));
        backend.set_len(8).expect("set_len");
        backend.write(0, b"abcd").expect("write");
        fail_next_sync(&file);
        assert!(backend.sync_data().is_err());
        // Without the kept writes, this sync would find nothing dirty.
        backend.write(4, b"ef").expect("write");
        backend.sync_data().expect("sync");
        assert_eq!(durable(&file), b"abcdef\0\0");
    }

    #[test]
    fn a_sync_after_a_failed_one_writes_the_lost_writes_again() {
        writes_survive_a_failed_sync(COPY_LIMIT);
    }

    #[test]
    fn writes_over_the_copy_limit_are_written_again_from_the_file() {
        writes_survive_a_failed_sync(2);
    }

    #[test]
    fn an_uncopied_write_over_a_copied_one_keeps_its_newer_bytes() {
        let file = SharedFile::default();
        let unsynced = UnsyncedWrites::with_copy_limit(2);
        let backend = unsynced.wrap(Box::new(file.clone()));
        backend.write(0, b"aa").expect("write");
        // Over the copy limit: only the range is kept.
        backend.write(0, b"bb").expect("write");
        // Then the file shrinks below part of a kept range.
        backend.write(4, b"cc").expect("write");
        backend.set_len(5).expect("set_len");
        fail_next_sync(&file);
        assert!(backend.sync_data().is_err());
        backend.sync_data().expect("sync");
        assert_eq!(durable(&file), b"bb\0\0c");
    }

    #[test]
    fn a_reopened_backend_settles_what_the_failed_sync_left() {
        let file = SharedFile::default();
        let unsynced = UnsyncedWrites::default();
        let first = unsynced.wrap(Box::new(file.clone()));
        first.write(0, b"xy").expect("write");
        fail_next_sync(&file);
        assert!(first.sync_data().is_err());
        drop(first);
        assert_eq!(durable(&file), b"");
        let reopened = unsynced.wrap(Box::new(file.clone()));
        reopened.settle().expect("settle");
        assert_eq!(durable(&file), b"xy");
        // Settled: nothing is kept any more, and a clean settle writes nothing.
        assert!(unsynced.log.lock().changes.is_empty());
        reopened.settle().expect("settle");
    }
}
