//! The in-process in-flight map: callers in this process that `begin` the same key line up
//! behind one another instead of all going to the writer.
//!
//! The map is split into stripes, each a small hash map under its own mutex, so unrelated
//! keys rarely contend. Each caller in this process that asks the writer for a key's claim,
//! or holds it, has a slot with its own condition variable, so a holder finishing wakes only
//! the waiters of its own key.
//!
//! A key usually has one slot. A caller whose wait ran out, or that found the key held for
//! another request, asks the writer too, with a slot of its own on top of the others: so
//! whoever holds the claim in this process always has a slot in the map, and a caller coming
//! next waits for it (on the newest slot) instead of being told "in progress". A caller that
//! found the key vacant, but was overtaken by such a caller while it asked, looks again when
//! the writer answers "in progress".
//!
//! The map is an optimisation of waiting, not the source of exclusivity: the writer decides
//! every claim against the durable record, so two callers asking at once can never both
//! execute a key.
//!
//! Async callers wait for the same slots as futures ([`InflightMap::enter_async`]): a slot
//! that changes wakes their tasks as well as the threads on its condition variable.
//!
//! A blocking caller whose own thread holds the key is not made to wait for itself: a slot
//! held by a blocking caller records its thread. Async callers are not told apart so: a
//! task moves between a runtime's threads, and one thread runs many tasks, so a thread says
//! nothing about which task holds a key. Their slots record no thread, and an async caller
//! waits (without holding a thread) up to its bound, even for a claim its own task holds.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::fingerprint::Fingerprint;
use crate::sync::{AtomicBool, Condvar, KeyHasher, Mutex};

const STRIPES: usize = 64;

/// Each key's slots, oldest first.
type Stripe = Mutex<HashMap<Vec<u8>, Vec<Arc<Slot>>>>;

/// The stripes of the map.
pub(crate) struct InflightMap {
    stripes: Box<[Stripe]>,
    hasher: KeyHasher,
}

struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
    /// Async callers waiting for the state to change. A waiter registers before it reads
    /// the state, and a change is made before these are woken, so no change goes unseen.
    tasks: Mutex<Vec<Waker>>,
    /// Another caller has put a slot on top of this one since (under the stripe's lock).
    overtaken: AtomicBool,
    /// Who entered: a holding thread is recorded, a holding task is not.
    caller: Caller,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// The entering caller is asking the writer for the claim.
    Claiming,
    /// The claim is durable and held by a caller in this process: the thread that began
    /// it (where threads can be told apart), for the request with this fingerprint.
    Held(Fingerprint, Option<ThreadId>),
    /// The slot's holder is gone: look again.
    Done,
}

/// What [`InflightMap::enter`] found. With a slot, ask the writer for the claim, and hold the
/// guard while claiming (and, if the claim succeeds, until the claim ends).
pub(crate) enum Entry {
    /// No one in this process is working on the key.
    Vacant(SlotGuard),
    /// A caller in this process holds the key for a different request.
    HeldForOtherRequest(SlotGuard),
    /// The wait ran out while another caller still held the key.
    TimedOut(SlotGuard),
    /// The calling thread itself holds the key: waiting would only wait for itself.
    HeldByCaller(SlotGuard),
    /// The caller that held the key is done: look again.
    Released,
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

    /// Takes a slot for the key if no one here is working on it; otherwise waits, until
    /// `deadline` at the latest, for the newest caller working on it to finish.
    pub(crate) fn enter(
        self: &Arc<Self>,
        key: &[u8],
        fingerprint: Fingerprint,
        deadline: Instant,
    ) -> Entry {
        let slot = match self.newest_or_take(key, Caller::Thread) {
            Ok(slot) => slot,
            Err(vacant) => return Entry::Vacant(vacant),
        };
        // The stripe is unlocked while waiting: other keys of the stripe are not held up.
        let mut state = slot.state.lock();
        let me = current_thread();
        let waited = loop {
            if let Some(waited) = Waited::judge(*state, fingerprint, me) {
                break waited;
            }
            if slot.changed.wait_until(&mut state, deadline).timed_out() {
                break Waited::timed_out(*state, fingerprint);
            }
        };
        drop(state);
        self.after_wait(key, waited, Caller::Thread)
    }

    /// [`enter`](Self::enter) for an async caller: the wait is a future, woken when the
    /// slot changes or the deadline passes, and holds no thread.
    ///
    /// It never answers [`Entry::HeldByCaller`]: a task is not tied to a thread (see the
    /// module docs), so it waits for a holder of the same request up to `deadline` even if
    /// that holder is its own task.
    pub(crate) async fn enter_async(
        self: &Arc<Self>,
        key: &[u8],
        fingerprint: Fingerprint,
        deadline: Instant,
    ) -> Entry {
        let slot = match self.newest_or_take(key, Caller::Task) {
            Ok(slot) => slot,
            Err(vacant) => return Entry::Vacant(vacant),
        };
        let waited = SlotChange {
            slot,
            fingerprint,
            deadline,
            timer: None,
        }
        .await;
        self.after_wait(key, waited, Caller::Task)
    }

    /// The newest slot of the key, to wait for; or, when no one here works on it, a new
    /// slot for the caller.
    fn newest_or_take(
        self: &Arc<Self>,
        key: &[u8],
        caller: Caller,
    ) -> Result<Arc<Slot>, SlotGuard> {
        let mut stripe = self.stripe(key).lock();
        match stripe.get(key).and_then(|slots| slots.last()) {
            Some(newest) => Ok(Arc::clone(newest)),
            None => Err(self.push(&mut stripe, key, caller)),
        }
    }

    fn after_wait(self: &Arc<Self>, key: &[u8], waited: Waited, caller: Caller) -> Entry {
        let gave_up = match waited {
            Waited::Released => return Entry::Released,
            Waited::GaveUp(gave_up) => gave_up,
        };
        // This caller asks the writer too, and whoever comes next waits for its answer.
        let guard = self.push(&mut self.stripe(key).lock(), key, caller);
        match gave_up {
            GaveUp::OtherRequest => Entry::HeldForOtherRequest(guard),
            GaveUp::Caller => Entry::HeldByCaller(guard),
            GaveUp::TimedOut => Entry::TimedOut(guard),
        }
    }

    /// Adds a slot for `key` on top of its others (if any), in its locked stripe.
    fn push(
        self: &Arc<Self>,
        stripe: &mut HashMap<Vec<u8>, Vec<Arc<Slot>>>,
        key: &[u8],
        caller: Caller,
    ) -> SlotGuard {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Claiming),
            changed: Condvar::new(),
            tasks: Mutex::new(Vec::new()),
            overtaken: AtomicBool::new(false),
            caller,
        });
        match stripe.get_mut(key) {
            Some(slots) => {
                if let Some(newest) = slots.last() {
                    newest.overtaken.store(true, Ordering::Release);
                }
                slots.push(Arc::clone(&slot));
            }
            None => {
                stripe.insert(key.to_vec(), vec![Arc::clone(&slot)]);
            }
        }
        SlotGuard {
            map: Arc::clone(self),
            key: key.to_vec(),
            slot,
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
    /// Whether another caller in this process has asked for the key since this one entered
    /// (its wait ran out, or it has another request): it may hold the key now, or have held
    /// it and be done already.
    pub(crate) fn overtaken(&self) -> bool {
        self.slot.overtaken.load(Ordering::Acquire)
    }

    /// The claim is durable, held by the caller: waiters with another fingerprint can stop
    /// waiting (conflict), and a blocking caller's thread will not wait for itself.
    pub(crate) fn hold(&self, fingerprint: Fingerprint) {
        let thread = match self.slot.caller {
            Caller::Thread => current_thread(),
            Caller::Task => None,
        };
        self.slot.set(SlotState::Held(fingerprint, thread));
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Unmap first, then mark done: a waiter that wakes and looks again either finds the
        // key free or another slot, never this one.
        {
            let mut stripe = self.map.stripe(&self.key).lock();
            if let Some(slots) = stripe.get_mut(&self.key) {
                slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
                if slots.is_empty() {
                    stripe.remove(&self.key);
                }
            }
        }
        self.slot.set(SlotState::Done);
    }
}

impl Slot {
    /// Changes the state and wakes every waiter, threads and tasks.
    fn set(&self, to: SlotState) {
        {
            let mut state = self.state.lock();
            *state = to;
            self.changed.notify_all();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            task.wake();
        }
    }
}

/// How waiting for another caller's slot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The holder is done: look again.
    Released,
    /// Stop waiting and ask the writer.
    GaveUp(GaveUp),
}

/// Why a waiter stopped waiting while the key was still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GaveUp {
    /// The key is held for another request.
    OtherRequest,
    /// The waiting thread itself holds the key: it would only wait for itself.
    Caller,
    /// The wait ran out.
    TimedOut,
}

impl Waited {
    /// Whether a waiter, running on thread `me` (`None`: a task, or threads that cannot be
    /// told apart), can stop on seeing `state` (before its deadline).
    fn judge(state: SlotState, fingerprint: Fingerprint, me: Option<ThreadId>) -> Option<Waited> {
        match state {
            SlotState::Done => Some(Waited::Released),
            SlotState::Held(held, _) if held != fingerprint => {
                Some(Waited::GaveUp(GaveUp::OtherRequest))
            }
            SlotState::Held(_, Some(holder)) if Some(holder) == me => {
                Some(Waited::GaveUp(GaveUp::Caller))
            }
            SlotState::Held(..) | SlotState::Claiming => None,
        }
    }

    /// How a wait whose deadline passed ends, seeing `state`.
    fn timed_out(state: SlotState, fingerprint: Fingerprint) -> Waited {
        match state {
            SlotState::Done => Waited::Released,
            SlotState::Held(held, _) if held != fingerprint => Waited::GaveUp(GaveUp::OtherRequest),
            SlotState::Held(..) | SlotState::Claiming => Waited::GaveUp(GaveUp::TimedOut),
        }
    }
}

/// An async wait for a slot to change, or for the deadline.
struct SlotChange {
    slot: Arc<Slot>,
    fingerprint: Fingerprint,
    deadline: Instant,
    /// Set on the first poll that has to wait: a wait decided at once (the deadline has
    /// passed, as for a caller that does not wait; or the slot is done) needs no timer.
    timer: Option<futures_timer::Delay>,
}

impl Future for SlotChange {
    type Output = Waited;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        // Registered before the state is read: a change after the read wakes this task.
        {
            let mut tasks = self.slot.tasks.lock();
            if !tasks.iter().any(|task| task.will_wake(cx.waker())) {
                tasks.push(cx.waker().clone());
            }
        }
        let state = *self.slot.state.lock();
        // A task is never taken for the holder (see the module docs).
        if let Some(waited) = Waited::judge(state, self.fingerprint, None) {
            return Poll::Ready(waited);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Poll::Ready(Waited::timed_out(state, self.fingerprint));
        }
        let timer = self
            .timer
            .get_or_insert_with(|| futures_timer::Delay::new(left));
        match Pin::new(timer).poll(cx) {
            Poll::Ready(()) => {
                let state = *self.slot.state.lock();
                Poll::Ready(Waited::timed_out(state, self.fingerprint))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard").finish_non_exhaustive()
    }
}

/// Who enters the map: a blocking caller, whose thread holds the claim it makes, or an
/// async task, which is tied to no thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Thread,
    Task,
}

/// The calling thread. Shuttle runs every modelled thread on one OS thread, so there
/// threads cannot be told apart and no caller is ever taken for the holder.
#[cfg(not(all(test, shuttle)))]
fn current_thread() -> Option<ThreadId> {
    Some(std::thread::current().id())
}

#[cfg(all(test, shuttle))]
fn current_thread() -> Option<ThreadId> {
    None
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
        // Held by another thread: this one is a caller like any other.
        std::thread::scope(|s| s.spawn(|| guard.hold(A)).join().expect("holder thread"));
        // A caller that does not wait, or has another request, asks the writer too, with a
        // slot of its own (on top: the next caller waits for that one).
        assert!(matches!(
            map.enter(b"k", B, Instant::now()),
            Entry::HeldForOtherRequest(_)
        ));
        let Entry::TimedOut(timed_out) = map.enter(b"k", A, Instant::now()) else {
            panic!("the wait runs out")
        };
        assert!(matches!(
            map.enter(b"k", A, Instant::now()),
            Entry::TimedOut(_)
        ));
        drop(timed_out);
        assert_eq!(map.len(), 1);
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

    /// A caller whose wait ran out and that then took the key over (the holder's lease had
    /// ended) is in the map like any executor: a caller that comes next waits for it and
    /// replays its response, instead of being told in-progress at once. (Found by the
    /// shuttle model of the protocol: `long_waiter_never_in_progress`.)
    #[test]
    fn a_caller_that_waited_out_and_executes_is_waited_for() {
        use crate::{Begin, BeginOptions, ManualClock, Store, Timestamp};

        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        let store = Store::builder()
            .clock(clock.clone())
            .lease(Duration::from_secs(1))
            .sweep_interval(None)
            .open_in_memory()
            .expect("open");
        let Begin::Execute(stale) = store.begin("s", "k", A).expect("begin") else {
            panic!("the first caller executes")
        };
        // The holder outlives its lease; a caller that does not wait takes the key over.
        clock.advance(Duration::from_secs(2));
        let no_wait = BeginOptions::new().wait(Duration::ZERO);
        let Begin::Execute(claim) = store.begin_with("s", "k", A, &no_wait).expect("begin") else {
            panic!("the lease ended: take over")
        };
        assert!(claim.is_recovery());
        // The stale holder finds its claim lost.
        assert!(stale.complete(b"stale").is_err());

        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || {
                let wait = BeginOptions::new().wait(Duration::from_secs(30));
                match store.begin_with("s", "k", A, &wait).expect("begin") {
                    Begin::Replay(r) => r.response,
                    other => panic!("the waiter got {}", other.kind()),
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        claim.complete(b"done").expect("complete");
        assert_eq!(waiter.join().expect("waiter thread"), b"done");
        store.close().expect("close");
    }

    /// A caller that found the key vacant learns that another caller asked for it meanwhile,
    /// even when that one is done again by the time it looks.
    #[test]
    fn a_slot_knows_it_was_overtaken() {
        let map = Arc::new(InflightMap::new());
        let Entry::Vacant(first) = map.enter(b"k", A, Instant::now()) else {
            panic!("the key is free")
        };
        assert!(!first.overtaken());
        let Entry::TimedOut(second) = map.enter(b"k", A, Instant::now()) else {
            panic!("the wait runs out")
        };
        second.hold(A);
        drop(second);
        assert!(first.overtaken());
        assert!(!matches!(
            map.enter(b"k", A, Instant::now()),
            Entry::Vacant(_)
        ));
        drop(first);
        assert_eq!(map.len(), 0);
    }

    /// The thread that holds a key is answered at once instead of waiting for itself; a
    /// different request of that thread is told so as before.
    #[test]
    fn the_holding_thread_does_not_wait_for_itself() {
        let map = Arc::new(InflightMap::new());
        let Entry::Vacant(guard) = map.enter(b"k", A, Instant::now()) else {
            panic!("first caller enters")
        };
        guard.hold(A);
        let far = deadline_after(Duration::from_secs(3600));
        assert!(matches!(map.enter(b"k", A, far), Entry::HeldByCaller(_)));
        assert!(matches!(
            map.enter(b"k", B, far),
            Entry::HeldForOtherRequest(_)
        ));
        // Another thread still waits (here: until its deadline).
        let other = std::thread::scope(|s| {
            s.spawn(|| matches!(map.enter(b"k", A, Instant::now()), Entry::TimedOut(_)))
                .join()
                .expect("other thread")
        });
        assert!(other);
    }

    /// Threads say nothing about async tasks: a task is not answered at once on a key held
    /// by a blocking caller of its thread, nor is a blocking caller on a key an async
    /// caller of its thread holds. Both wait (here: until their deadline).
    #[test]
    fn async_callers_are_not_told_apart_by_thread() {
        use crate::detached::block_on;

        let map = Arc::new(InflightMap::new());
        let Entry::Vacant(held) = map.enter(b"k", A, Instant::now()) else {
            panic!("a blocking caller enters")
        };
        held.hold(A);
        assert!(matches!(
            block_on(map.enter_async(b"k", A, Instant::now())),
            Entry::TimedOut(_)
        ));
        drop(held);
        let Entry::Vacant(task) = block_on(map.enter_async(b"j", A, Instant::now())) else {
            panic!("an async caller enters")
        };
        task.hold(A);
        assert!(matches!(
            map.enter(b"j", A, Instant::now()),
            Entry::TimedOut(_)
        ));
        assert!(matches!(
            block_on(map.enter_async(b"j", A, Instant::now())),
            Entry::TimedOut(_)
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
