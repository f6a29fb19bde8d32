//! A counter that threads can wait on for a change: how the writer asks the folder for a
//! fold, and how a fold tells the writer that journal space was freed.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A counter that threads can wait on for a change.
#[derive(Default)]
pub(crate) struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Waits until the generation differs from `seen`, or `timeout` passes.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let mut generation = self.generation.lock();
        let deadline = Instant::now() + timeout;
        while *generation == seen {
            if self
                .changed
                .wait_until(&mut generation, deadline)
                .timed_out()
            {
                return;
            }
        }
    }
}
