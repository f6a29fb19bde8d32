//! W2: many threads run request cycles at once, each on its own fresh keys (no two threads
//! share a key). Result: cycles per second, all threads together. Afterwards (not timed)
//! every thread's completed keys are read back and must replay their responses.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Result, anyhow};

use super::{Config, cycle, stream, verify_completed};
use crate::keys::{KeyStream, stream_id};
use crate::system::System;

/// Cycles per second with `threads` threads.
pub fn run<S: System>(system: &S, config: &Config, run: u32, threads: usize) -> Result<f64> {
    let workload = stream::W2 + u32::try_from(threads)?;
    // Every connection is made before the clock starts.
    let sessions = (0..threads)
        .map(|_| system.session(threads))
        .collect::<Result<Vec<_>>>()?;
    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(t, mut session)| {
                let (start, stop) = (&start, &stop);
                let keys = KeyStream::new(config.seed, stream_id(run, workload, t as u32));
                scope.spawn(move || -> Result<(u64, _, KeyStream)> {
                    start.wait();
                    let mut cycles = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let done = cycle(&mut session, &keys.request(cycles));
                        if let Err(e) = done {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        cycles += 1;
                    }
                    Ok((cycles, session, keys))
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        while started.elapsed() < config.duration && !stop.load(Ordering::Relaxed) {
            if crate::check_interrupted().is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        let mut total = 0u64;
        let mut done = Vec::new();
        for worker in workers {
            let (cycles, session, keys) = worker
                .join()
                .map_err(|_| anyhow!("a W2 thread panicked"))??;
            total += cycles;
            done.push((cycles, session, keys));
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        crate::check_interrupted()?;
        for (cycles, mut session, keys) in done {
            verify_completed(&mut session, &keys, cycles)?;
        }
        Ok(rate)
    })
}
