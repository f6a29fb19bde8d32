//! Shutting down without losing an outcome: the layer counts the store work it has started
//! (a `begin`, and for an execution everything up to its recorded outcome), and a
//! [`DrainHandle`] waits for that count to reach zero before the store is closed.
//!
//! A handler whose client has gone keeps running in its own task (see
//! [`run_to_completion`](super::IdempotencyLayerBuilder::run_to_completion)), so a server's
//! graceful shutdown, which waits for connections, does not wait for it; were the store
//! closed then, its completion would fail and a retry after the restart would run the
//! operation again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The count of started work, and whether new work is still accepted.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    active: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
}

impl DrainState {
    /// Counts one piece of work in, unless draining has begun (`None`: refuse the request).
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Started> {
        // Counted before the flag is read, and the drain sets the flag before it reads the
        // count (both sequentially consistent): either this sees the flag, or the drain
        // sees this work.
        self.active.fetch_add(1, Ordering::SeqCst);
        let started = Started {
            state: Arc::clone(self),
        };
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(started)
    }
}

/// One piece of started work; dropping it counts it out.
#[derive(Debug)]
pub(crate) struct Started {
    state: Arc<DrainState>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.state.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state.idle.notify_waiters();
        }
    }
}

/// Waits, at shutdown, until every handler the layer has started has finished and its
/// outcome is recorded — including handlers whose client has already gone. Get it from
/// [`IdempotencyLayer::drain_handle`](super::IdempotencyLayer::drain_handle); the clones of
/// a layer share one.
///
/// Shut down in this order: stop the server (its graceful shutdown waits for open
/// connections), then [`wait`](Self::wait), then close the store.
///
/// ```no_run
/// # use idemdb::{Store, http::IdempotencyLayer};
/// # async fn run(store: Store, app: axum::Router, drain: idemdb::http::DrainHandle)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// drain.wait().await; // handlers whose client left are still running: let them finish
/// store.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DrainHandle {
    state: Arc<DrainState>,
}

impl DrainHandle {
    pub(crate) fn new(state: Arc<DrainState>) -> DrainHandle {
        DrainHandle { state }
    }

    /// Stops the layer from starting anything new and resolves once every handler it had
    /// started has finished and its outcome (stored, released or abandoned) is in the store.
    ///
    /// From the first call on, a covered request that has not yet reached the store is
    /// answered 503 `IDEMPOTENCY_STORE_UNAVAILABLE` with `Retry-After` ("shutting down"),
    /// its key untouched, so its retry runs normally after the restart. Requests that pass
    /// through (no key, another method) are not affected. Draining is for good: the layer
    /// stays closed. Bound the wait with `tokio::time::timeout` if handlers may hang.
    pub async fn wait(&self) {
        self.state.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.state.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Registered before the count is read, so the last piece of work leaving
            // between the read and the await still wakes us.
            idle.as_mut().enable();
            if self.state.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// How many pieces of work the layer has started and not yet finished: handlers
    /// running or recording their outcome, and store lookups under way.
    pub fn in_flight(&self) -> usize {
        self.state.active.load(Ordering::SeqCst)
    }

    /// Whether [`wait`](Self::wait) has been called.
    pub fn is_draining(&self) -> bool {
        self.state.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_resolves_when_the_last_piece_of_work_leaves() {
        let state = Arc::new(DrainState::default());
        let handle = DrainHandle::new(Arc::clone(&state));
        let a = state.enter().expect("open");
        let b = state.enter().expect("open");
        assert_eq!(handle.in_flight(), 2);
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move { handle.wait().await }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while !handle.is_draining() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("draining began");
        assert!(state.enter().is_none(), "no new work once draining");
        assert_eq!(handle.in_flight(), 2, "a refused entry is not counted");
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("drained")
            .expect("task");
        assert_eq!(handle.in_flight(), 0);
    }

    #[tokio::test]
    async fn waiting_with_nothing_started_returns_at_once() {
        let handle = DrainHandle::new(Arc::new(DrainState::default()));
        tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .expect("drained");
        assert!(handle.is_draining());
    }
}
