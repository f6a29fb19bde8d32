//! W1: one thread runs idempotent request cycles on fresh keys — claim (durable before the
//! caller may execute), then complete with a ~200-byte response (durable before it
//! returns). Result: cycles per second.

use std::time::Instant;

use anyhow::Result;

use super::{Config, cycle, stream};
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
    Ok(cycles as f64 / started.elapsed().as_secs_f64())
}
