//! The async API: the same answers as the blocking one, with no runtime thread held while
//! a commit syncs or a holder in this process works. The runtimes here are tokio's
//! current-thread ones: a call that blocked its thread would stall every other task, so
//! each test has another task that must make progress meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{T0, builder, fp, gated};
use idemdb::{Begin, BeginOptions, Error, ManualClock, RecordState, RecoveryPolicy, Store};

/// A single-threaded runtime: whatever blocks, blocks everything.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Ticks while alive; the count shows the runtime's one thread was free.
fn ticker() -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let counting = Arc::clone(&ticks);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            counting.fetch_add(1, Ordering::Relaxed);
        }
    });
    (ticks, task)
}

/// Gives the other tasks of this runtime `ms` milliseconds.
async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[test]
fn execute_complete_replay_and_conflict() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().join("a.idemdb")).expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("a fresh key executes")
        };
        let done = claim.complete_async(b"ok").await.expect("complete");
        assert!(done.expires_at.is_some());
        match store.begin_async("s", "k", fp("a")).await.expect("begin") {
            Begin::Replay(r) => assert_eq!(r.response, b"ok"),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(
            store.begin_async("s", "k", fp("b")).await.expect("begin"),
            Begin::Conflict(_)
        ));
        store.close_async().await.expect("close");
        assert!(matches!(
            store.begin_async("s", "k", fp("a")).await,
            Err(Error::Closed)
        ));
    });
}

#[test]
fn release_abandon_and_extend_lease() {
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock).open_in_memory().expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "r", fp("a")).await.expect("begin")
        else {
            panic!("executes")
        };
        claim.release_async().await.expect("release");
        let Begin::Execute(mut claim) = store.begin_async("s", "r", fp("a")).await.expect("begin")
        else {
            panic!("a released key executes again")
        };
        let until = claim
            .extend_lease_async(Duration::from_secs(600))
            .await
            .expect("extend");
        assert_eq!(until, T0.saturating_add(Duration::from_secs(600)));
        claim.abandon_async().await.expect("abandon");
        let record = store.get("s", "r").expect("get").expect("a record");
        let RecordState::InFlight(flight) = record.state() else {
            panic!("an abandoned claim stays in flight")
        };
        assert!(flight.abandoned_at().is_some());
        assert!(store.delete_async("s", "r").await.expect("delete"));
        assert_eq!(store.get("s", "r").expect("get"), None);
    });
}

/// A commit that cannot sync holds no runtime thread: the other task keeps ticking, and
/// the claim arrives once the disk lets the sync through.
#[test]
fn a_stalled_commit_leaves_the_runtime_thread_free() {
    let clock = ManualClock::new(T0);
    let (store, gate) = gated(builder(&clock));
    runtime().block_on(async {
        let (ticks, ticking) = ticker();
        gate.close();
        let claiming = {
            let store = store.clone();
            tokio::spawn(async move { store.begin_async("s", "k", fp("a")).await })
        };
        let opener = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                gate.wait_for_blocked_sync();
                std::thread::sleep(Duration::from_millis(100));
                gate.open();
            })
        };
        let begin = claiming.await.expect("task").expect("begin");
        opener.join().expect("opener");
        assert!(
            ticks.load(Ordering::Relaxed) >= 10,
            "the runtime thread was blocked while the commit waited ({} ticks)",
            ticks.load(Ordering::Relaxed)
        );
        ticking.abort();
        let Begin::Execute(claim) = begin else {
            panic!("executes")
        };
        claim.complete_async(b"done").await.expect("complete");
    });
    store.close().expect("close");
}

/// A duplicate of a request that a task of this process executes waits for it as a future:
/// on one thread, the holder still runs, completes, and the duplicate replays.
#[test]
fn a_duplicate_waits_for_the_holder_without_a_thread() {
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock)
            .wait(Duration::from_secs(30))
            .open_in_memory()
            .expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("executes")
        };
        let duplicate = {
            let store = store.clone();
            tokio::spawn(async move { store.begin_async("s", "k", fp("a")).await })
        };
        pause(20).await;
        assert!(
            !duplicate.is_finished(),
            "the duplicate waits for the holder"
        );
        claim.complete_async(b"first").await.expect("complete");
        match duplicate.await.expect("task").expect("begin") {
            Begin::Replay(r) => assert_eq!(r.response, b"first"),
            other => panic!("expected a replay, got {other:?}"),
        }
    });
}

/// The bound on waiting holds for async callers too: past it, in progress.
#[test]
fn an_async_wait_ends_at_its_bound() {
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock).open_in_memory().expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("executes")
        };
        let short = BeginOptions::new().wait(Duration::from_millis(50));
        let begin = store
            .begin_with_async("s", "k", fp("a"), &short)
            .await
            .expect("begin");
        assert!(matches!(begin, Begin::InProgress(_)), "got {begin:?}");
        claim.release_async().await.expect("release");
    });
}

/// A claim made for an async caller and dropped without an outcome is abandoned, as a
/// blocking one is, without the drop waiting for the commit.
#[test]
fn a_dropped_async_claim_is_abandoned() {
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock)
            .recovery(RecoveryPolicy::TakeOver)
            .open_in_memory()
            .expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("executes")
        };
        drop(claim);
        let record = eventually_abandoned(&store, "k").await;
        assert_eq!(record.attempt(), 1);
        let Begin::Execute(again) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("an abandoned key is taken over at once")
        };
        assert!(again.is_recovery());
        again.complete_async(b"second").await.expect("complete");
    });
}

/// A `begin_async` cancelled while its claim commits does not leave the key held by
/// nobody until the lease ends: its caller never saw the claim, so it is released and the
/// next request executes at once.
#[test]
fn a_cancelled_begin_releases_the_claim_it_made() {
    let clock = ManualClock::new(T0);
    let (store, gate) = gated(
        builder(&clock)
            .lease(Duration::from_secs(3600))
            .recovery(RecoveryPolicy::TakeOver),
    );
    runtime().block_on(async {
        gate.close();
        let claiming = {
            let store = store.clone();
            tokio::spawn(async move { store.begin_async("s", "k", fp("a")).await })
        };
        let blocked = {
            let gate = Arc::clone(&gate);
            tokio::task::spawn_blocking(move || gate.wait_for_blocked_sync())
        };
        blocked.await.expect("the claim reached the disk");
        claiming.abort();
        assert!(claiming.await.is_err_and(|e| e.is_cancelled()));
        gate.open();
        eventually_free(&store, "k").await;
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("the cancelled caller's claim is freed at once, not after an hour")
        };
        assert!(!claim.is_recovery(), "nothing ran under the released claim");
        claim.complete_async(b"ok").await.expect("complete");
    });
    store.close().expect("close");
}

#[test]
fn run_async_runs_once_and_replays() {
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock).open_in_memory().expect("open");
        let runs = AtomicU64::new(0);
        for _ in 0..3 {
            let out = store
                .run_async("mail", "welcome", fp("a"), async |claim| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    pause(1).await;
                    // The operation may borrow its claim across an await.
                    Ok::<_, std::io::Error>(
                        format!("sent, attempt {}", claim.attempt()).into_bytes(),
                    )
                })
                .await
                .expect("run");
            assert_eq!(out.response, b"sent, attempt 1");
        }
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        let failed = store
            .run_async("mail", "broken", fp("a"), async |_claim| {
                Err::<Vec<u8>, _>("smtp down")
            })
            .await;
        assert!(matches!(failed, Err(idemdb::RunError::Failed("smtp down"))));
        assert_eq!(store.get("mail", "broken").expect("get"), None, "released");
    });
}

/// Waits (boundedly) until a claim on `key` in scope `s` was released and the key is free.
async fn eventually_free(store: &Store, key: &str) {
    for _ in 0..5_000 {
        if store.stats().releases == 1 && store.get("s", key).expect("get").is_none() {
            return;
        }
        pause(2).await;
    }
    panic!("the claim on {key} was never released");
}

/// Waits (boundedly) until the record of `key` in scope `s` is abandoned.
async fn eventually_abandoned(store: &Store, key: &str) -> idemdb::Record {
    for _ in 0..5_000 {
        if let Some(record) = store.get("s", key).expect("get")
            && let RecordState::InFlight(flight) = record.state()
            && flight.abandoned_at().is_some()
        {
            return record;
        }
        pause(2).await;
    }
    panic!("the claim on {key} was never abandoned");
}

/// A cancelled `begin_async` that took over an abandoned claim must not erase the trace of
/// the earlier attempt: its claim is abandoned again, not released, and the next request
/// is still flagged as a recovery.
#[test]
fn a_cancelled_take_over_keeps_the_recovery() {
    let clock = ManualClock::new(T0);
    let (store, gate) = gated(builder(&clock).recovery(RecoveryPolicy::TakeOver));
    let Begin::Execute(first) = store.begin("s", "k", fp("a")).expect("begin") else {
        panic!("executes")
    };
    first.abandon().expect("the first attempt vanished mid-way");
    runtime().block_on(async {
        gate.close();
        let taking_over = {
            let store = store.clone();
            tokio::spawn(async move { store.begin_async("s", "k", fp("a")).await })
        };
        let blocked = {
            let gate = Arc::clone(&gate);
            tokio::task::spawn_blocking(move || gate.wait_for_blocked_sync())
        };
        blocked.await.expect("the take-over reached the disk");
        taking_over.abort();
        assert!(taking_over.await.is_err_and(|e| e.is_cancelled()));
        gate.open();
        let record = eventually_abandoned_at_attempt(&store, "k", 2).await;
        assert_eq!(record.attempt(), 2);
        let Begin::Execute(next) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("the key is taken over again")
        };
        assert!(
            next.is_recovery(),
            "an earlier attempt may have run: the next one must know"
        );
        next.complete_async(b"ok").await.expect("complete");
    });
    store.close().expect("close");
}

/// An async caller that drops its claim, or a `complete_async` of a claim made by the
/// blocking `begin`, while the disk stalls: the runtime thread goes on, and the claim is
/// abandoned once the disk lets the commit through.
#[test]
fn dropping_a_claim_while_the_disk_stalls_leaves_the_runtime_free() {
    let clock = ManualClock::new(T0);
    let (store, gate) = gated(builder(&clock).recovery(RecoveryPolicy::TakeOver));
    let Begin::Execute(blocking_claim) = store.begin("s", "blocking", fp("a")).expect("begin")
    else {
        panic!("executes")
    };
    runtime().block_on(async {
        let Begin::Execute(claim) = store
            .begin_async("s", "dropped", fp("a"))
            .await
            .expect("begin")
        else {
            panic!("executes")
        };
        let (ticks, ticking) = ticker();
        gate.close();
        drop(claim);
        let completing = tokio::spawn(blocking_claim.complete_async(b"late"));
        let blocked = {
            let gate = Arc::clone(&gate);
            tokio::task::spawn_blocking(move || gate.wait_for_blocked_sync())
        };
        blocked.await.expect("a commit reached the disk");
        pause(5).await;
        completing.abort();
        let _ = completing.await;
        let before = ticks.load(Ordering::Relaxed);
        pause(100).await;
        assert!(
            ticks.load(Ordering::Relaxed) >= before + 10,
            "the runtime thread waited for a commit"
        );
        gate.open();
        ticking.abort();
        eventually_abandoned(&store, "dropped").await;
    });
    store.close().expect("close");
}

/// However many begins are cancelled while the disk stalls, ending their claims costs the
/// store one thread, not one each.
#[test]
fn cancelled_begins_cost_one_thread() {
    let clock = ManualClock::new(T0);
    let (store, gate) = gated(builder(&clock));
    let threads = || std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    runtime().block_on(async {
        gate.close();
        let before = threads();
        let mut begins = Vec::new();
        for n in 0..50 {
            let store = store.clone();
            begins.push(tokio::spawn(async move {
                store.begin_async("s", &format!("k{n}"), fp("a")).await
            }));
        }
        let blocked = {
            let gate = Arc::clone(&gate);
            tokio::task::spawn_blocking(move || gate.wait_for_blocked_sync())
        };
        blocked.await.expect("the claims reached the disk");
        for begin in &begins {
            begin.abort();
        }
        for begin in begins {
            let _ = begin.await;
        }
        pause(50).await;
        let during = threads();
        gate.open();
        // Other tests of this binary start and stop stores meanwhile, so the count moves a
        // little; a thread per cancelled begin would add 50.
        assert!(
            during <= before + 20,
            "{before} threads before, {during} after 50 cancelled begins"
        );
        for _ in 0..5_000 {
            if store.stats().releases == 50 {
                break;
            }
            pause(2).await;
        }
        assert_eq!(
            store.stats().releases,
            50,
            "every cancelled claim was released"
        );
    });
    store.close().expect("close");
}

/// Waits (boundedly) until the record of `key` in scope `s` is abandoned at `attempt`.
async fn eventually_abandoned_at_attempt(store: &Store, key: &str, attempt: u32) -> idemdb::Record {
    for _ in 0..5_000 {
        let record = eventually_abandoned(store, key).await;
        if record.attempt() == attempt {
            return record;
        }
        pause(2).await;
    }
    panic!("the claim on {key} was never abandoned at attempt {attempt}");
}

/// `detach_async` marks the claim detached durably, as the blocking `detach` does: a
/// later opening of the store leaves the claim to its lease instead of finding its holder
/// gone, and the ticket resumes it.
#[test]
fn detach_async_is_durable_and_the_ticket_resumes_after_a_reopen() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("d.idemdb");
        let store = Store::open(&path).expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("a fresh key executes")
        };
        let ticket = claim.detach_async().await.expect("detach");
        store.close_async().await.expect("close");
        let store = Store::open(&path).expect("reopen");
        let record = store.get("s", "k").expect("get").expect("in flight");
        let RecordState::InFlight(flight) = record.state() else {
            panic!("a detached claim stays in flight")
        };
        assert!(flight.is_detached());
        let no_wait = BeginOptions::new().no_wait();
        let begin = store
            .begin_with_async("s", "k", fp("a"), &no_wait)
            .await
            .expect("begin");
        assert!(
            matches!(&begin, Begin::InProgress(p) if p.claim == ticket.claim),
            "a detached claim keeps its lease across a reopen, got {begin:?}"
        );
        let resumed = store.resume(&ticket).expect("resume");
        resumed.complete_async(b"done").await.expect("complete");
        match store.begin_async("s", "k", fp("a")).await.expect("begin") {
            Begin::Replay(r) => assert_eq!(r.response, b"done"),
            other => panic!("expected a replay, got {other:?}"),
        }
        store.close_async().await.expect("close");
    });
}

/// A claim whose key was deleted cannot be detached: `detach_async` says it is lost.
#[test]
fn detach_async_of_a_lost_claim_is_claim_lost() {
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock).open_in_memory().expect("open");
        let Begin::Execute(claim) = store.begin_async("s", "k", fp("a")).await.expect("begin")
        else {
            panic!("executes")
        };
        assert!(store.delete_async("s", "k").await.expect("delete"));
        assert!(matches!(
            claim.detach_async().await,
            Err(Error::ClaimLost(idemdb::ClaimLostReason::Missing))
        ));
        assert_eq!(store.get("s", "k").expect("get"), None);
    });
}

/// A log sink shared by every thread (the finisher's too).
#[cfg(debug_assertions)]
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(debug_assertions)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An async caller's claim dropped without an outcome is reported in debug builds as a
/// blocking one is, once: on the caller's thread, not again where the store's finisher
/// abandons it.
#[cfg(debug_assertions)]
#[test]
fn a_dropped_async_claim_is_reported_once_in_debug_builds() {
    use tracing_subscriber::util::SubscriberInitExt;

    // Global, to see the finisher thread too; lines are told apart by claim id.
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish()
        .try_init()
        .expect("the only global subscriber of this test binary");
    runtime().block_on(async {
        let clock = ManualClock::new(T0);
        let store = builder(&clock).open_in_memory().expect("open");
        let Begin::Execute(claim) = store
            .begin_async("s", "warned", fp("a"))
            .await
            .expect("begin")
        else {
            panic!("executes")
        };
        let id = claim.id().to_string();
        drop(claim);
        // A second warning, if any, would come from the finisher before its abandonment.
        eventually_abandoned(&store, "warned").await;
        let log = String::from_utf8_lossy(&captured.0.lock().expect("log")).into_owned();
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&id))
            .filter(|l| l.contains("claim was dropped without complete"))
            .count();
        assert_eq!(warnings, 1, "{log}");
    });
}
