//! The HTTP layer when things go wrong, over real TCP: dropped connections, 5xx answers,
//! panicking handlers, responses too large to store, and a restart of the service.
#![cfg(feature = "http")]

mod http_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http_support::{Server, capture_logs, eventually, guard, logged};
use idemdb::http::IdempotencyLayer;
use idemdb::{RecoveryPolicy, StateKind, Store};

const BODY: &str = r#"{"to": ["ada"], "message": "hello"}"#;

fn store() -> Store {
    Store::builder()
        .sweep_interval(None)
        .open_in_memory()
        .expect("store")
}

/// The state of the record behind the last request a handler saw.
fn record_state(store: &Store, server: &Server) -> Option<StateKind> {
    let context = server.probe.last_context();
    store
        .get(&context.scope, &context.key)
        .expect("get")
        .map(|record| record.kind(store.now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_the_handler_runs_then_retried_replays() {
    let store = store();
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let call = server.post("/v1/gated").key("k-drop").json(BODY);

    let connection = call.send_raw().await;
    let probe = &server.probe;
    eventually("the handler to start", || probe.runs("gated") == 1).await;
    drop(connection);
    // Give the server time to notice the closed connection: were the handler tied to it,
    // it would be cancelled now (the next test shows the server does notice).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe.gated_cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(record_state(&store, &server), Some(StateKind::InFlight));

    probe.gate.add_permits(10);
    let retry = call.send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(
        retry.replayed(),
        "the retry replays the dropped response: {retry:?}"
    );
    assert_eq!(retry.json()["id"], "gated-0001");
    assert_eq!(probe.runs("gated"), 1, "the handler ran once");
    assert_eq!(probe.gated_finished.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_after_the_handler_ran_then_retried_replays() {
    let store = store();
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let call = server.post("/v1/notifications").key("k-unread").json(BODY);

    // The client writes the request and never reads the answer.
    let connection = call.send_raw().await;
    eventually("the response to be stored", || {
        server.probe.runs("notifications") == 1
            && record_state(&store, &server) == Some(StateKind::Completed)
    })
    .await;
    drop(connection);

    let retry = call.send().await;
    assert!(retry.replayed(), "{retry:?}");
    assert_eq!(retry.json()["id"], "notifications-0001");
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_run_to_completion_a_dropped_request_is_abandoned_and_recovered() {
    let store = store();
    let layer = IdempotencyLayer::builder(store.clone())
        .run_to_completion(false)
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = server.post("/v1/gated").key("k-cancel").json(BODY);

    let connection = call.send_raw().await;
    let probe = &server.probe;
    eventually("the handler to start", || probe.runs("gated") == 1).await;
    drop(connection);
    eventually("the server to cancel the handler", || {
        probe.gated_cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the claim to be abandoned", || {
        record_state(&store, &server) == Some(StateKind::Abandoned)
    })
    .await;

    // The store's default recovery policy takes over, telling the handler it is a retry.
    probe.gate.add_permits(10);
    let retry = call.send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(!retry.replayed());
    assert_eq!(retry.json()["attempt"], 2);
    assert_eq!(retry.json()["recovery"], true);
    assert_eq!(probe.runs("gated"), 2);
    assert!(call.send().await.replayed());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_under_strict_recovery_is_refused_with_409() {
    let store = store();
    let layer = IdempotencyLayer::builder(store.clone())
        .run_to_completion(false)
        .recovery(RecoveryPolicy::Strict)
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = server.post("/v1/gated").key("k-strict").json(BODY);

    let connection = call.send_raw().await;
    let probe = &server.probe;
    eventually("the handler to start", || probe.runs("gated") == 1).await;
    drop(connection);
    eventually("the claim to be abandoned", || {
        record_state(&store, &server) == Some(StateKind::Abandoned)
    })
    .await;

    probe.gate.add_permits(10);
    let retry = call.send().await;
    assert_eq!(retry.status, 409, "{retry:?}");
    assert_eq!(retry.problem_code(), "IDEMPOTENCY_ABANDONED");
    assert!(retry.header("idempotency-expires").is_some());
    assert_eq!(probe.runs("gated"), 1, "strict: never a second run");
    server.stop().await;
}

#[tokio::test]
async fn a_5xx_is_released_and_the_retry_runs() {
    let store = store();
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let call = server.post("/v1/flaky").key("k-5xx").json(BODY);

    let failed = call.send().await;
    assert_eq!(failed.status, 503, "{failed:?}");
    assert!(!failed.replayed());
    assert!(
        failed.header("idempotency-expires").is_none(),
        "a released key has no record"
    );
    assert_eq!(record_state(&store, &server), None, "the key is free again");

    let retry = call.send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(!retry.replayed(), "the retry ran the handler");
    assert_eq!(
        retry.json()["attempt"],
        1,
        "a fresh attempt, not a recovery"
    );
    let replay = call.send().await;
    assert!(replay.replayed());
    assert_eq!(replay.body, retry.body);
    assert_eq!(server.probe.runs("flaky"), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_4xx_is_final_and_replayed() {
    let server = Server::start(IdempotencyLayer::new(store())).await;
    // The route exists for POST only: axum answers 405, a final answer the layer stores.
    let call = server.request("PATCH", "/v1/flaky").key("k-4xx").json(BODY);
    let first = call.send().await;
    assert_eq!(first.status, 405);
    assert!(!first.replayed());
    let again = call.send().await;
    assert_eq!(again.status, 405);
    assert!(again.replayed(), "{again:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_abandons_its_claim_and_the_recovery_policy_decides() {
    let store = store();
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let call = server.post("/v1/panicky").key("k-panic").json(BODY);

    let panicked = call.send().await;
    assert_eq!(panicked.status, 500, "{panicked:?}");
    assert_eq!(panicked.problem_code(), "HANDLER_PANICKED");
    assert!(panicked.header("idempotency-expires").is_some());
    eventually("the claim to be abandoned", || {
        record_state(&store, &server) == Some(StateKind::Abandoned)
    })
    .await;

    // TakeOver (the default): the retry runs, flagged as a recovery.
    let retry = call.send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert_eq!(retry.json()["attempt"], 2);
    assert_eq!(retry.json()["recovery"], true);
    assert!(call.send().await.replayed());
    assert_eq!(server.probe.runs("panicky"), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_under_strict_recovery_is_never_run_again() {
    let store = Store::builder()
        .sweep_interval(None)
        .recovery(RecoveryPolicy::Strict)
        .open_in_memory()
        .expect("store");
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let call = server.post("/v1/panicky").key("k-panic-strict").json(BODY);
    assert_eq!(call.send().await.status, 500);
    eventually("the claim to be abandoned", || {
        record_state(&store, &server) == Some(StateKind::Abandoned)
    })
    .await;
    let retry = call.send().await;
    assert_eq!(retry.status, 409, "{retry:?}");
    assert_eq!(retry.problem_code(), "IDEMPOTENCY_ABANDONED");
    assert_eq!(server.probe.runs("panicky"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_response_above_the_store_limit_is_passed_through_and_not_stored() {
    capture_logs();
    let store = Store::builder()
        .sweep_interval(None)
        .max_response_size(4096)
        .open_in_memory()
        .expect("store");
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;

    let small = server.post("/v1/big?bytes=1000").key("k-small");
    assert_eq!(small.send().await.body.len(), 1000);
    assert!(
        small.send().await.replayed(),
        "a response within the limit is stored"
    );

    let large = server.post("/v1/big?bytes=100000").key("k-large");
    let first = large.send().await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.body.len(),
        100_000,
        "the client gets the whole response"
    );
    assert!(first.body.iter().all(|b| *b == b'x'));
    assert!(!first.replayed());
    assert_eq!(
        record_state(&store, &server),
        Some(StateKind::Abandoned),
        "not stored: the claim is left to the recovery policy"
    );
    let lines = logged("passed through and not stored");
    assert_eq!(lines.len(), 1, "one log line says why: {lines:?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("max_response_size of 4096 bytes"),
        "{lines:?}"
    );

    let retry = large.send().await;
    assert_eq!(retry.body.len(), 100_000);
    assert!(!retry.replayed(), "nothing was stored to replay");
    assert!(server.probe.last_context().recovery);
    assert_eq!(server.probe.runs("big"), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_attempts_still_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("service.idemdb");

    let store = Store::open(&path).expect("store");
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let call = |server: &Server| server.post("/v1/notifications").key("k-restart").json(BODY);
    let first = call(&server).send().await;
    assert_eq!(first.status, 201);
    server.stop().await;
    store.close().expect("close");
    drop(store);

    // A new process would do just this: open the same file and serve again.
    let store = guard("reopening the store", async {
        tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .expect("open task")
    })
    .await
    .expect("reopen store");
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    let again = call(&server).send().await;
    assert!(again.replayed(), "{again:?}");
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert_eq!(again.stored_headers(), first.stored_headers());
    assert_eq!(
        server.probe.runs("notifications"),
        0,
        "nothing ran after the restart"
    );

    let conflict = server
        .post("/v1/notifications")
        .key("k-restart")
        .json("{}")
        .send()
        .await;
    assert_eq!(conflict.status, 422, "{conflict:?}");
    server.stop().await;
    store.close().expect("close");
}
