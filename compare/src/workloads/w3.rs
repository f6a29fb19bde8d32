//! W3: one thread replays completed keys as retries do: read the record, compare the
//! fingerprint, return the stored response. idemdb: `begin` with the same fingerprint must
//! answer Replay. Every response is compared with the bytes stored. Result: reads per
//! second.
//!
//! The keys are prefilled records, picked at random with a fixed seed; on an empty store
//! (`--records 0`) each run first stores [`OWN_RECORDS`] completed records of its own (in
//! bulk, not timed) and replays those. One untimed pass over the keys warms every cache.

use std::time::Instant;

use anyhow::{Result, bail};

use super::{Config, now_ms, stream};
use crate::keys::{KeyStream, RETENTION_MS, Rng, stream_id};
use crate::system::{Lookup, Session, System};

/// Distinct keys replayed per measurement at most (built before the clock starts).
const POOL: u64 = 100_000;

/// Records W3 stores for itself when the store was not prefilled.
pub const OWN_RECORDS: u64 = 20_000;

/// Reads per second.
pub fn run<S: System>(system: &mut S, config: &Config, run: u32) -> Result<f64> {
    let (source, records) = if config.records > 0 {
        (KeyStream::new(config.seed, 0), config.records)
    } else {
        let own = KeyStream::new(config.seed, stream_id(run, stream::W3, 0));
        let now = now_ms();
        system.insert_completed(own, OWN_RECORDS, now, now + RETENTION_MS)?;
        (own, OWN_RECORDS)
    };
    let mut rng = Rng::new(config.seed ^ u64::from(run).rotate_left(32));
    let pool: Vec<_> = (0..POOL.min(records))
        .map(|_| source.request(rng.below(records)))
        .collect();
    if pool.is_empty() {
        bail!("W3 has no record to replay");
    }
    let mut session = system.session(1)?;
    // One untimed pass first, so every system starts warm (idemdb's store was reopened
    // after its prefill; the others kept their caches).
    let now = now_ms();
    for request in &pool {
        if !matches!(
            session.replay(&request.key, &request.fp, now)?,
            Lookup::Replay(_)
        ) {
            bail!(
                "wrong answer: the completed key {} did not replay",
                request.key
            );
        }
    }
    let started = Instant::now();
    let mut reads = 0u64;
    let mut now = now_ms();
    'measure: loop {
        for request in &pool {
            match session.replay(&request.key, &request.fp, now)? {
                Lookup::Replay(response) if response == request.response => {}
                Lookup::Replay(_) => {
                    bail!(
                        "wrong answer: the replay of {} returned other bytes than stored",
                        request.key
                    )
                }
                other => bail!(
                    "wrong answer: the replay of the completed key {} found {other:?}",
                    request.key
                ),
            }
            reads += 1;
            if reads.is_multiple_of(1024) {
                crate::check_interrupted()?;
                now = now_ms();
                if started.elapsed() >= config.duration {
                    break 'measure;
                }
            }
        }
    }
    Ok(reads as f64 / started.elapsed().as_secs_f64())
}
