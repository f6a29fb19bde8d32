//! W3: one thread replays completed keys (the prefilled records, picked at random with a
//! fixed seed) as retries do: read the record, compare the fingerprint, return the stored
//! response. idemdb: `begin` with the same fingerprint must answer Replay. Every response
//! is compared with the bytes stored. Result: reads per second.

use std::time::Instant;

use anyhow::{Result, bail};

use super::{Config, now_ms};
use crate::keys::{KeyStream, Rng};
use crate::system::{Lookup, Session, System};

/// Distinct keys replayed per measurement at most (built before the clock starts).
const POOL: u64 = 100_000;

/// Reads per second.
pub fn run<S: System>(system: &S, config: &Config, run: u32) -> Result<f64> {
    if config.records == 0 {
        bail!("W3 replays prefilled records: use --records 1 or more");
    }
    let prefilled = KeyStream::new(config.seed, 0);
    let mut rng = Rng::new(config.seed ^ u64::from(run).rotate_left(32));
    let pool: Vec<_> = (0..POOL.min(config.records))
        .map(|_| prefilled.request(rng.below(config.records)))
        .collect();
    let mut session = system.session(1)?;
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
