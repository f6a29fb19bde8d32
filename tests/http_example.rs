//! The example service (`examples/http_notifications.rs`), compiled into this test and held
//! to what it teaches: a recovered request looks for its earlier delivery before sending,
//! Ctrl-C loses no outcome, and its 401 says how to authenticate.
#![cfg(feature = "http")]

mod http_support;

#[allow(dead_code)]
#[path = "../examples/http_notifications.rs"]
mod example;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_support::{Call, eventually, guard, uuid};
use idemdb::{Begin, Fingerprint, StateKind, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BODY: &str = r#"{"to": ["ada"], "message": "hello"}"#;

type Served = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The example serving one store file, as `main` runs it, with a stop button for Ctrl-C.
struct Running {
    addr: std::net::SocketAddr,
    store: Store,
    ctrl_c: oneshot::Sender<()>,
    task: JoinHandle<Served>,
}

async fn open(path: &Path) -> Store {
    let path = path.to_owned();
    guard("opening the store", async {
        tokio::task::spawn_blocking(move || example::open_store(&path))
            .await
            .expect("open task")
    })
    .await
    .expect("open store")
}

impl Running {
    async fn start(path: &Path, delivery_time: Duration) -> Running {
        let store = open(path).await;
        let outbox = example::Outbox::open(&example::outbox_path(path)).expect("outbox");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (ctrl_c, pressed) = oneshot::channel::<()>();
        let task = tokio::spawn(example::serve(
            listener,
            store.clone(),
            Arc::new(outbox),
            delivery_time,
            async {
                let _ = pressed.await;
            },
        ));
        Running {
            addr,
            store,
            ctrl_c,
            task,
        }
    }

    fn notify(&self, key: &str) -> Call {
        Call::new(self.addr, "POST", "/v1/notifications")
            .header("x-api-key", "demo-key")
            .key(key)
            .json(BODY)
    }

    async fn sent(&self) -> serde_json::Value {
        Call::new(self.addr, "GET", "/v1/stats").send().await.json()["sent"].clone()
    }

    /// Presses Ctrl-C and waits until the example has shut down (server, drain, store).
    async fn stop(self) {
        let _ = self.ctrl_c.send(());
        guard("the example's shutdown", self.task)
            .await
            .expect("serve task")
            .expect("a clean shutdown");
    }
}

/// The one record of a store, with its scope and key.
fn only_record(store: &Store) -> idemdb::ScanEntry {
    let mut entries: Vec<_> = store
        .scan(None)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("entries");
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

/// What a crash in the middle of the handler leaves in the store: the request's claim,
/// abandoned. Written into a fresh store file for the request (scope, key, fingerprint).
async fn crashed_store(path: PathBuf, scope: String, key: String, fingerprint: Fingerprint) {
    tokio::task::spawn_blocking(move || {
        let store = example::open_store(&path).expect("store");
        match store.begin(&scope, &key, fingerprint).expect("begin") {
            Begin::Execute(claim) => claim.abandon().expect("abandon"),
            other => panic!("expected an execution, got {other:?}"),
        }
        store.close().expect("close");
    })
    .await
    .expect("task");
}

/// Serves one request on a scratch store to learn its scope and fingerprint, and returns
/// them with the directory's outbox of that run.
async fn learn_request(dir: &Path, key: &str) -> (String, Fingerprint, PathBuf) {
    let scratch = dir.join("scratch.idemdb");
    let running = Running::start(&scratch, Duration::ZERO).await;
    let reply = running.notify(key).send().await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["id"], "notification-0001");
    let entry = only_record(&running.store);
    running.stop().await;
    (
        entry.scope,
        entry.record.fingerprint(),
        example::outbox_path(&scratch),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_request_whose_earlier_attempt_sent_answers_with_that_delivery() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = uuid();
    let (scope, fingerprint, sent_outbox) = learn_request(dir.path(), &key).await;
    // The earlier attempt sent (its outbox line is there) and crashed before its outcome
    // was recorded (its claim is abandoned).
    let path = dir.path().join("service.idemdb");
    crashed_store(path.clone(), scope, key.clone(), fingerprint).await;
    std::fs::copy(&sent_outbox, example::outbox_path(&path)).expect("copy outbox");

    let running = Running::start(&path, Duration::ZERO).await;
    let retry = running.notify(&key).send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(!retry.replayed(), "the handler ran, as a recovery");
    assert_eq!(retry.json()["attempt"], 2);
    assert_eq!(
        retry.json()["id"],
        "notification-0001",
        "the earlier delivery"
    );
    assert_eq!(running.sent().await, 1, "nothing was sent twice");
    let again = running.notify(&key).send().await;
    assert!(again.replayed(), "{again:?}");
    assert_eq!(again.body, retry.body);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_request_whose_earlier_attempt_never_sent_sends_now() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = uuid();
    let (scope, fingerprint, _) = learn_request(dir.path(), &key).await;
    // The earlier attempt crashed before it sent: an abandoned claim, an empty outbox.
    let path = dir.path().join("service.idemdb");
    crashed_store(path.clone(), scope, key.clone(), fingerprint).await;

    let running = Running::start(&path, Duration::ZERO).await;
    let retry = running.notify(&key).send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert_eq!(retry.json()["attempt"], 2);
    assert_eq!(retry.json()["id"], "notification-0001");
    assert_eq!(running.sent().await, 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_a_client_has_left_mid_delivery_records_the_outcome_and_the_retry_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("service.idemdb");
    let key = uuid();
    // A delivery takes 1 s; the client leaves part-way through; then Ctrl-C.
    let running = Running::start(&path, Duration::from_secs(1)).await;
    let connection = running.notify(&key).send_raw().await;
    let store = running.store.clone();
    eventually("the handler to hold the key", || {
        store
            .scan(None)
            .expect("scan")
            .filter_map(Result::ok)
            .any(|entry| entry.record.kind(store.now()) == StateKind::InFlight)
    })
    .await;
    drop(connection);
    running.stop().await;
    drop(store);

    // The delivery finished and its response was recorded before the store closed.
    let outbox = example::Outbox::open(&example::outbox_path(&path)).expect("outbox");
    assert_eq!(outbox.count(), 1);
    let running = Running::start(&path, Duration::ZERO).await;
    let record = only_record(&running.store).record;
    assert_eq!(record.kind(running.store.now()), StateKind::Completed);
    let retry = running.notify(&key).send().await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(retry.replayed(), "the retry replays: {retry:?}");
    assert_eq!(retry.json()["attempt"], 1);
    assert_eq!(running.sent().await, 1, "sent once");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_401_for_a_missing_api_key_says_how_to_authenticate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let running = Running::start(&dir.path().join("service.idemdb"), Duration::ZERO).await;
    let anonymous = Call::new(running.addr, "POST", "/v1/notifications")
        .key(&uuid())
        .json(BODY)
        .send()
        .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.problem_code(), "IDEMPOTENCY_SCOPE_REJECTED");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("ApiKey header=\"X-Api-Key\"")
    );
    assert_eq!(running.sent().await, 0);
    running.stop().await;
}
