//! Sweeping expired records: find them through the expiry index in a redb snapshot, then
//! delete them through the journal, like any other write.
//!
//! A sweep is durable once its tombstones are journaled and synced; the pages they free are
//! reclaimed when the next fold writes the tombstones into redb, off the caller's path
//! (much as a database marks deleted rows dead and vacuums them later). So a sweep costs an
//! index scan and one contiguous journal append, never a scattered B-tree commit, and
//! concurrent claims wait for it no longer than one frame.

use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

use redb::ReadableDatabase;

use crate::codec;
use crate::error::{Error, Result};
use crate::storage::engine::Shared;
use crate::storage::open::corrupt_from_panic;
use crate::storage::tables::{EXPIRY, split_index_key};
use crate::time::Timestamp;

/// What a scan of the expiry index found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Due index entries examined.
    pub(crate) examined: u64,
    /// Keys due for deletion, with the instant each was indexed at.
    pub(crate) due: Vec<(Vec<u8>, Timestamp)>,
    /// Where the next scan starts (`None`: nothing more was due).
    pub(crate) resume: Option<Vec<u8>>,
}

/// Examines up to `limit` due expiry-index entries from `from` (an index key, inclusive), in
/// a snapshot opened now (the caller reads the epoch it hands the writer before this).
///
/// The index matches the records table exactly (a fold changes both in one transaction,
/// and finds the entry of a damaged record by a scan), so an entry at or before `now` is a
/// record expired at `now`: no record is read. Keys with a newer journaled state are left to
/// it; the writer checks that again before it deletes (see `writer::Writer::sweep`).
pub(crate) fn find_due(
    shared: &Shared,
    now: Timestamp,
    limit: usize,
    from: Option<&[u8]>,
) -> Result<Found> {
    let db = shared.db()?;
    catch_unwind(AssertUnwindSafe(|| -> Result<Found> {
        let read = db.begin_read().map_err(Error::from_redb)?;
        let expiry = read.open_table(EXPIRY).map_err(Error::from_redb)?;
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = now.as_millis().checked_add(1).map(u64::to_be_bytes);
        let upper = upper
            .as_ref()
            .map_or(Bound::Unbounded, |bound| Bound::Excluded(&bound[..]));
        let mut found = Found::default();
        for entry in expiry
            .range::<&[u8]>((lower, upper))
            .map_err(Error::from_redb)?
            .take(limit)
        {
            let (index, _) = entry.map_err(Error::from_redb)?;
            let index = index.value();
            found.examined += 1;
            let (at, key) = split_index_key(index).ok_or_else(|| Error::Corrupt {
                detail: "malformed expiry index entry".to_owned(),
            })?;
            if !shared.memtable.contains(key) {
                found.due.push((key.to_vec(), at));
            }
            if found.examined == limit as u64 {
                // A full batch: the next starts at the smallest index key after this one.
                found.resume = Some([index, &[0]].concat());
            }
        }
        Ok(found)
    }))
    .unwrap_or_else(|panic| Err(corrupt_from_panic(panic.as_ref())))
}

/// The unfolded records expired at `now`, with the instant each becomes sweepable.
pub(crate) fn due_in_memtable(shared: &Shared, now: Timestamp) -> Vec<(Vec<u8>, Timestamp)> {
    shared
        .memtable
        .snapshot()
        .into_iter()
        .filter_map(|(key, entry)| {
            // A damaged value cannot be judged here; the writer refuses to sweep it too.
            let record = codec::decode(entry.value.as_deref()?).ok()?;
            let at = record.sweep_at()?;
            record.is_expired(now).then(|| (key.into_vec(), at))
        })
        .collect()
}
