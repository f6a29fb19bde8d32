//! A blocked Bloom filter over the keys of one generation of records.
//!
//! A lookup of a key no generation holds (every fresh claim) must not descend into every
//! generation's B-tree: the filter answers "certainly not here" for about 99% of them from
//! memory. Each key sets its bits inside one 512-bit block, so a query touches one cache
//! line. Bits are only ever set, never cleared, so a filter may say "maybe" for a key since
//! removed, never "no" for a key present; concurrent readers can query while a fold inserts.
//!
//! The bits are persisted when a generation is sealed, so the hash must never change:
//! it is BLAKE3, which the format depends on anyway.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits per key the filter is sized for: about 1% false positives at 8 bits set per key.
const BITS_PER_KEY: usize = 10;
/// Words per block: 8 × 64 bits, one cache line.
const BLOCK_WORDS: usize = 8;
/// Bits set per key, each chosen by 9 bits of the hash.
const BITS_SET: usize = 8;
/// The persisted form's version byte.
const FORMAT: u8 = 1;

/// Where a key's bits are: computed once per key, then tested against every generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    block_hash: u64,
    bits: [u16; BITS_SET],
}

impl Probe {
    pub(crate) fn of(key: &[u8]) -> Probe {
        let hash = blake3::hash(key);
        let bytes = hash.as_bytes();
        let mut block_hash = [0u8; 8];
        block_hash.copy_from_slice(&bytes[..8]);
        let mut spread = [0u8; 16];
        spread.copy_from_slice(&bytes[8..24]);
        let spread = u128::from_le_bytes(spread);
        let mut bits = [0u16; BITS_SET];
        for (i, bit) in bits.iter_mut().enumerate() {
            // 9 bits pick one of the block's 512.
            *bit = ((spread >> (i * 9)) & 0x1ff) as u16;
        }
        Probe {
            block_hash: u64::from_le_bytes(block_hash),
            bits,
        }
    }
}

/// The filter of one generation.
#[derive(Debug)]
pub(crate) struct KeyFilter {
    words: Box<[AtomicU64]>,
}

impl KeyFilter {
    /// An empty filter sized for `keys` keys.
    pub(crate) fn with_capacity(keys: usize) -> KeyFilter {
        let blocks = (keys.max(1) * BITS_PER_KEY).div_ceil(BLOCK_WORDS * 64);
        KeyFilter {
            words: (0..blocks * BLOCK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn block(&self, probe: &Probe) -> &[AtomicU64] {
        let blocks = (self.words.len() / BLOCK_WORDS) as u128;
        // Multiply-shift maps the hash onto the blocks without a division's bias.
        let block = ((u128::from(probe.block_hash) * blocks) >> 64) as usize;
        &self.words[block * BLOCK_WORDS..(block + 1) * BLOCK_WORDS]
    }

    pub(crate) fn insert(&self, probe: &Probe) {
        let block = self.block(probe);
        for bit in probe.bits {
            let bit = usize::from(bit);
            block[bit / 64].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// `false` only if the key was never inserted.
    pub(crate) fn may_contain(&self, probe: &Probe) -> bool {
        let block = self.block(probe);
        probe.bits.iter().all(|&bit| {
            let bit = usize::from(bit);
            block[bit / 64].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    /// The persisted form: a version byte, then the words in little-endian order.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.words.len() * 8);
        out.push(FORMAT);
        for word in self.words.iter() {
            out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out
    }

    /// Reads the persisted form; `None` if it is not one (the caller rebuilds the filter).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<KeyFilter> {
        let (&format, words) = bytes.split_first()?;
        if format != FORMAT || words.is_empty() || words.len() % (BLOCK_WORDS * 8) != 0 {
            return None;
        }
        let words = words
            .chunks_exact(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                AtomicU64::new(u64::from_le_bytes(word))
            })
            .collect();
        Some(KeyFilter { words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        format!("key-{i}").into_bytes()
    }

    #[test]
    fn every_inserted_key_is_found_and_most_others_are_not() {
        let filter = KeyFilter::with_capacity(10_000);
        for i in 0..10_000 {
            filter.insert(&Probe::of(&key(i)));
        }
        assert!((0..10_000).all(|i| filter.may_contain(&Probe::of(&key(i)))));
        let false_positives = (10_000..110_000)
            .filter(|&i| filter.may_contain(&Probe::of(&key(i))))
            .count();
        // Sized for 1%; a blocked filter does a little worse. 3% would mean a broken hash.
        assert!(false_positives < 3_000, "{false_positives} of 100,000");
    }

    #[test]
    fn the_persisted_form_round_trips_and_garbage_is_refused() {
        let filter = KeyFilter::with_capacity(100);
        filter.insert(&Probe::of(b"a"));
        let bytes = filter.to_bytes();
        let back = KeyFilter::from_bytes(&bytes).expect("decodes");
        assert!(back.may_contain(&Probe::of(b"a")));
        assert_eq!(back.to_bytes(), bytes);
        assert!(KeyFilter::from_bytes(&[]).is_none());
        assert!(KeyFilter::from_bytes(&[FORMAT]).is_none());
        assert!(KeyFilter::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert!(KeyFilter::from_bytes(&other_version).is_none());
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let filter = KeyFilter::with_capacity(0);
        assert!(!filter.may_contain(&Probe::of(b"anything")));
    }
}
