//! The workloads W1–W5, written once against the [`System`](crate::system::System) and
//! [`Session`](crate::system::Session) traits. Each checks every answer it gets: a wrong
//! one is an error that fails the run.

pub mod w1;
pub mod w2;
pub mod w3;
pub mod w4;
pub mod w5;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use crate::keys::{KeyStream, Request};
use crate::system::{Claimed, Lookup, Session};

/// What every workload needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed of every key stream.
    pub seed: u64,
    /// How long one measurement of W1, W2, W3 and W5 lasts.
    pub duration: Duration,
    /// Completed records in every store before measuring (W3 replays them).
    pub records: u64,
    /// Expired records W4 sweeps.
    pub expiring: u64,
    /// The thread counts of W2.
    pub w2_threads: Vec<usize>,
    /// The threads racing for each key in W5.
    pub w5_threads: usize,
    /// W5 stops after this many rounds even if time is left.
    pub w5_max_rounds: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The workload numbers used in key stream ids.
pub mod stream {
    /// W1's keys.
    pub const W1: u32 = 1;
    /// W2's keys (plus the thread count, so each W2 variant has its own).
    pub const W2: u32 = 1000;
    /// W3's own records (on a store that was not prefilled).
    pub const W3: u32 = 3;
    /// W4's expired records.
    pub const W4_EXPIRING: u32 = 4;
    /// W4's concurrent claims.
    pub const W4_CLAIMS: u32 = 5;
    /// W5's raced keys.
    pub const W5: u32 = 6;
}

/// One idempotent request cycle on a fresh key: the claim must win, then the response is
/// stored. Both are durable before they return.
pub fn cycle<S: Session>(session: &mut S, request: &Request) -> Result<()> {
    match session.claim(&request.key, &request.fp, now_ms())? {
        Claimed::Won(claim) => session.complete(claim, &request.response),
        Claimed::Taken { .. } => bail!(
            "wrong answer: the claim of the fresh key {} was not granted",
            request.key
        ),
    }
}

/// Keys read back after a measurement, at most, per key stream.
const VERIFY_SAMPLE: u64 = 500;

/// Reads back keys `0..count` of `keys` (all of them, or an even sample including the
/// first and the last) after the clock stopped: each must replay exactly the response its
/// cycle stored. Not timed.
pub fn verify_completed<S: Session>(session: &mut S, keys: &KeyStream, count: u64) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let step = count.div_ceil(VERIFY_SAMPLE).max(1);
    let now = now_ms();
    let indices = (0..count)
        .step_by(step as usize)
        .chain(std::iter::once(count - 1));
    for i in indices {
        let request = keys.request(i);
        match session.replay(&request.key, &request.fp, now)? {
            Lookup::Replay(bytes) if bytes == request.response => {}
            Lookup::Replay(_) => bail!(
                "wrong answer: the completed key {} replayed other bytes than it stored",
                request.key
            ),
            other => bail!(
                "wrong answer: the completed key {} read back as {other:?}",
                request.key
            ),
        }
    }
    Ok(())
}
