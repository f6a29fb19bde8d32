//! A notification API made idempotent by idemdb's HTTP layer: `POST /v1/notifications`
//! "sends" a message (it only counts it), and a retry with the same idempotency key gets
//! the first response back instead of a second message.
//!
//! ```sh
//! cargo run --example http_notifications --features http                 # 127.0.0.1:3000
//! cargo run --example http_notifications --features http -- 127.0.0.1:8080 my.idemdb
//! ```
//!
//! The key is a UUID (RFC 9562), sent as the `Idempotency-Key` header or as the body field
//! `idempotency_key` (or its legacy name `external_id`). Records are kept 30 days, per API
//! key (`X-Api-Key`, required). `GET /v1/stats` tells how many messages were really sent.
//! The layer's log lines (a response too large to store, an abandoned claim) go to stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{HeaderName, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use idemdb::http::{HeaderScope, IdempotencyContext, IdempotencyLayer};
use idemdb::{KeyPolicy, Store, UuidVersions};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Default)]
struct Sender {
    sent: AtomicU64,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    message: String,
}

async fn send(
    State(sender): State<Arc<Sender>>,
    Extension(idempotency): Extension<IdempotencyContext>,
    Json(notification): Json<Notification>,
) -> (StatusCode, Json<Value>) {
    if notification.to.is_empty() || notification.message.is_empty() {
        // A 4xx is a final answer: stored and replayed like a success.
        let error = json!({"error": "a notification needs recipients (to) and a message"});
        return (StatusCode::BAD_REQUEST, Json(error));
    }
    // The side effect that must happen at most once.
    let n = sender.sent.fetch_add(1, Ordering::SeqCst) + 1;
    let body = json!({
        "id": format!("notification-{n:04}"),
        "recipients": notification.to.len(),
        "attempt": idempotency.attempt,
    });
    (StatusCode::CREATED, Json(body))
}

async fn stats(State(sender): State<Arc<Sender>>) -> Json<Value> {
    Json(json!({"sent": sender.sent.load(Ordering::SeqCst)}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let path = args
        .next()
        .unwrap_or_else(|| "idemdb-notifications.idemdb".to_owned());

    let store = Store::builder()
        .key_policy(KeyPolicy::Uuid(UuidVersions::ALL))
        .default_retention(Duration::from_secs(30 * 24 * 3600))
        .open(&path)?;
    let layer = IdempotencyLayer::builder(store.clone())
        .json_key_fields(["idempotency_key", "external_id"])
        .require_key(true)
        .scope(
            HeaderScope::new(HeaderName::from_static("x-api-key"))
                .digest()
                .missing_status(StatusCode::UNAUTHORIZED),
        )
        .build()?;

    let app = Router::new()
        .route("/v1/notifications", post(send))
        .route("/v1/stats", get(stats))
        .layer(layer)
        .with_state(Arc::new(Sender::default()));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("notifications API on http://{addr} (store: {path}); Ctrl-C stops it");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    store.close()?;
    println!("stopped; the store is closed");
    Ok(())
}
