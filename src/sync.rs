//! The locks, condition variables and atomics of the in-flight map, behind one name.
//!
//! In every normal build these are parking_lot's and std's types, re-exported as they are:
//! no wrapper, no cost. In the crate's own tests built with `RUSTFLAGS="--cfg shuttle"` they
//! are shuttle's model-checked primitives, the lock and condition variable behind thin
//! adapters with parking_lot's API, so the in-flight protocol runs unchanged under shuttle's
//! schedulers (see `inflight/shuttle_tests.rs`). The switch is a `--cfg`, not a cargo feature, so
//! `--all-features` never changes the primitives; and it needs `test` too, so a library
//! built under the cfg for anything but its own unit tests is the normal one. Under the cfg,
//! run only `shuttle_tests` (as `.ci/run` does): the other unit tests use real threads, which
//! shuttle's primitives do not serve.
//!
//! [shuttle]: https://docs.rs/shuttle

#[cfg(not(all(test, shuttle)))]
pub(crate) use parking_lot::{Condvar, Mutex};
#[cfg(not(all(test, shuttle)))]
pub(crate) use std::sync::atomic::AtomicBool;

#[cfg(all(test, shuttle))]
pub(crate) use model::{Condvar, Mutex};
#[cfg(all(test, shuttle))]
pub(crate) use shuttle::sync::atomic::AtomicBool;

/// A build of the in-flight map whose hasher is the same in every run, so a failing shuttle
/// schedule replays onto the same stripes and a test can put two keys in one stripe.
#[cfg(all(test, shuttle))]
pub(crate) type KeyHasher =
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// The hasher that spreads keys over the in-flight map's stripes (seeded per map).
#[cfg(not(all(test, shuttle)))]
pub(crate) type KeyHasher = std::hash::RandomState;

#[cfg(all(test, shuttle))]
pub(crate) mod model {
    //! parking_lot's API over shuttle's primitives.
    //!
    //! Shuttle does not model time: its `Condvar::wait_timeout` never times out. A timed wait
    //! is modelled here by how far away its deadline is:
    //!
    //! - more than [`UNBOUNDED_WAIT`] away: the deadline never comes within one model run, so
    //!   this is a plain wait, ended only by a notification. A lost wake-up then leaves the
    //!   waiter blocked for ever, which shuttle reports as a deadlock.
    //! - nearer: the deadline may pass at any moment. The wait lets every other thread run,
    //!   then either times out or returns as a spurious wake-up would, by a choice that
    //!   shuttle makes (and replays) like a scheduling decision. Once the deadline has
    //!   really passed, it always times out.

    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use shuttle::rand::Rng;

    /// Waits whose deadline is further away than this never time out in a model run.
    pub(crate) const UNBOUNDED_WAIT: Duration = Duration::from_secs(60);

    /// A mutex with parking_lot's API (no poisoning).
    pub(crate) struct Mutex<T> {
        inner: shuttle::sync::Mutex<T>,
    }

    /// The guard of a [`Mutex`].
    pub(crate) struct MutexGuard<'a, T> {
        mutex: &'a shuttle::sync::Mutex<T>,
        // `None` only inside `Condvar::wait_until`, while the mutex is released.
        guard: Option<shuttle::sync::MutexGuard<'a, T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex {
                inner: shuttle::sync::Mutex::new(value),
            }
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                mutex: &self.inner,
                guard: Some(lock(&self.inner)),
            }
        }
    }

    fn lock<T>(mutex: &shuttle::sync::Mutex<T>) -> shuttle::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            self.guard.as_deref().expect("the mutex is held")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_deref_mut().expect("the mutex is held")
        }
    }

    /// A condition variable with parking_lot's API; it counts the wake-ups it delivers.
    pub(crate) struct Condvar {
        inner: shuttle::sync::Condvar,
        wakeups: AtomicUsize,
    }

    /// Whether a timed wait timed out.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(self) -> bool {
            self.0
        }
    }

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar {
                inner: shuttle::sync::Condvar::new(),
                wakeups: AtomicUsize::new(0),
            }
        }

        pub(crate) fn notify_all(&self) {
            self.inner.notify_all();
        }

        /// How many plain waits on this condition variable a notification has ended.
        pub(crate) fn wakeups(&self) -> usize {
            self.wakeups.load(Ordering::SeqCst)
        }

        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            deadline: Instant,
        ) -> WaitTimeoutResult {
            let held = guard.guard.take().expect("the mutex is held");
            let left = deadline.saturating_duration_since(Instant::now());
            if left > UNBOUNDED_WAIT {
                guard.guard = Some(
                    self.inner
                        .wait(held)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                self.wakeups.fetch_add(1, Ordering::SeqCst);
                return WaitTimeoutResult(false);
            }
            drop(held);
            shuttle::thread::yield_now();
            guard.guard = Some(lock(guard.mutex));
            WaitTimeoutResult(left.is_zero() || shuttle::rand::thread_rng().gen_bool(0.5))
        }
    }
}
