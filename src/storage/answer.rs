//! A one-shot answer from the writer thread to the caller waiting for it.
//!
//! Why not a channel: a caller waits a whole sync (hundreds of microseconds), and a
//! crossbeam channel spins and yields before it sleeps. With many callers on few cores those
//! yields take the CPU from the threads with work to do: in a `perf record` of the
//! comparison's W2 (16 threads, 2 cores), `sched_yield` and the channel's spin loop were
//! 29% of the samples. A caller here sleeps at once and is woken once.
//!
//! An async caller awaits the same slot as a future: the writer wakes its task instead of a
//! thread, so no runtime thread ever sleeps on a commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};

enum Slot<T> {
    Waiting,
    Answered(T),
    /// The answering side went away without answering (the writer stopped).
    Abandoned,
}

struct Handoff<T> {
    slot: Mutex<Waiting<T>>,
    ready: Condvar,
}

/// The slot, and the task to wake when it is settled (an async caller's).
struct Waiting<T> {
    slot: Slot<T>,
    task: Option<Waker>,
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
        slot: Mutex::new(Waiting {
            slot: Slot::Waiting,
            task: None,
        }),
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
        let task = {
            let mut waiting = self.shared.slot.lock();
            if !matches!(waiting.slot, Slot::Waiting) {
                return;
            }
            waiting.slot = to;
            self.shared.ready.notify_one();
            waiting.task.take()
        };
        // Woken outside the lock: the task may be polled on another thread at once.
        if let Some(task) = task {
            task.wake();
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
        let mut waiting = self.shared.slot.lock();
        while matches!(waiting.slot, Slot::Waiting) {
            self.shared.ready.wait(&mut waiting);
        }
        take(&mut waiting.slot)
    }
}

fn take<T>(slot: &mut Slot<T>) -> Option<T> {
    match std::mem::replace(slot, Slot::Abandoned) {
        Slot::Answered(value) => Some(value),
        Slot::Waiting | Slot::Abandoned => None,
    }
}

/// Awaiting the answer: `None` if the answerer was dropped without one.
impl<T> Future for Answer<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut waiting = self.shared.slot.lock();
        if matches!(waiting.slot, Slot::Waiting) {
            match &mut waiting.task {
                Some(task) if task.will_wake(cx.waker()) => {}
                task => *task = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        Poll::Ready(take(&mut waiting.slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detached::block_on;

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
    fn an_awaiting_task_is_woken_by_the_answer() {
        let (answerer, answer) = pair();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            answerer.send(7);
        });
        assert_eq!(block_on(answer), Some(7));
        writer.join().expect("the answering thread");
    }

    #[test]
    fn an_awaited_answer_sent_before_the_first_poll_is_kept() {
        let (answerer, answer) = pair();
        answerer.send("early");
        assert_eq!(block_on(answer), Some("early"));
    }

    #[test]
    fn a_dropped_answerer_ends_an_await_without_an_answer() {
        let (answerer, answer) = pair::<u8>();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            drop(answerer)
        });
        assert_eq!(block_on(answer), None);
        writer.join().expect("the dropping thread");
    }

    #[test]
    fn a_dropped_answerer_ends_the_wait_without_an_answer() {
        let (answerer, answer) = pair::<u8>();
        let writer = std::thread::spawn(move || drop(answerer));
        assert_eq!(answer.wait(), None);
        writer.join().expect("the dropping thread");
    }
}
