//! # idemdb — an embedded idempotency engine
//!
//! A request carrying an idempotency key is executed **at most once** within its retention
//! window; every retry gets the original response back; the same key with a different
//! request is refused as a **conflict**. Durably, across crashes, in one file.
//!
//! ## The model
//!
//! - A **scope** is a namespace (a tenant, an endpoint); the same key in two scopes is two
//!   unrelated records.
//! - A **key** is the caller's idempotency key, checked against the store's [`KeyPolicy`].
//! - A **fingerprint** ([`Fingerprint`]) says what the request is: the same key with another
//!   fingerprint is a conflict, never a replay.
//! - [`Store::begin`] answers with a [`Begin`]:
//!   - [`Begin::Execute`] — you hold a [`Claim`]: do the work, then [`Claim::complete`] with
//!     the response (or [`Claim::release`] if nothing happened);
//!   - [`Begin::Replay`] — it was done already: send the stored response;
//!   - [`Begin::Conflict`] — the key was used for a different request;
//!   - [`Begin::InProgress`] — someone else is executing it right now;
//!   - [`Begin::Abandoned`] — an earlier attempt vanished mid-way and the
//!     [`RecoveryPolicy`] is strict.
//!
//! [`Store::run`] wraps the whole cycle in one call.
//!
//! Async services use the async forms ([`Store::begin_async`], [`Claim::complete_async`],
//! [`Store::run_async`], ...): commits are awaited, never waited for on a runtime thread,
//! on any async runtime.
//!
//! ## Quick start
//!
//! ```
//! use idemdb::{Begin, Fingerprint, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("orders.idemdb"))?;
//!
//! let request = Fingerprint::builder()
//!     .method("POST")
//!     .path("/orders")
//!     .json_body(br#"{"item": "book", "qty": 1}"#)?
//!     .finish();
//!
//! match store.begin("shop", "order-2f7c", request)? {
//!     Begin::Execute(claim) => {
//!         // ... create the order, exactly once ...
//!         claim.complete(br#"{"order_id": 17}"#)?;
//!     }
//!     Begin::Replay(r) => println!("replaying {}", String::from_utf8_lossy(&r.response)),
//!     other => println!("not now: {}", other.kind()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Guarantees
//!
//! - When `begin` answers Execute, the claim is durable; when `complete` returns, the
//!   response is durable (with the default [`Durability::Immediate`]).
//! - Concurrent `begin`s of one key, in one process or many, produce at most one Execute.
//!   In one process the others wait (up to a bound) and then replay.
//! - A claim dropped without an outcome (a panic, an early return) never frees the key: the
//!   recovery policy decides, and the next execution is flagged as a recovery.
//! - Expiry is exact at read time; a background sweeper deletes expired records in bounded
//!   batches through an expiry index.
//! - Bad input and bad files are typed [`Error`]s, never panics.
//!
//! ## Where the code is
//!
//! Layers call downward only: the façade decides through `decision` and applies through
//! `storage`, which alone talks to redb. `storage` uses only the pure modules below it.
//!
//! | layer | module | concern |
//! | --- | --- | --- |
//! | façade | `store`, `claim`, `begin`, `run`, `scan`, `config` | the public API and its settings |
//! | façade | [`maintenance`] | offline integrity check and compaction of a store file |
//! | façade | `inflight`, `sweeper` | the lock-striped map where same-key callers wait; deletion of expired records |
//! | decision | `decision` | the state machine, as pure functions (crate-private; its answers are re-exported) |
//! | storage | `storage` (`mod.rs`) | the engine seam: read, apply, scan, sweep, check, close |
//! | storage | `storage::engine` | the journaled engine, made of four parts: `database` (redb and the read path through memtable and record cache), `journal_state`, `fold` state and the `writer`'s commit state |
//! | storage | `storage::{writer, fold, sweep}` | group commit into the journal; folding it into the redb tables; deleting expired records |
//! | storage | `storage::{journal, generations, tables, check, compact}` | the journal ring; records in generations with key filters; the table layout; the table checks; compaction |
//! | pure | `key`, `fingerprint`, [`canonical_json`](mod@canonical_json), `codec`, `record`, `time`, `error` | keys and scopes, what makes two requests the same, the record format, the answer types |
//! | tools | `testing` (feature `testing`) | a simulated faulty disk and model-checked operation sequences |
//! | tools | `http` (feature `http`) | a tower layer speaking `Idempotency-Key`, for axum and hyper services |
//!
//! ## Features
//!
//! - `testing`: `idemdb::testing`, the fault-injecting disk, custom storage for a store
//!   (`StoreBuilder::open_with_backend` and the `Backend` trait) and the reference-model
//!   harness that idemdb's own reliability tests use; handy for testing a service's
//!   settings the same way. Not needed in production.
//! - `http`: `idemdb::http`, a tower layer that speaks `Idempotency-Key` for axum, hyper and
//!   any tower service (adds tower, http, tokio and serde_json).
//! - `metrics`: counters, gauges and latency histograms through the `metrics` facade
//!   (`idemdb_begin_duration_seconds`, `idemdb_claim_end_duration_seconds`,
//!   `idemdb_executes_total`, ...), to whatever recorder the application installs.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod async_api;
mod begin;
pub mod canonical_json;
mod claim;
mod codec;
mod config;
mod decision;
mod detached;
mod error;
mod fingerprint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_checks;
#[cfg(feature = "http")]
pub mod http;
mod inflight;
mod key;
pub mod maintenance;
mod record;
mod run;
mod scan;
mod stats;
mod storage;
mod store;
mod sweeper;
mod sync;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod time;

pub use begin::{Begin, BeginOptions, Retention};
pub use canonical_json::{JsonError, JsonErrorKind, canonical_json};
pub use claim::{Claim, ClaimTicket, CompleteError, Completion};
pub use config::{
    DEFAULT_JOURNAL_SIZE, Durability, MAX_OWNER_LEN, MAX_RESPONSE_LIMIT, MIN_RETENTION,
    StoreBuilder,
};
pub use decision::{Abandoned, Conflict, InProgress, Recovery, RecoveryPolicy, Replay};
pub use error::{ClaimLostReason, Error, KeyError, Result, StorageError};
pub use fingerprint::{Fingerprint, FingerprintBuilder};
pub use key::{
    DEFAULT_MAX_KEY_LEN, KeyPolicy, MAX_KEY_CHARS_LIMIT, MAX_KEY_LEN_LIMIT, MAX_SCOPE_LEN,
    UuidVersions, validate_scope,
};
pub use record::{ClaimId, Completed, InFlight, Record, RecordBuilder, RecordState, StateKind};
pub use run::{RunError, RunOutcome};
pub use scan::{Scan, ScanEntry};
pub use stats::{StateCounts, Stats};
pub use storage::StoreFiles;
pub use store::{Store, SweepReport};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};

/// Crate-private pieces for `benches/micro.rs` (feature `bench-internals`). Not an API: no
/// stability promise, absent from the docs.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    /// Encodes a record as it is stored (format byte, then bincode).
    pub fn encode_record(record: &crate::Record) -> crate::Result<Vec<u8>> {
        crate::codec::encode(record)
    }

    /// Decodes a stored record.
    pub fn decode_record(bytes: &[u8]) -> crate::Result<crate::Record> {
        crate::codec::decode(bytes)
    }

    /// The decision's operation vocabulary, for the `decision` benchmarks.
    pub use crate::decision::{ClaimSpec, Operation, transition};
}
