//! The poison flag: a panic in one of idemdb's threads (the writer, the folder, a sweep, a
//! commit on a caller's thread) means idemdb's own state can no longer be trusted, so the
//! engine refuses every later call with [`Error::Poisoned`] instead of carrying on, or
//! calling the file corrupt when it is not.
//!
//! A panic inside redb while it reads a file that was never verified (an open, or any read
//! of a store opened without `verify_on_open`) may well be damage, and stays
//! [`Error::Corrupt`]: see [`Poison::caught`].

use std::any::Any;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Error;

/// The first panic the engine caught, for every later call to report.
#[derive(Default)]
pub(crate) struct Poison {
    cause: Mutex<Option<Error>>,
    set: Condvar,
}

impl Poison {
    /// Poisons the engine (the first panic wins) and returns the error to report.
    /// `place` says where the panic was caught, as in "the writer thread panicked".
    pub(crate) fn poison(&self, place: &str, payload: &(dyn Any + Send)) -> Error {
        self.poison_noting(place, payload, "")
    }

    /// [`poison`](Self::poison), with `note` after the panic's message.
    pub(crate) fn poison_noting(
        &self,
        place: &str,
        payload: &(dyn Any + Send),
        note: &str,
    ) -> Error {
        let mut cause = self.cause.lock();
        let error = cause
            .get_or_insert_with(|| {
                let thread = std::thread::current();
                let on = thread
                    .name()
                    .map(|n| format!(" on thread {n}"))
                    .unwrap_or_default();
                let detail = format!("{place}{on}: {}{note}", panic_message(payload));
                tracing::error!(%detail, "idemdb caught a panic; the store is poisoned");
                Error::Poisoned { detail }
            })
            .clone();
        self.set.notify_all();
        error
    }

    /// The error for a panic caught at `place`: [`Error::Corrupt`] if it happened while
    /// redb read a file that was never verified (damage is then the likely cause),
    /// otherwise the engine is poisoned.
    pub(crate) fn caught(&self, place: &str, payload: &(dyn Any + Send), verified: bool) -> Error {
        if verified {
            self.poison(place, payload)
        } else {
            Error::Corrupt {
                detail: format!(
                    "the storage engine failed on damaged data: {}",
                    panic_message(payload)
                ),
            }
        }
    }

    /// Why the engine is poisoned, if it is.
    pub(crate) fn get(&self) -> Option<Error> {
        self.cause.lock().clone()
    }

    /// Fails with the poison, if there is one.
    pub(crate) fn check(&self) -> Result<(), Error> {
        self.get().map_or(Ok(()), Err)
    }

    /// Waits up to `timeout` for the engine to be poisoned: a thread that panicked drops the
    /// answers it owed while it unwinds, a moment before its catch poisons the engine.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Error> {
        let deadline = Instant::now() + timeout;
        let mut cause = self.cause.lock();
        while cause.is_none() {
            if self.set.wait_until(&mut cause, deadline).timed_out() {
                break;
            }
        }
        cause.clone()
    }

    /// [`wait`](Self::wait) for an async caller: looks every millisecond, on a timer.
    pub(crate) async fn wait_async(&self, timeout: Duration) -> Option<Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let cause = self.get();
            if cause.is_some() || Instant::now() >= deadline {
                return cause;
            }
            futures_timer::Delay::new(Duration::from_millis(1)).await;
        }
    }
}

/// The message a panic carried.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Test-only panics at chosen places, so the tests can prove that a panic poisons the
/// store (feature `testing`; nothing is armed unless a test arms it).
#[cfg(feature = "testing")]
pub(crate) mod injected {
    use std::sync::atomic::{AtomicBool, Ordering};

    use parking_lot::Mutex;

    /// Where an injected panic fires.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum PanicSite {
        /// Deciding an operation in a commit (on the writer thread, or on the caller's
        /// thread when it commits alone).
        Commit,
        /// Folding a change into the database (on the folder thread).
        Fold,
    }

    static ARMED: AtomicBool = AtomicBool::new(false);
    static PANICS: Mutex<Vec<(PanicSite, Vec<u8>)>> = Mutex::new(Vec::new());

    /// Makes the next commit or fold (as `site` says) of a key in `scope` panic, once.
    /// Keys of other scopes are untouched, so tests running side by side do not meet it.
    pub fn inject_panic(site: PanicSite, scope: &str) {
        PANICS.lock().push((site, crate::key::scope_prefix(scope)));
        ARMED.store(true, Ordering::Release);
    }

    /// Panics if a panic is armed for `site` and the scope of `key`.
    pub(crate) fn fire(site: PanicSite, key: &[u8]) {
        if !ARMED.load(Ordering::Acquire) {
            return;
        }
        let mut panics = PANICS.lock();
        let Some(i) = panics
            .iter()
            .position(|(s, prefix)| *s == site && key.starts_with(prefix))
        else {
            return;
        };
        panics.swap_remove(i);
        ARMED.store(!panics.is_empty(), Ordering::Release);
        drop(panics);
        panic!("a panic injected by a test at {site:?}");
    }
}
