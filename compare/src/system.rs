//! The seam between workloads and systems: what every compared system must do.
//!
//! A [`System`] owns one store (a file, or a private server's database) and hands out one
//! [`Session`] per worker thread (a connection, or a handle). Workloads only ever talk to
//! these two traits, so each of them runs the same code against every system.

use anyhow::Result;

use crate::keys::KeyStream;

/// The answer to a claim of a key.
pub enum Claimed<T> {
    /// This caller holds the key and must complete it.
    Won(T),
    /// Someone else holds or completed the key. `replayed` is the stored response when the
    /// system answers a lost race with it (idemdb's in-process waiters do).
    Taken {
        /// The stored response, if the system returned one.
        replayed: Option<Vec<u8>>,
    },
}

/// What reading a key with a fingerprint finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A completed record with the same fingerprint: its response.
    Replay(Vec<u8>),
    /// A record of a different request.
    Conflict,
    /// A record that is claimed but not completed.
    InFlight,
    /// No live record.
    Missing,
}

/// One worker thread's handle on a system.
pub trait Session: Send {
    /// What a won claim carries to `complete`.
    type Claim: Send;

    /// Claims `key` for the request `fp` at `now_ms`, durably before answering
    /// [`Claimed::Won`].
    fn claim(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Claimed<Self::Claim>>;

    /// Stores the response of a won claim, durably before returning.
    fn complete(&mut self, claim: Self::Claim, response: &[u8]) -> Result<()>;

    /// Reads `key` as a retry of the request `fp` at `now_ms` would.
    fn replay(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Lookup>;
}

/// Whether a system has a sweep of expired records to measure.
pub enum SweepSupport {
    /// It does: `sweep` works.
    Supported,
    /// It does not; the reason is printed under the table.
    NotApplicable(&'static str),
}

/// One compared system, holding one store.
pub trait System: Send + Sync {
    /// Its session type.
    type Session: Session;

    /// A session for one thread; `concurrency` is how many sessions will be used at once
    /// (redb switches to its batching writer above 1).
    fn session(&self, concurrency: usize) -> Result<Self::Session>;

    /// Stores `count` completed records, keys `0..count` of `keys`, created at `now_ms` with
    /// the normal retention, as fast as the system allows (bulk transactions, pipelining).
    fn prefill(&mut self, keys: KeyStream, count: u64, now_ms: u64) -> Result<()>;

    /// Called before each measurement with the benchmark's clock (idemdb's store runs on a
    /// manual clock that is moved here; the peers take times as arguments).
    fn set_time(&self, _now_ms: u64) {}

    /// Whether W4 applies.
    fn sweep_support(&self) -> SweepSupport {
        SweepSupport::Supported
    }

    /// Stores `count` completed records, keys `0..count` of `keys`, created at `created_ms`
    /// and expiring at `expires_ms`, in bulk: the set-up of W3 on an empty store and of W4
    /// (not timed). When it returns the records are where a long-lived store keeps them
    /// (idemdb: folded into the database, not only journaled).
    fn insert_completed(
        &mut self,
        keys: KeyStream,
        count: u64,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<()>;

    /// Deletes every record expired at `now_ms`; returns how many it deleted.
    fn sweep(&self, now_ms: u64) -> Result<u64>;

    /// A one-line description: version and the settings that matter.
    fn describe(&self) -> String;

    /// Anything worth printing after the run (engine counters).
    fn notes(&self) -> Option<String> {
        None
    }
}
