//! HTTP: a tower [`Layer`](tower::Layer) that speaks `Idempotency-Key` (feature `http`).
//!
//! Wrap any tower or hyper service, or an axum router, and every covered request that
//! carries a key runs at most once per retention window; retries get the original response
//! back, byte for byte, with `Idempotent-Replayed: true`.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use idemdb::{Store, http::IdempotencyLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("idempotency.idemdb")?;
//! let app: Router = Router::new()
//!     .route("/v1/notifications", post(|| async { "sent" }))
//!     .layer(IdempotencyLayer::new(store));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What happens to a request
//!
//! 1. A request whose method is not covered (default: POST and PATCH are) passes through.
//! 2. The key comes from the `Idempotency-Key` header — a structured-field string, quoted
//!    (`"k-1"`, as draft-ietf-httpapi-idempotency-key-header writes it) or bare (`k-1`) —
//!    or, if configured, from a top-level field of a JSON body such as `idempotency_key`
//!    with its legacy alias `external_id`. Without a key the request passes through, or
//!    gets 400 when keys are required. A key that breaks the store's [`KeyPolicy`]
//!    (for example UUIDs only) gets 400 saying why, and so does a key containing a comma,
//!    whatever the policy: a proxy joins two `Idempotency-Key` headers into one with a
//!    comma, so `k1, k2` may be two keys. A body that should carry the key but is not JSON
//!    gets 400 `IDEMPOTENCY_BODY_MALFORMED` (when its content type says JSON or a key is
//!    required; with the key in the header, the body is the handler's business).
//! 3. The body is read, up to a limit (413 above it).
//! 4. The **scope** is the tenant (from a [`ScopeExtractor`]; by default a digest of the
//!    `Authorization` and `X-Api-Key` headers) plus the method and path: two tenants or two
//!    endpoints never see each other's records.
//! 5. The **fingerprint** covers the method, path, query, body (canonical when the content
//!    type is JSON, so member order and whitespace do not matter) and any configured
//!    headers. The same key with another fingerprint is a conflict.
//! 6. The first request runs the inner service. Its response's status decides (see
//!    [`StatusAction`]): by default 2xx, 3xx and 4xx are stored — status, headers without
//!    hop-by-hop ones, body — while 5xx, 408 and 429 release the key so a retry runs again.
//! 7. A retry gets the stored response plus `Idempotent-Replayed: true`. A duplicate that
//!    arrives while the first is running waits for it (up to the configured wait), then
//!    gets the replay; past the wait it gets 409 with `Retry-After`.
//!
//! Every response to a request that has a record carries `Idempotency-Expires`: when the
//! record expires, as an HTTP-date (or `never` for records kept forever). A response whose
//! key was released (a 5xx) has no record and no such header.
//!
//! # Status codes and problem bodies
//!
//! The layer's own answers are `application/problem+json` (RFC 9457) with a `code`:
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 400 | `IDEMPOTENCY_KEY_MISSING` | no key, and keys are required |
//! | 400 | `IDEMPOTENCY_KEY_INVALID` | the key breaks the key policy, or the header is malformed |
//! | 400 | `IDEMPOTENCY_KEY_MISMATCH` | the header and a body field name different keys |
//! | 400 | `IDEMPOTENCY_BODY_MALFORMED` | the body should carry the key but is not JSON |
//! | extractor's | `IDEMPOTENCY_SCOPE_REJECTED` | the [`ScopeExtractor`] refused the request (with its headers, e.g. `WWW-Authenticate` on a 401) |
//! | 413 | `REQUEST_BODY_TOO_LARGE` | the body exceeds the limit |
//! | 422, or 409 | `IDEMPOTENCY_CONFLICT` | the key was used for another request ([`ConflictStatus`]) |
//! | 409 + `Retry-After` | `IDEMPOTENCY_IN_PROGRESS` | the first request is still running after the wait |
//! | 409 | `IDEMPOTENCY_ABANDONED` | an earlier attempt vanished and the recovery policy is strict |
//! | 500 | `HANDLER_PANICKED` | the handler panicked (its claim is abandoned) |
//! | 503 + `Retry-After` | `IDEMPOTENCY_STORE_UNAVAILABLE` | the store failed (the error is logged), or the layer is draining for shutdown |
//!
//! # Outcomes the layer cannot store
//!
//! - **A handler that panics or whose future is dropped** leaves the outcome unknown: the
//!   claim is abandoned (in a task of its own, awaiting the commit) and the store's
//!   [`RecoveryPolicy`] decides what a retry gets: `TakeOver` runs it again, flagged as a
//!   recovery in [`IdempotencyContext`]; `Strict` answers 409 `IDEMPOTENCY_ABANDONED`.
//! - **A dropped connection** does not drop the handler by default: it runs in a task of its
//!   own until it finishes and its response is stored, so the retry replays it
//!   ([`run_to_completion`](IdempotencyLayerBuilder::run_to_completion)).
//! - **A response larger than the store's `max_response_size`** (or one with trailers) is
//!   passed through unchanged and not stored, with a warning in the log. Its claim is
//!   **abandoned**, not released: the handler did run, and releasing would tell the store
//!   that nothing happened, inviting a silent second execution. Abandoned, a retry is
//!   either refused (`Strict`) or runs flagged as a recovery, so the handler can check for
//!   the earlier run. Raise the store's limit for endpoints with large responses.
//! - **A response whose storing fails** (disk full) still reaches the client; its claim is
//!   abandoned for the same reason.
//!
//! # Shutting down
//!
//! A handler whose client has gone runs on in its own task, so a server's graceful
//! shutdown (which waits for connections) does not wait for it. Stop the server, then
//! wait for the layer's [`DrainHandle`] ([`IdempotencyLayer::drain_handle`]), then close the
//! store: every handler the layer started has then recorded its outcome, and its retry after
//! the restart replays instead of running again. While draining, new covered requests get
//! 503 with `Retry-After`, their keys untouched.
//!
//! # Presets
//!
//! [`Preset`] carries the rules of a known public API — key policy, retention and its
//! bounds, body key fields, conflict status — applied with one call on the store builder
//! and one on the layer builder: [`Preset::onesignal`] (UUID `idempotency_key` or legacy
//! `external_id`, 30 days), [`Preset::workflow`] (any key up to 256 characters, a window of
//! 1 s to 24 h), [`Preset::noticia`] (`Idempotency-Key`, 24 h, 409 `IDEMPOTENCY_CONFLICT`).
//!
//! # Never blocking the runtime
//!
//! Store calls use the store's async API: a commit is awaited (the store's writer thread
//! wakes the task), so no runtime thread waits for a disk. Waiting for a
//! request in progress holds no thread: the waiter sleeps on a notification its holder
//! fires when it ends its claim (a holder outside this layer, such as another layer over
//! the same store or direct [`Store`](crate::Store) calls, is polled with a back-off).
//! The layer needs a tokio runtime, as hyper and axum provide.
//!
//! # Options
//!
//! | option | default |
//! | --- | --- |
//! | [`preset`](IdempotencyLayerBuilder::preset) | none (apply first: it sets the retention, `json_key_fields` and `conflict_status`) |
//! | [`methods`](IdempotencyLayerBuilder::methods) | POST, PATCH |
//! | [`header`](IdempotencyLayerBuilder::header) | `Idempotency-Key` |
//! | [`json_key_fields`](IdempotencyLayerBuilder::json_key_fields) | none (header only) |
//! | [`require_key`](IdempotencyLayerBuilder::require_key) | false |
//! | [`scope`](IdempotencyLayerBuilder::scope) | [`CredentialScope`] |
//! | [`scope_includes_route`](IdempotencyLayerBuilder::scope_includes_route) | true |
//! | [`fingerprint_headers`](IdempotencyLayerBuilder::fingerprint_headers) | none |
//! | [`conflict_status`](IdempotencyLayerBuilder::conflict_status) | 422 |
//! | [`status_policy`](IdempotencyLayerBuilder::status_policy) | [`default_status_action`] |
//! | [`wait`](IdempotencyLayerBuilder::wait) | the store's wait (10 s) |
//! | [`max_request_body`](IdempotencyLayerBuilder::max_request_body) | 1 MiB |
//! | [`retention`](IdempotencyLayerBuilder::retention), [`lease`](IdempotencyLayerBuilder::lease), [`recovery`](IdempotencyLayerBuilder::recovery) | the store's |
//! | [`run_to_completion`](IdempotencyLayerBuilder::run_to_completion) | true |
//!
//! With axum, add the layer to the router that holds the routes (`Router::layer` or
//! `route_layer`); a router nested under a prefix sees paths without the prefix, so put the
//! layer on the outer router or name the route in the scope extractor.
//!
//! [`KeyPolicy`]: crate::KeyPolicy
//! [`RecoveryPolicy`]: crate::RecoveryPolicy

mod body;
mod config;
mod drain;
mod http_date;
mod key;
mod preset;
mod problem;
mod request_fingerprint;
mod scope;
mod service;
mod stored_response;
mod waiting;

use ::http::header::HeaderName;

pub use body::{Body, BoxError};
pub use config::{
    ConflictStatus, DEFAULT_MAX_REQUEST_BODY, IdempotencyLayerBuilder, StatusAction,
    default_status_action,
};
pub use drain::DrainHandle;
pub use preset::Preset;
pub use scope::{CredentialScope, HeaderScope, ScopeExtractor, ScopeRejection};
pub use service::{IdempotencyLayer, IdempotencyService};

use crate::time::Timestamp;

/// `Idempotency-Key`: the request header carrying the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `Idempotent-Replayed: true`: marks a response replayed from the store.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `Idempotency-Expires`: when the key's record expires, as an HTTP-date (or `never`).
pub const IDEMPOTENCY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-expires");

/// What the layer tells the handler of an executing request, as a request extension (in
/// axum: `Extension<IdempotencyContext>`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyContext {
    /// The request's scope (tenant, method and path).
    pub scope: String,
    /// The key, as stored.
    pub key: String,
    /// 1 for the first execution; more when taking over an abandoned attempt.
    pub attempt: u32,
    /// An earlier attempt stopped without an outcome and may have run partly or fully:
    /// check before repeating a side effect.
    pub recovery: bool,
    /// When the record expires (`None`: never).
    pub expires_at: Option<Timestamp>,
}
