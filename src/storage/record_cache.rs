//! A cache of decoded records read from redb, so a retry storm replaying the same keys is
//! answered from memory: no B-tree descent, no decoding. It also remembers keys redb does
//! not have: a fresh key is looked up by its caller's `begin`, and again by the writer
//! deciding its claim, and the second lookup must not cost a B-tree descent.
//!
//! It mirrors redb only (the memtable, read first, holds everything newer). redb changes
//! under a running store only through folds, and a fold evicts the keys it wrote after its
//! commit moves the epoch and before it forgets them from the memtable. A reader adds what
//! it read only if the epoch is still the one of the snapshot it read, checked under the
//! shard lock the eviction also takes, so a record read from an older snapshot never
//! lands after the eviction of its key.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::record::Record;

const SHARDS: usize = 16;
/// What an entry costs besides its key and response: the map slot, the record's fields
/// and the allocations' headers, roughly.
const ENTRY_OVERHEAD: usize = 128;

#[derive(Default)]
struct Shard {
    /// `None`: redb has no record under the key.
    entries: HashMap<Box<[u8]>, Option<Arc<Record>>>,
    bytes: usize,
}

/// A sharded map from storage key to the record redb holds, bounded in bytes.
pub(crate) struct RecordCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// The byte budget of each shard; 0 disables the cache.
    shard_budget: usize,
}

fn cost(key: &[u8], record: Option<&Record>) -> usize {
    key.len() + record.and_then(Record::response).map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
}

impl RecordCache {
    /// A cache of about `bytes` bytes (0: caches nothing).
    pub(crate) fn new(bytes: usize) -> RecordCache {
        RecordCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shard_budget: bytes / SHARDS,
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// What is cached for `key`: `Some(None)` if redb has no record under it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Arc<Record>>> {
        if self.shard_budget == 0 {
            return None;
        }
        self.shard(key).lock().entries.get(key).cloned()
    }

    /// Caches `record` (`None`: absent), read from a snapshot at `read_epoch`, if `epoch()`
    /// still says that epoch (see the module docs).
    pub(crate) fn insert(
        &self,
        key: &[u8],
        record: Option<&Record>,
        read_epoch: u64,
        epoch: impl Fn() -> u64,
    ) {
        let added = cost(key, record);
        if added > self.shard_budget {
            return;
        }
        let mut shard = self.shard(key).lock();
        if epoch() != read_epoch {
            return;
        }
        // Over budget: drop entries in the map's own order, which is unrelated to their age
        // or use (random eviction, without bookkeeping on every hit).
        while shard.bytes + added > self.shard_budget {
            let Some(victim) = shard.entries.keys().next().cloned() else {
                break;
            };
            if let Some(old) = shard.entries.remove(&victim) {
                shard.bytes -= cost(&victim, old.as_deref());
            }
        }
        if let Some(old) = shard
            .entries
            .insert(key.into(), record.map(|r| Arc::new(r.clone())))
        {
            shard.bytes -= cost(key, old.as_deref());
        }
        shard.bytes += added;
    }

    /// Forgets `keys` (a fold wrote them).
    pub(crate) fn evict<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        if self.shard_budget == 0 {
            return;
        }
        for key in keys {
            let mut shard = self.shard(key).lock();
            if let Some(old) = shard.entries.remove(key) {
                shard.bytes -= cost(key, old.as_deref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Change, ClaimSpec, Operation, transition};
    use crate::fingerprint::Fingerprint;
    use crate::record::ClaimId;
    use crate::time::Timestamp;

    fn completed(response: &[u8]) -> Record {
        let now = Timestamp::from_millis(1_000);
        let claim = ClaimId::from_u128(1);
        let put = |t: crate::decision::Transition| match t.change {
            Change::Put(record) => record,
            other => panic!("{other:?}"),
        };
        let spec = ClaimSpec::new(Fingerprint::of(b"x"), claim);
        let claimed = put(transition(None, Operation::Claim(spec), now));
        put(transition(
            Some(claimed),
            Operation::Complete {
                claim,
                response: response.to_vec(),
            },
            now,
        ))
    }

    #[test]
    fn a_record_read_before_an_eviction_is_not_cached_after_it() {
        let cache = RecordCache::new(1 << 20);
        let record = completed(b"old");
        cache.insert(b"k", Some(&record), 7, || 7);
        assert!(cache.get(b"k").is_some());
        cache.evict([b"k".as_slice()].into_iter());
        assert!(cache.get(b"k").is_none());
        // The fold moved the epoch on: a reader of the old snapshot adds nothing.
        cache.insert(b"k", None, 7, || 8);
        assert!(cache.get(b"k").is_none());
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let cache = RecordCache::new(SHARDS * 4 * (ENTRY_OVERHEAD + 110));
        let record = completed(&[1u8; 100]);
        for i in 0..1000u32 {
            cache.insert(&i.to_be_bytes(), Some(&record), 0, || 0);
        }
        for shard in cache.shards.iter() {
            let shard = shard.lock();
            assert!(shard.bytes <= cache.shard_budget);
            assert!(shard.entries.len() <= 4);
        }
        let hits = (0..1000u32)
            .filter(|i| cache.get(&i.to_be_bytes()).is_some())
            .count();
        assert!(hits > 0 && hits <= SHARDS * 4, "{hits}");
    }

    #[test]
    fn keys_redb_does_not_have_are_cached_as_absent() {
        let cache = RecordCache::new(1 << 20);
        cache.insert(b"fresh", None, 0, || 0);
        assert!(matches!(cache.get(b"fresh"), Some(None)));
        assert!(cache.get(b"unknown").is_none());
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = RecordCache::new(0);
        cache.insert(b"k", Some(&completed(b"r")), 0, || 0);
        assert!(cache.get(b"k").is_none());
    }
}
