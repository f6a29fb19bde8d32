//! Shutting a service down with the HTTP layer: a handler whose client has gone still
//! records its outcome before the store closes, so the retry after a restart replays.
#![cfg(feature = "http")]

mod http_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http_support::{Server, eventually, guard};
use idemdb::http::IdempotencyLayer;
use idemdb::{StateKind, Store};

const BODY: &str = r#"{"to": ["ada"], "message": "hello"}"#;

async fn reopen(path: std::path::PathBuf) -> Store {
    guard("reopening the store", async {
        tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .expect("open task")
    })
    .await
    .expect("reopen store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_handler_whose_client_has_gone_and_the_retry_replays_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("service.idemdb");
    let store = Store::open(&path).expect("store");
    let layer = IdempotencyLayer::new(store.clone());
    let drain = layer.drain_handle();
    let server = Server::start(layer).await;
    let probe = std::sync::Arc::clone(&server.probe);
    let call = |server: &Server| server.post("/v1/gated").key("k-shutdown").json(BODY);

    // The client sends, the handler starts, the client goes away part-way through.
    let connection = call(&server).send_raw().await;
    eventually("the handler to start", || probe.runs("gated") == 1).await;
    drop(connection);

    // Shutdown begins: the server stops (no connection is left to wait for), then the
    // service drains the layer and only then closes the store, as the example does.
    server.stop().await;
    let shutdown = tokio::spawn({
        let store = store.clone();
        let drain = drain.clone();
        async move {
            drain.wait().await;
            tokio::task::spawn_blocking(move || store.close())
                .await
                .expect("close task")
        }
    });
    // The handler is still running: the drain must not have let the store close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "the drain waited for the handler");
    assert!(drain.is_draining());
    assert_eq!(drain.in_flight(), 1);
    let context = probe.last_context();
    let state = store
        .get(&context.scope, &context.key)
        .expect("get")
        .map(|r| r.kind(store.now()));
    assert_eq!(state, Some(StateKind::InFlight));

    // The handler finishes; its outcome is recorded, then the store closes.
    probe.gate.add_permits(10);
    guard("the drain and close", shutdown)
        .await
        .expect("shutdown task")
        .expect("close");
    assert_eq!(probe.gated_finished.load(Ordering::SeqCst), 1);
    assert_eq!(drain.in_flight(), 0);
    drop(store);

    // A new process: the same file, a new layer. The retry replays; nothing runs again.
    let store = reopen(path).await;
    let server = Server::start(IdempotencyLayer::new(store.clone())).await;
    server.probe.gate.add_permits(10);
    let retry = call(&server).send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(retry.replayed(), "the retry replays: {retry:?}");
    assert_eq!(retry.json()["id"], "gated-0001");
    assert_eq!(retry.json()["attempt"], 1);
    assert_eq!(
        server.probe.runs("gated"),
        0,
        "nothing ran after the restart"
    );
    server.stop().await;
    store.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_new_requests_get_503_and_their_keys_stay_free() {
    let store = Store::builder()
        .sweep_interval(None)
        .open_in_memory()
        .expect("store");
    let layer = IdempotencyLayer::new(store.clone());
    let drain = layer.drain_handle();
    let server = Server::start(layer).await;

    let first = server
        .post("/v1/notifications")
        .key("k-before")
        .json(BODY)
        .send()
        .await;
    assert_eq!(first.status, 201);
    guard("draining an idle layer", drain.wait()).await;

    let refused = server
        .post("/v1/notifications")
        .key("k-during")
        .json(BODY)
        .send()
        .await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.problem_code(), "IDEMPOTENCY_STORE_UNAVAILABLE");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("shutting down")
    );
    // Even a replay is refused: the layer no longer touches the store.
    let replay = server
        .post("/v1/notifications")
        .key("k-before")
        .json(BODY)
        .send()
        .await;
    assert_eq!(replay.status, 503);
    // Requests without a key, or of uncovered methods, still pass.
    let stats = server.request("GET", "/v1/stats").send().await;
    assert_eq!(stats.status, 200);
    assert_eq!(server.probe.runs("notifications"), 1);
    let context = server.probe.last_context();
    assert!(
        store
            .get(&context.scope, "k-during")
            .expect("get")
            .is_none(),
        "the refused request left no record"
    );
    server.stop().await;
}
