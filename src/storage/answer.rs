//! A one-shot answer from the writer thread to the caller waiting for it.
//!
//! Why not a channel: a caller waits a whole sync (hundreds of microseconds), and a
//! crossbeam channel spins and yields before it sleeps. With many callers on few cores those
//! yields take the CPU from the threads with work to do: in a `perf record` of the
//! comparison's W2 (16 threads, 2 cores), `sched_yield` and the channel's spin loop were
//! 29% of the samples. A caller here sleeps at once and is woken once.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

enum Slot<T> {
    Waiting,
    Answered(T),
    /// The answering side went away without answering (the writer stopped).
    Abandoned,
}

struct Handoff<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// The writer's end: answers once.
pub(crate) struct Answerer<T> {
    shared: Arc<Handoff<T>>,
}

/// The caller's end: waits for the answer.
pub(crate) struct Answer<T> {
    shared: Arc<Handoff<T>>,
}

/// A connected pair: the answerer goes with the job, the caller keeps the answer.
pub(crate) fn pair<T>() -> (Answerer<T>, Answer<T>) {
    let shared = Arc::new(Handoff {
        slot: Mutex::new(Slot::Waiting),
        ready: Condvar::new(),
    });
    (
        Answerer {
            shared: Arc::clone(&shared),
        },
        Answer { shared },
    )
}

impl<T> Answerer<T> {
    /// Hands the answer over and wakes the caller (if it still waits).
    pub(crate) fn send(self, value: T) {
        self.settle(Slot::Answered(value));
    }

    fn settle(&self, to: Slot<T>) {
        let mut slot = self.shared.slot.lock();
        if matches!(*slot, Slot::Waiting) {
            *slot = to;
            self.shared.ready.notify_one();
        }
    }
}

impl<T> Drop for Answerer<T> {
    fn drop(&mut self) {
        // After `send` this finds the slot answered and leaves it.
        self.settle(Slot::Abandoned);
    }
}

impl<T> Answer<T> {
    /// Waits for the answer; `None` if the answerer was dropped without one.
    pub(crate) fn wait(self) -> Option<T> {
        let mut slot = self.shared.slot.lock();
        while matches!(*slot, Slot::Waiting) {
            self.shared.ready.wait(&mut slot);
        }
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            Slot::Answered(value) => Some(value),
            Slot::Waiting | Slot::Abandoned => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_reaches_a_waiting_caller() {
        let (answerer, answer) = pair();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            answerer.send(42);
        });
        assert_eq!(answer.wait(), Some(42));
        writer.join().expect("the answering thread");
    }

    #[test]
    fn an_answer_sent_before_the_wait_is_kept() {
        let (answerer, answer) = pair();
        answerer.send("done");
        assert_eq!(answer.wait(), Some("done"));
    }

    #[test]
    fn a_dropped_answerer_ends_the_wait_without_an_answer() {
        let (answerer, answer) = pair::<u8>();
        let writer = std::thread::spawn(move || drop(answerer));
        assert_eq!(answer.wait(), None);
        writer.join().expect("the dropping thread");
    }
}
