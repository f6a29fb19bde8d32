//! The HTTP layer under concurrency, over real TCP: duplicates in flight wait and replay,
//! the wait is bounded, and store calls never hold an async runtime thread.
#![cfg(feature = "http")]

mod common;
mod http_support;

use std::collections::BTreeMap;
use std::time::Duration;

use http_support::{Reply, Server, eventually, guard};
use idemdb::Store;
use idemdb::http::IdempotencyLayer;

const BODY: &str = r#"{"to": ["ada"], "message": "hello"}"#;

fn store() -> Store {
    Store::builder()
        .sweep_interval(None)
        .open_in_memory()
        .expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_requests_run_the_handler_once() {
    let store = store();
    let layer = IdempotencyLayer::builder(store.clone())
        .wait(Duration::from_secs(60))
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = server.post("/v1/gated").key("k-20").json(BODY);

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move { call.send().await })
        })
        .collect();
    // One runs and holds the gate; the others find the key in progress and wait (each
    // looks twice before it sleeps, so 38 in-progress answers mean all 19 are waiting).
    let probe = &server.probe;
    eventually("the first request to reach the handler", || {
        probe.runs("gated") == 1
    })
    .await;
    eventually("19 duplicates to wait", || store.stats().in_progress >= 38).await;
    // Enough permits that a second execution would show up as a count, not as a hang.
    probe.gate.add_permits(20);

    let mut replies = Vec::new();
    for request in requests {
        replies.push(guard("a duplicate", request).await.expect("task"));
    }
    assert_eq!(
        probe.runs("gated"),
        1,
        "the handler ran once for 20 requests"
    );
    assert!(replies.iter().all(|r| r.status == 201), "{replies:?}");
    let executed: Vec<&Reply> = replies.iter().filter(|r| !r.replayed()).collect();
    assert_eq!(executed.len(), 1, "exactly one response is the original");
    assert!(replies.iter().all(|r| r.body == executed[0].body));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_past_the_wait_gets_409_with_retry_after() {
    let layer = IdempotencyLayer::builder(store())
        .wait(Duration::from_millis(200))
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = server.post("/v1/gated").key("k-wait").json(BODY);

    let first = tokio::spawn({
        let call = call.clone();
        async move { call.send().await }
    });
    let probe = &server.probe;
    eventually("the first request to reach the handler", || {
        probe.runs("gated") == 1
    })
    .await;

    let busy = call.send().await;
    assert_eq!(busy.status, 409, "{busy:?}");
    assert_eq!(busy.problem_code(), "IDEMPOTENCY_IN_PROGRESS");
    let retry_after: u64 = busy
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{busy:?}");
    assert!(busy.header("idempotency-expires").is_some(), "{busy:?}");

    probe.gate.add_permits(10);
    let first = guard("the first request", first).await.expect("task");
    assert_eq!(first.status, 201);
    let later = call.send().await;
    assert!(later.replayed(), "{later:?}");
    assert_eq!(later.body, first.body);
    assert_eq!(probe.runs("gated"), 1);
    server.stop().await;
}

/// 1,000 requests at once (500 keys, each sent twice) on a runtime with two worker threads,
/// against a store file: all complete, each key runs once, and each pair gets one body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_on_two_worker_threads_all_complete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::builder()
        .open(dir.path().join("http.idemdb"))
        .expect("store");
    let layer = IdempotencyLayer::builder(store.clone())
        .wait(Duration::from_secs(60))
        .build()
        .expect("layer");
    let server = Server::start(layer).await;

    let requests: Vec<_> = (0..1000)
        .map(|i| {
            let key = format!("key-{}", i / 2);
            let call = server.post("/v1/slow").key(&key).json(BODY);
            tokio::spawn(async move { (key, call.send().await) })
        })
        .collect();
    let all = async {
        let mut replies = Vec::new();
        for request in requests {
            replies.push(request.await.expect("task"));
        }
        replies
    };
    let replies = tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("hang: 1,000 requests did not complete");

    assert_eq!(replies.len(), 1000);
    assert!(
        replies.iter().all(|(_, r)| r.status == 201),
        "every request succeeds"
    );
    assert_eq!(server.probe.runs("slow"), 500, "each key ran once");
    let mut by_key: BTreeMap<&str, Vec<&Reply>> = BTreeMap::new();
    for (key, reply) in &replies {
        by_key.entry(key).or_default().push(reply);
    }
    assert_eq!(by_key.len(), 500);
    for (key, pair) in by_key {
        assert_eq!(pair.len(), 2);
        assert_eq!(pair[0].body, pair[1].body, "{key}");
        assert_eq!(
            pair.iter().filter(|r| r.replayed()).count(),
            1,
            "{key}: one original, one replay"
        );
    }
    server.stop().await;
    store.close().expect("close");
}

/// With every commit stalled, requests waiting on the store occupy the blocking pool only:
/// the two worker threads still serve other requests and replays answered from a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_commits_never_hold_a_runtime_thread() {
    let (store, gate) = common::gated(Store::builder().sweep_interval(None));
    let layer = IdempotencyLayer::new(store.clone());
    let server = Server::start(layer).await;
    let done = server
        .post("/v1/notifications")
        .key("done")
        .json(BODY)
        .send()
        .await;
    assert_eq!(done.status, 201);

    gate.close();
    // If a store call held a worker thread, the runtime's own timers would stall too, so
    // the hang guard is a plain thread: after a minute it opens the gate and says so.
    let (finished, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn({
        let gate = std::sync::Arc::clone(&gate);
        move || {
            let rescued = watched.recv_timeout(Duration::from_secs(60)).is_err();
            gate.open();
            rescued
        }
    });
    let stuck: Vec<_> = (0..8)
        .map(|i| {
            let call = server
                .post("/v1/notifications")
                .key(&format!("stuck-{i}"))
                .json(BODY);
            tokio::spawn(async move { call.send().await })
        })
        .collect();
    eventually("a commit to stall at the gate", || {
        *gate.syncs_waiting.lock() > 0
    })
    .await;

    // More stalled requests than worker threads, and yet:
    let health = server.request("GET", "/health").send().await;
    assert_eq!((health.status, &health.body[..]), (200, &b"ok"[..]));
    let replay = server
        .post("/v1/notifications")
        .key("done")
        .json(BODY)
        .send()
        .await;
    assert!(replay.replayed(), "{replay:?}");
    assert_eq!(replay.body, done.body);
    assert_eq!(
        server.probe.runs("notifications"),
        1,
        "no stalled request ran"
    );
    let _ = finished.send(());
    let rescued = watchdog.join().expect("watchdog");
    assert!(
        !rescued,
        "the runtime served nothing while commits were stalled: a worker thread was blocked"
    );

    for request in stuck {
        let reply = guard("a stalled request", request).await.expect("task");
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    assert_eq!(server.probe.runs("notifications"), 9);
    server.stop().await;
}
