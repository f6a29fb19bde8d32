//! The claim held while a handler runs, and the room where duplicates of a request in
//! progress wait for it without a thread.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::drain::Started;
use super::service::{Shared, log_end_error};
use crate::claim::{Claim, CompleteError, Completion};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Runs `work` to its end in a task of its own and awaits it: a store call whose effect
/// must not depend on whether the request is still there to see its result.
pub(crate) async fn to_completion<T, F>(work: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work).await.map_err(|e| Error::Internal {
        detail: format!("a store call did not finish: {e}"),
    })?
}

/// Where waiters for a key in progress are woken when its holder in this process ends its
/// claim. A waiter also wakes on a timer, for holders in other processes.
#[derive(Default)]
pub(crate) struct WaitRoom {
    rooms: Mutex<HashMap<String, Arc<Notify>>>,
}

fn room_id(scope: &str, key: &str) -> String {
    // Neither a scope nor a key may hold a control character, so NUL separates them.
    format!("{scope}\0{key}")
}

impl WaitRoom {
    /// Starts waiting for (scope, key).
    pub(crate) fn join(self: &Arc<Self>, scope: &str, key: &str) -> WaitTicket {
        let id = room_id(scope, key);
        let notify = Arc::clone(self.rooms.lock().entry(id.clone()).or_default());
        WaitTicket {
            room: Arc::clone(self),
            id,
            notify: Some(notify),
        }
    }

    /// Wakes everyone waiting for (scope, key).
    pub(crate) fn notify(&self, scope: &str, key: &str) {
        if let Some(notify) = self.rooms.lock().get(&room_id(scope, key)) {
            notify.notify_waiters();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.rooms.lock().len()
    }
}

/// A waiter's place in a room; the last one to leave removes the room.
pub(crate) struct WaitTicket {
    room: Arc<WaitRoom>,
    id: String,
    notify: Option<Arc<Notify>>,
}

impl WaitTicket {
    /// The room's notification (a clone: drop it before the ticket).
    pub(crate) fn notify(&self) -> Option<Arc<Notify>> {
        self.notify.clone()
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        let mut rooms = self.room.rooms.lock();
        // Counted and dropped under the lock, so two tickets leaving at once cannot both
        // see the other one and leave the room behind.
        if let Some(notify) = self.notify.take()
            && Arc::strong_count(&notify) == 2
        {
            rooms.remove(&self.id);
        }
    }
}

/// The claim of a request, from the moment `begin` grants it. Every way out ends the claim
/// with the store's async calls, in a task that runs to its end, and then wakes the
/// waiters: `complete`, `release`, `abandon`, or
/// being dropped (a panic, a cancelled future). A dropped guard whose handler had started
/// abandons the claim (the outcome is unknown); one whose handler never started releases it
/// (nothing happened, so a retry may run at once).
///
/// The guard also holds the request's place in the layer's drain count, and gives it up
/// only once the claim's end is in the store, so a shutdown waits for that.
pub(crate) struct ClaimGuard {
    claim: Option<Claim>,
    shared: Arc<Shared>,
    scope: String,
    key: String,
    started: bool,
    counted: Option<Started>,
}

impl ClaimGuard {
    /// Guards a claim whose handler has not started yet, holding its place in the drain.
    pub(crate) fn new(
        claim: Claim,
        shared: Arc<Shared>,
        scope: String,
        key: String,
        counted: Option<Started>,
    ) -> Self {
        ClaimGuard {
            claim: Some(claim),
            shared,
            scope,
            key,
            started: false,
            counted,
        }
    }

    /// From now on the handler may have acted: a drop abandons the claim.
    pub(crate) fn start(mut self) -> Self {
        self.started = true;
        self
    }

    /// The claim, to read its attempt and recovery flags.
    pub(crate) fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref()
    }

    pub(crate) fn expires_at(&self) -> Option<Timestamp> {
        self.claim.as_ref().and_then(Claim::expires_at)
    }

    /// Ends the claim with `end`, in a task that finishes even if this request goes away,
    /// then wakes the waiters.
    async fn end<T, F, Fut>(mut self, end: F) -> Result<T>
    where
        F: FnOnce(Claim) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(claim) = self.claim.take() else {
            return Err(Error::Internal {
                detail: "the claim was already ended".to_owned(),
            });
        };
        let shared = Arc::clone(&self.shared);
        let (scope, key) = (self.scope.clone(), self.key.clone());
        let counted = self.counted.take();
        to_completion(async move {
            let result = end(claim).await;
            shared.room.notify(&scope, &key);
            drop(counted); // the outcome is in the store: the drain may stop waiting for it
            result
        })
        .await
    }

    /// Stores the response. If that fails, the claim (when it comes back) is abandoned:
    /// the handler ran, so the key must not be freed.
    pub(crate) async fn complete(self, response: Vec<u8>) -> Result<Completion> {
        self.end(move |claim| async move {
            match claim.complete_async(response).await {
                Ok(completion) => Ok(completion),
                Err(CompleteError { error, claim }) => {
                    if let Some(claim) = claim {
                        log_end_error("abandoning", claim.abandon_async().await);
                    }
                    Err(error)
                }
            }
        })
        .await
    }

    pub(crate) async fn release(self) -> Result<()> {
        self.end(Claim::release_async).await
    }

    pub(crate) async fn abandon(self) -> Result<()> {
        self.end(Claim::abandon_async).await
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let (scope, key) = (
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        );
        let started = self.started;
        let counted = self.counted.take();
        let finisher_store = shared.store.clone();
        let end = async move {
            if started {
                tracing::warn!(
                    %scope, %key,
                    "the handler of an idempotent request stopped without an outcome (a panic \
                     or a cancelled future); its claim is abandoned"
                );
                log_end_error("abandoning", claim.abandon_async().await);
            } else if claim.is_recovery() {
                // Nothing ran under this claim, but it took over an abandoned one: its record
                // is the trace that an earlier attempt may have run, so it stays abandoned.
                log_end_error("abandoning", claim.abandon_async().await);
            } else if let Err(error) = claim.release_async().await {
                // A failed release abandons the claim: still no second run without a policy.
                tracing::warn!(%error, %scope, %key, "releasing the claim of a request that went away before its handler ran failed");
            }
            shared.room.notify(&scope, &key);
            drop(counted);
        };
        match tokio::runtime::Handle::try_current() {
            // If the runtime is shutting down the task is dropped unrun, and the claim with
            // it, which abandons it on a thread of the store's.
            Ok(runtime) => drop(runtime.spawn(end)),
            Err(_) => finisher_store
                .inner
                .finisher
                .hand_off(move || crate::detached::block_on(end)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_waiter_out_removes_the_room() {
        let room = Arc::new(WaitRoom::default());
        let a = room.join("s", "k");
        let b = room.join("s", "k");
        let other = room.join("s", "k2");
        assert_eq!(room.len(), 2);
        drop(a);
        assert_eq!(room.len(), 2);
        drop(b);
        assert_eq!(room.len(), 1);
        drop(other);
        assert_eq!(room.len(), 0);
    }

    /// A claim guarded as `begin` hands it out, and the store to check it in.
    fn guarded(key: &str) -> (crate::Store, ClaimGuard) {
        let store = crate::Store::builder()
            .sweep_interval(None)
            .open_in_memory()
            .expect("store");
        let shared = super::super::IdempotencyLayer::new(store.clone()).shared();
        let fingerprint = crate::Fingerprint::of(b"request");
        let claim = match store.begin("s", key, fingerprint).expect("begin") {
            crate::Begin::Execute(claim) => claim,
            other => panic!("expected an execution, got {other:?}"),
        };
        let guard = ClaimGuard::new(claim, shared, "s".to_owned(), key.to_owned(), None);
        (store, guard)
    }

    /// Waits (on the runtime, without blocking it) until the record of `key` is `state`.
    async fn until_state(store: &crate::Store, key: &str, state: Option<crate::StateKind>) {
        let look = || {
            store
                .get("s", key)
                .map(|record| record.map(|r| r.kind(store.now())))
        };
        let wait = async {
            while look().expect("get") != state {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .expect("the record reached the expected state");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_dropped_before_its_handler_started_releases_the_key() {
        let (store, guard) = guarded("never-ran");
        drop(guard);
        until_state(&store, "never-ran", None).await;
    }

    /// A claim that took over an abandoned one keeps the trace of the earlier attempt even
    /// if its request goes away before the handler starts: abandoned again, never freed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_take_over_dropped_before_its_handler_started_stays_abandoned() {
        let store = crate::Store::builder()
            .sweep_interval(None)
            .recovery(crate::RecoveryPolicy::TakeOver)
            .open_in_memory()
            .expect("store");
        let shared = super::super::IdempotencyLayer::new(store.clone()).shared();
        let fingerprint = crate::Fingerprint::of(b"request");
        let execute = |begin| match begin {
            crate::Begin::Execute(claim) => claim,
            other => panic!("expected an execution, got {other:?}"),
        };
        let first = execute(store.begin("s", "k", fingerprint).expect("begin"));
        first.abandon().expect("the first attempt vanished");
        let take_over = execute(store.begin("s", "k", fingerprint).expect("begin"));
        assert!(take_over.is_recovery());
        drop(ClaimGuard::new(
            take_over,
            shared,
            "s".to_owned(),
            "k".to_owned(),
            None,
        ));
        until_state(&store, "k", Some(crate::StateKind::Abandoned)).await;
        let record = store.get("s", "k").expect("get").expect("the record stays");
        assert_eq!(record.attempt(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_dropped_after_its_handler_started_abandons_the_claim() {
        let (store, guard) = guarded("ran");
        drop(guard.start());
        until_state(&store, "ran", Some(crate::StateKind::Abandoned)).await;
    }

    #[tokio::test]
    async fn notify_wakes_an_enabled_waiter() {
        let room = Arc::new(WaitRoom::default());
        let ticket = room.join("s", "k");
        let notify = ticket.notify().expect("notify");
        let notified = notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        room.notify("s", "other");
        room.notify("s", "k");
        tokio::time::timeout(std::time::Duration::from_secs(10), notified)
            .await
            .expect("woken");
    }
}
