//! A notification API made idempotent by idemdb's HTTP layer: `POST /v1/notifications`
//! "sends" a message, and a retry with the same idempotency key gets the first response
//! back instead of a second message.
//!
//! ```sh
//! cargo run --example http_notifications --features http                 # 127.0.0.1:3000
//! cargo run --example http_notifications --features http -- 127.0.0.1:8080 my.idemdb 4000
//! ```
//!
//! The arguments are the address, the store file, and how long one delivery takes in
//! milliseconds (default 0; a few seconds shows what happens to a request whose client
//! leaves, or that is in flight at Ctrl-C).
//!
//! The rules are the OneSignal preset's: the key is an RFC 9562 UUID, sent as the
//! `Idempotency-Key` header or as the body field `idempotency_key` (or its legacy name
//! `external_id`), and records are kept 30 days. Here the key is required, and records are
//! per API key (`X-Api-Key`; without it, 401 with a `WWW-Authenticate` challenge).
//!
//! "Sending" appends the message to an outbox file next to the store (`<store>.outbox`),
//! synced before the handler answers: it stands in for a provider. `GET /v1/stats` says how
//! many messages were really sent. The layer's log lines go to stderr.
//!
//! Three things a real service copies from here:
//! - **Recovery.** When the layer says an earlier attempt of this key stopped without an
//!   outcome (`IdempotencyContext::recovery`: a crash or a panic mid-handler, or a delivery
//!   whose outcome this service could not tell, answered 504 and so abandoned, never
//!   freed), that attempt may have sent already. The handler looks in the outbox, under the key, before sending
//!   again. The check only works because the send and its record are one durable write
//!   (here one synced line; with a real provider, pass it the key, or record the send in
//!   the same transaction): state written after the send would leave a gap a crash can
//!   fall into.
//! - **Shutdown.** Ctrl-C stops the server, then waits for the layer's drain (handlers whose
//!   client has gone are still running, in their own tasks), and only then closes the
//!   store. Closing it first would lose their outcomes, and their retries would send again.
//! - **401.** A refusal for a missing API key says how to authenticate.

use std::future::Future;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use idemdb::Store;
use idemdb::http::{
    DrainHandle, HeaderScope, IdempotencyContext, IdempotencyLayer, Preset, StatusAction,
    default_status_action,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One message sent, as the outbox records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Which request sent it: the idempotency scope and key.
    pub tag: String,
    /// The notification's id, as the API answers it.
    pub id: String,
    /// How many recipients it went to.
    pub recipients: usize,
    /// The message.
    pub message: String,
}

/// The messages sent so far: a file of JSON lines, one synced line per delivery. The file
/// is the truth; the count is kept in memory for the ids and the stats.
pub struct Outbox {
    path: PathBuf,
    file: Mutex<(std::fs::File, usize)>,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`.
    pub fn open(path: &Path) -> std::io::Result<Outbox> {
        let sent = Self::read(path)?.len();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Outbox {
            path: path.to_owned(),
            file: Mutex::new((file, sent)),
        })
    }

    /// Every delivery in the file. A last line cut short by a crash is a delivery that did
    /// not happen.
    fn read(path: &Path) -> std::io::Result<Vec<Delivery>> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut deliveries = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            if let Ok(delivery) = serde_json::from_str::<Delivery>(&line?) {
                deliveries.push(delivery);
            }
        }
        Ok(deliveries)
    }

    /// The delivery made for `tag`, if the file holds one. Blocking (call it off the
    /// runtime's threads).
    pub fn find(&self, tag: &str) -> std::io::Result<Option<Delivery>> {
        let _writes_wait = self.lock()?;
        Ok(Self::read(&self.path)?.into_iter().find(|d| d.tag == tag))
    }

    /// How many messages were sent.
    pub fn count(&self) -> usize {
        self.lock().map_or(0, |file| file.1)
    }

    /// Sends a message: one line, synced, is the delivery. An error leaves the outcome
    /// unknown (the line may have reached the file). Blocking.
    fn deliver(
        &self,
        tag: String,
        recipients: usize,
        message: String,
    ) -> std::io::Result<Delivery> {
        let mut file = self.lock()?;
        let delivery = Delivery {
            tag,
            id: format!("notification-{:04}", file.1 + 1),
            recipients,
            message,
        };
        let mut line = serde_json::to_vec(&delivery).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.0.write_all(&line)?;
        file.0.sync_data()?;
        file.1 += 1;
        Ok(delivery)
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, (std::fs::File, usize)>> {
        self.file
            .lock()
            .map_err(|_| std::io::Error::other("the outbox lock is poisoned"))
    }
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    outbox: Arc<Outbox>,
    /// How long one delivery takes (a provider's latency).
    delivery_time: Duration,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    message: String,
}

fn created(delivery: &Delivery, idempotency: &IdempotencyContext) -> (StatusCode, Json<Value>) {
    let body = json!({
        "id": delivery.id,
        "recipients": delivery.recipients,
        "attempt": idempotency.attempt,
    });
    (StatusCode::CREATED, Json(body))
}

async fn send(
    State(app): State<App>,
    Extension(idempotency): Extension<IdempotencyContext>,
    Json(notification): Json<Notification>,
) -> (StatusCode, Json<Value>) {
    if notification.to.is_empty() || notification.message.is_empty() {
        // A 4xx is a final answer: stored and replayed like a success.
        let error = json!({"error": "a notification needs recipients (to) and a message"});
        return (StatusCode::BAD_REQUEST, Json(error));
    }
    // The scope (API key and route) and the key name this request, across restarts.
    let tag = format!("{} {}", idempotency.scope, idempotency.key);
    let outbox = Arc::clone(&app.outbox);
    if idempotency.recovery {
        // An earlier attempt of this request stopped without an outcome (a crash, a panic,
        // a delivery that failed half-way): it may have sent. Look before sending again.
        let (outbox, tag) = (Arc::clone(&outbox), tag.clone());
        match tokio::task::spawn_blocking(move || outbox.find(&tag)).await {
            Ok(Ok(Some(earlier))) => return created(&earlier, &idempotency),
            Ok(Ok(None)) => {} // it never sent: send now
            // Unable to tell: never guess "not sent". The claim stays abandoned (504) and
            // the next retry looks again.
            Ok(Err(error)) => return unknown(&error),
            Err(error) => return unknown(&error),
        }
    }
    // The side effect that must happen at most once.
    tokio::time::sleep(app.delivery_time).await;
    let recipients = notification.to.len();
    let delivered =
        tokio::task::spawn_blocking(move || outbox.deliver(tag, recipients, notification.message))
            .await;
    match delivered {
        Ok(Ok(delivery)) => created(&delivery, &idempotency),
        Ok(Err(error)) => unknown(&error),
        Err(error) => unknown(&error),
    }
}

/// The answer when the delivery's outcome is unknown: 504, which this service's status
/// policy turns into an abandoned claim (not a freed key), so the retry comes back flagged
/// as a recovery and checks the outbox first.
fn unknown(error: &dyn std::fmt::Display) -> (StatusCode, Json<Value>) {
    let error = json!({
        "error": format!("the message may or may not have been sent ({error}); retry with the same idempotency key"),
    });
    (StatusCode::GATEWAY_TIMEOUT, Json(error))
}

async fn stats(State(app): State<App>) -> Json<Value> {
    Json(json!({"sent": app.outbox.count()}))
}

/// The store, with the preset's store half: UUID keys, records kept 30 days.
pub fn open_store(path: &Path) -> idemdb::Result<Store> {
    Store::builder().preset(&Preset::onesignal()).open(path)
}

/// Where the outbox of the store at `store_path` lives.
pub fn outbox_path(store_path: &Path) -> PathBuf {
    let mut name = store_path.as_os_str().to_owned();
    name.push(".outbox");
    PathBuf::from(name)
}

/// The service, and the drain to wait for at shutdown.
pub fn app(
    store: Store,
    outbox: Arc<Outbox>,
    delivery_time: Duration,
) -> idemdb::Result<(Router, DrainHandle)> {
    let layer = IdempotencyLayer::builder(store)
        .preset(&Preset::onesignal())
        .require_key(true)
        .status_policy(|status| match status {
            StatusCode::GATEWAY_TIMEOUT => StatusAction::Abandon,
            other => default_status_action(other),
        })
        .scope(
            HeaderScope::new(HeaderName::from_static("x-api-key"))
                .digest()
                .challenge(HeaderValue::from_static("ApiKey header=\"X-Api-Key\"")),
        )
        .build()?;
    let drain = layer.drain_handle();
    let router = Router::new()
        .route("/v1/notifications", post(send))
        .route("/v1/stats", get(stats))
        .layer(layer)
        .with_state(App {
            outbox,
            delivery_time,
        });
    Ok((router, drain))
}

/// Serves until `shutdown` resolves, then shuts down in the order that loses nothing:
/// the server (it waits for open connections), the layer's drain (it waits for handlers
/// whose client has gone), the store.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    outbox: Arc<Outbox>,
    delivery_time: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let (router, drain) = app(store.clone(), outbox, delivery_time)?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    if drain.in_flight() > 0 {
        eprintln!(
            "waiting for {} request(s) whose client has gone",
            drain.in_flight()
        );
    }
    drain.wait().await;
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let path = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "idemdb-notifications.idemdb".to_owned()),
    );
    let delivery_ms = match args.next() {
        Some(ms) => ms
            .parse::<u64>()
            .map_err(|e| format!("delivery time {ms:?} is not a number of milliseconds: {e}"))?,
        None => 0,
    };

    let store = open_store(&path)?;
    let outbox = Arc::new(Outbox::open(&outbox_path(&path))?);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "notifications API on http://{addr} (store: {}); Ctrl-C stops it",
        path.display()
    );
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(
        listener,
        store,
        outbox,
        Duration::from_millis(delivery_ms),
        ctrl_c,
    )
    .await?;
    println!("stopped; the store is closed");
    Ok(())
}
