//! W1: one thread runs idempotent request cycles on fresh keys — claim (durable before the
//! caller may execute), then complete with a ~200-byte response (durable before it
//! returns). Result: cycles per second. Afterwards (not timed) the completed keys are read
//! back and must replay their responses.

use std::time::Instant;

use anyhow::Result;

use super::{Config, cycle, stream, verify_completed};
use crate::keys::{KeyStream, stream_id};
use crate::system::System;

/// Cycles per second.
pub fn run<S: System>(system: &S, config: &Config, run: u32) -> Result<f64> {
    let keys = KeyStream::new(config.seed, stream_id(run, stream::W1, 0));
    let mut session = system.session(1)?;
    let started = Instant::now();
    let mut cycles = 0u64;
    while started.elapsed() < config.duration {
        crate::check_interrupted()?;
        cycle(&mut session, &keys.request(cycles))?;
        cycles += 1;
    }
    let rate = cycles as f64 / started.elapsed().as_secs_f64();
    verify_completed(&mut session, &keys, cycles)?;
    Ok(rate)
}
