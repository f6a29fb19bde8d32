//! Work an async caller hands off instead of waiting for it: the abandonment of a claim it
//! dropped, the end of a `begin` it cancelled, a close. Each runs on a short-lived thread of
//! its own, so no runtime thread ever waits for a commit; these are rare (a claim dropped
//! without an outcome, a cancelled request, a shutdown).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::storage::answer;

/// Runs `work` on a thread named `name`. If no thread can be started (the process is out of
/// threads), runs it here instead: late is better than never for work that frees a key.
pub(crate) fn finish_off_thread(name: &str, work: impl FnOnce() + Send + 'static) {
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
    finish_off_thread(name, move || reply.send(work()));
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
