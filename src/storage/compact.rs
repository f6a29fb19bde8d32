//! Compaction of a database file: giving the pages freed by deleted and swept records back
//! to the file system.

use std::path::Path;

use crate::error::{Error, Result};
use crate::storage::check::{guarded, open_verified};

/// What [`compact`](crate::maintenance::compact) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// The file's size before, in bytes.
    pub size_before: u64,
    /// The file's size after, in bytes.
    pub size_after: u64,
    /// How many compaction passes moved data (0: the file was already compact).
    pub passes: u32,
}

/// Compacts the database file at `path`, which nothing else holds; see
/// `maintenance::compact`.
pub(crate) fn compact_file(path: &Path, cache_size: usize) -> Result<CompactReport> {
    let mut db = open_verified(path, cache_size)?;
    let size_before = file_size(path)?;
    // Each pass moves what it can; redb reports when nothing more moved. The bound only
    // guards against a pass that keeps reporting progress.
    let mut passes = 0;
    while passes < 64 {
        let moved = guarded(|| db.compact().map_err(Error::from_redb))?;
        if !moved {
            break;
        }
        passes += 1;
    }
    db.close().map_err(Error::from_redb)?;
    Ok(CompactReport {
        size_before,
        size_after: file_size(path)?,
        passes,
    })
}

fn file_size(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(Error::from_io)
}
