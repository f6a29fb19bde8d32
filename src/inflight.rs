//! The in-process in-flight map: callers in this process that `begin` the same key line up
//! behind one another instead of all going to the writer.
//!
//! The map is split into stripes, each a small hash map under its own mutex, so unrelated
//! keys rarely contend. Each key in flight has a slot with its own condition variable, so a
//! holder finishing wakes only the waiters of its own key.
//!
//! The map is an optimisation of waiting, not the source of exclusivity: the writer decides
//! every claim against the durable record, so even a caller that bypasses the map (after its
//! wait ran out) can never execute a key that another claim holds.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fingerprint::Fingerprint;
use crate::sync::{Condvar, KeyHasher, Mutex};

const STRIPES: usize = 64;

type Stripe = Mutex<HashMap<Vec<u8>, Arc<Slot>>>;

/// The stripes of the map.
pub(crate) struct InflightMap {
    stripes: Box<[Stripe]>,
    hasher: KeyHasher,
}

struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// The entering caller is asking the writer for the claim.
    Claiming,
    /// The claim is durable and held by a caller in this process.
    Held(Fingerprint),
    /// The slot's holder is gone: look again.
    Done,
}

/// What [`InflightMap::enter`] found.
pub(crate) enum Entry {
    /// No one in this process is working on the key: go ahead, and hold this guard while
    /// claiming (and, if the claim succeeds, until the claim ends).
    Vacant(SlotGuard),
    /// A caller in this process holds the key for a different request.
    HeldForOtherRequest,
    /// The caller that held the key is done: look again.
    Released,
    /// The wait ran out while another caller still held the key.
    TimedOut,
}

impl InflightMap {
    pub(crate) fn new() -> InflightMap {
        InflightMap {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: KeyHasher::default(),
        }
    }

    fn stripe(&self, key: &[u8]) -> &Stripe {
        let index = (self.hasher.hash_one(key) as usize) % self.stripes.len();
        &self.stripes[index]
    }

    /// Takes the key's slot if it is free; otherwise waits, until `deadline` at the latest,
    /// for the caller holding it to finish.
    pub(crate) fn enter(
        self: &Arc<Self>,
        key: &[u8],
        fingerprint: Fingerprint,
        deadline: Instant,
    ) -> Entry {
        let slot = {
            let mut stripe = self.stripe(key).lock();
            match stripe.get(key) {
                Some(slot) => Arc::clone(slot),
                None => {
                    let slot = Arc::new(Slot {
                        state: Mutex::new(SlotState::Claiming),
                        changed: Condvar::new(),
                    });
                    stripe.insert(key.to_vec(), Arc::clone(&slot));
                    return Entry::Vacant(SlotGuard {
                        map: Arc::clone(self),
                        key: key.to_vec(),
                        slot,
                    });
                }
            }
        };
        // The stripe is unlocked while waiting: other keys of the stripe are not held up.
        let mut state = slot.state.lock();
        loop {
            match *state {
                SlotState::Done => return Entry::Released,
                SlotState::Held(held) if held != fingerprint => {
                    return Entry::HeldForOtherRequest;
                }
                SlotState::Held(_) | SlotState::Claiming => {}
            }
            if slot.changed.wait_until(&mut state, deadline).timed_out() {
                return match *state {
                    SlotState::Done => Entry::Released,
                    SlotState::Held(held) if held != fingerprint => Entry::HeldForOtherRequest,
                    _ => Entry::TimedOut,
                };
            }
        }
    }

    /// How many keys are in flight in this process (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }
}

/// Holds a key's slot; dropping it frees the key and wakes that key's waiters.
pub(crate) struct SlotGuard {
    map: Arc<InflightMap>,
    key: Vec<u8>,
    slot: Arc<Slot>,
}

impl SlotGuard {
    /// The claim is durable: waiters with another fingerprint can stop waiting (conflict).
    pub(crate) fn hold(&self, fingerprint: Fingerprint) {
        let mut state = self.slot.state.lock();
        *state = SlotState::Held(fingerprint);
        self.slot.changed.notify_all();
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Unmap first, then mark done: a waiter that wakes and looks again either finds the
        // key free or a newer slot, never this one.
        {
            let mut stripe = self.map.stripe(&self.key).lock();
            if stripe
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                stripe.remove(&self.key);
            }
        }
        let mut state = self.slot.state.lock();
        *state = SlotState::Done;
        self.slot.changed.notify_all();
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard").finish_non_exhaustive()
    }
}

/// `now + wait`, saturating far in the future.
pub(crate) fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

#[cfg(all(test, shuttle))]
mod shuttle_tests;

// These use real threads; under `--cfg shuttle` the map's locks are shuttle's.
#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;

    const A: Fingerprint = Fingerprint::from_bytes([1; 32]);
    const B: Fingerprint = Fingerprint::from_bytes([2; 32]);

    #[test]
    fn second_caller_waits_then_is_released() {
        let map = Arc::new(InflightMap::new());
        let Entry::Vacant(guard) = map.enter(b"k", A, Instant::now()) else {
            panic!("first caller enters")
        };
        guard.hold(A);
        assert!(matches!(
            map.enter(b"k", A, Instant::now()),
            Entry::TimedOut
        ));
        assert!(matches!(
            map.enter(b"k", B, Instant::now()),
            Entry::HeldForOtherRequest
        ));
        let waiter = {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                matches!(
                    map.enter(b"k", A, deadline_after(Duration::from_secs(30))),
                    Entry::Released
                )
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(guard);
        assert!(waiter.join().expect("waiter thread"));
        assert_eq!(map.len(), 0);
        assert!(matches!(
            map.enter(b"k", A, Instant::now()),
            Entry::Vacant(_)
        ));
    }

    #[test]
    fn other_keys_are_independent() {
        let map = Arc::new(InflightMap::new());
        let Entry::Vacant(_a) = map.enter(b"a", A, Instant::now()) else {
            panic!("enters")
        };
        let Entry::Vacant(_b) = map.enter(b"b", A, Instant::now()) else {
            panic!("enters")
        };
        assert_eq!(map.len(), 2);
    }
}
