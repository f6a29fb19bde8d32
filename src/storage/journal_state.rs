//! The open journal as the engine's threads share it: the ring itself (held by the writer
//! across an append and its sync), figures about it that can be read without waiting for
//! that sync, and the cut a fold may record as folded.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::storage::journal::Journal;
use crate::storage::signal::Signal;

/// The last frame whose changes are in the memtable: a fold may record everything up to it
/// as folded, once the memtable's contents are in redb.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FoldCut {
    pub(crate) lsn: u64,
    /// Where the frame after it starts.
    pub(crate) end: u64,
}

/// The journal shared by the writer (which appends) and the folder (which frees space).
pub(crate) struct JournalState {
    /// Held by the writer across an append and its sync: read the figures below instead.
    pub(crate) ring: Mutex<Journal>,
    /// The journal's identity, recorded in every checkpoint.
    pub(crate) id: u128,
    /// Bytes of the ring.
    pub(crate) area: u64,
    /// Bytes holding unfolded frames (a mirror of the ring's own figure).
    used: AtomicU64,
    /// The largest frame payload the journal takes.
    pub(crate) max_payload: usize,
    /// Advanced by the writer after it publishes a frame to the memtable.
    pub(crate) cut: Mutex<FoldCut>,
    /// Tells the writer a fold freed journal space.
    pub(crate) space_freed: Signal,
}

impl JournalState {
    pub(crate) fn new(journal: Journal) -> JournalState {
        JournalState {
            id: journal.id(),
            area: journal.area(),
            used: AtomicU64::new(journal.used()),
            max_payload: journal.max_payload(),
            cut: Mutex::new(FoldCut {
                lsn: journal.last_lsn(),
                end: journal.head(),
            }),
            ring: Mutex::new(journal),
            space_freed: Signal::default(),
        }
    }

    /// Bytes holding unfolded frames, as of the last append or release.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Refreshes the mirror of the ring's used bytes; the caller holds the ring.
    pub(crate) fn note_used(&self, ring: &Journal) {
        self.used.store(ring.used(), Ordering::Relaxed);
    }
}
