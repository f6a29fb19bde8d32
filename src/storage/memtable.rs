//! The memtable: every change that is durable in the journal but not yet folded into the
//! redb tables, so reads and the writer's decisions see it at once.
//!
//! It holds the latest state per key — an encoded record, or a tombstone for a delete —
//! with the LSN of the frame that wrote it. A fold copies the entries into redb and then
//! removes each one whose LSN has not changed meanwhile. Readers look here first and in
//! redb second; because a fold removes entries only after its redb commit, a key is always
//! found in one place or the other.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;

const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Box<[u8]>, Entry>>;

/// One key's new state, as a frame publishes it: a storage key and its new encoded record (`None`: deleted).
pub(crate) type KeyUpdate = (Vec<u8>, Option<Arc<[u8]>>);

/// The latest journaled state of one key.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The frame that wrote it.
    pub(crate) lsn: u64,
    /// The encoded record; `None` for a delete.
    pub(crate) value: Option<Arc<[u8]>>,
}

/// A sharded map from storage key to its latest journaled state.
pub(crate) struct Memtable {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Memtable {
    pub(crate) fn new() -> Memtable {
        Memtable {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard_index(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[self.shard_index(key)]
    }

    /// The journaled state of `key`: `None` if the memtable does not know it (redb has the
    /// truth), `Some(None)` if it was deleted.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Arc<[u8]>>> {
        self.shard(key).read().get(key).map(|e| e.value.clone())
    }

    /// Whether the memtable holds a state for `key`.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.shard(key).read().contains_key(key)
    }

    /// Makes a durable frame's changes visible.
    pub(crate) fn publish(&self, lsn: u64, changes: Vec<KeyUpdate>) {
        let entry = |(key, value): KeyUpdate| (key.into_boxed_slice(), Entry { lsn, value });
        if changes.len() < 4 * SHARDS {
            for change in changes {
                let (key, entry) = entry(change);
                self.shard(&key).write().insert(key, entry);
            }
            return;
        }
        // A large frame (a sweep's): take each shard's lock once.
        let mut by_shard: Vec<Vec<KeyUpdate>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for change in changes {
            let index = self.shard_index(&change.0);
            by_shard[index].push(change);
        }
        for (shard, changes) in self.shards.iter().zip(by_shard) {
            if changes.is_empty() {
                continue;
            }
            let mut shard = shard.write();
            shard.reserve(changes.len());
            for change in changes {
                let (key, entry) = entry(change);
                shard.insert(key, entry);
            }
        }
    }

    /// A copy of every entry, for a fold.
    pub(crate) fn snapshot(&self) -> Vec<(Box<[u8]>, Entry)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            out.extend(shard.read().iter().map(|(k, e)| (k.clone(), e.clone())));
        }
        out
    }

    /// The entries with keys in `[start, end)`, sorted by key.
    pub(crate) fn range(&self, start: &[u8], end: Option<&[u8]>) -> Vec<(Box<[u8]>, Entry)> {
        let mut out: Vec<(Box<[u8]>, Entry)> = Vec::new();
        for shard in self.shards.iter() {
            out.extend(
                shard
                    .read()
                    .iter()
                    .filter(|(k, _)| &***k >= start && end.is_none_or(|e| &***k < e))
                    .map(|(k, e)| (k.clone(), e.clone())),
            );
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Forgets the folded entries, unless a newer frame has changed a key since.
    pub(crate) fn remove_folded<'a>(&self, folded: impl Iterator<Item = (&'a [u8], u64)>) {
        for (key, lsn) in folded {
            let mut shard = self.shard(key).write();
            if shard.get(key).is_some_and(|e| e.lsn == lsn) {
                shard.remove(key);
            }
        }
    }

    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &[u8]) -> Option<Arc<[u8]>> {
        Some(Arc::from(b))
    }

    #[test]
    fn latest_state_wins_and_folds_keep_newer_changes() {
        let m = Memtable::new();
        assert!(m.get(b"k").is_none());
        m.publish(
            1,
            vec![(b"k".to_vec(), v(b"one")), (b"gone".to_vec(), None)],
        );
        m.publish(2, vec![(b"k".to_vec(), v(b"two"))]);
        assert_eq!(m.get(b"k"), Some(v(b"two")));
        assert_eq!(m.get(b"gone"), Some(None), "a tombstone is a known state");
        let snap = m.snapshot();
        assert_eq!(snap.len(), 2);
        m.publish(3, vec![(b"k".to_vec(), v(b"three"))]);
        m.remove_folded(snap.iter().map(|(k, e)| (&**k, e.lsn)));
        assert_eq!(
            m.get(b"k"),
            Some(v(b"three")),
            "changed after the snapshot: kept"
        );
        assert!(m.get(b"gone").is_none(), "folded: forgotten");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn ranges_are_sorted_and_bounded() {
        let m = Memtable::new();
        for k in [b"c".as_slice(), b"a", b"b", b"d"] {
            m.publish(1, vec![(k.to_vec(), v(k))]);
        }
        let keys: Vec<Box<[u8]>> = m
            .range(b"b", Some(b"d"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![Box::from(&b"b"[..]), Box::from(&b"c"[..])]);
        assert_eq!(m.range(b"", None).len(), 4);
    }
}
