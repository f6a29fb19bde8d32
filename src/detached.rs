//! Work an async caller hands off instead of waiting for it: the abandonment of a claim it
//! dropped and the end of a `begin` it cancelled (on the store's finisher thread), a close
//! (on a thread of its own). So no runtime thread ever waits for a commit.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use crossbeam_channel::{SendError, Sender};

use crate::storage::answer;

/// Work handed off by async callers of one store, done in order on one thread of the
/// store's, started on first use: however many claims are dropped or begins cancelled at
/// once (a stalled disk, a burst of client time-outs), they cost one thread, not one each.
#[derive(Default)]
pub(crate) struct Finisher {
    queue: OnceLock<Sender<Box<dyn FnOnce() + Send>>>,
}

impl Finisher {
    /// Queues `work`. If the finisher thread cannot be started (the process is out of
    /// threads), runs it here instead: late is better than never for work that ends a claim.
    pub(crate) fn hand_off(&self, work: impl FnOnce() + Send + 'static) {
        let queue = self.queue.get_or_init(|| {
            let (queue, jobs) = crossbeam_channel::unbounded::<Box<dyn FnOnce() + Send>>();
            let started = std::thread::Builder::new()
                .name("idemdb-finisher".to_owned())
                .spawn(move || {
                    for job in jobs {
                        job();
                    }
                });
            if let Err(error) = started {
                tracing::warn!(%error, "no thread to finish dropped claims: finishing them on the caller's thread");
            }
            queue
        });
        if let Err(SendError(work)) = queue.send(Box::new(work)) {
            work();
        }
    }
}

/// Runs `work` on a thread named `name`; if none can be started, here.
fn on_a_thread(name: &str, work: impl FnOnce() + Send + 'static) {
    let work = Arc::new(parking_lot::Mutex::new(Some(work)));
    let on_thread = Arc::clone(&work);
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some(work) = on_thread.lock().take() {
                work();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread for {name}: doing it on the caller's thread");
        if let Some(work) = work.lock().take() {
            work();
        }
    }
}

/// Runs `work` on a thread of its own and awaits its result: for the rare calls that block
/// by nature (closing the store joins its threads).
pub(crate) async fn on_own_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (reply, answer) = answer::pair();
    on_a_thread(name, move || reply.send(work()));
    answer.await
}

/// Polls `future` to its end on this thread, sleeping between polls. Only for the threads
/// above, which have nothing else to do.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}
