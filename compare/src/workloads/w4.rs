//! W4: sweeping expired records. `expiring` completed records that expire one second after
//! their creation are added (not timed), the benchmark's clock moves two seconds on, and the
//! system deletes everything expired: idemdb `sweep_now` on its manual clock, SQL
//! `DELETE … WHERE expires_at <= now` through the `expires_at` index, redb through its
//! expiry index table. The count deleted must equal the count added. Result: records per
//! second.
//!
//! Meanwhile one more thread keeps running request cycles on fresh keys; the longest claim
//! or completion that overlapped the sweep is reported: how long the sweep can stall
//! traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::{Config, now_ms, stream};
use crate::keys::{KeyStream, stream_id};
use crate::system::{Claimed, Session, System};

/// What W4 measured.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// Records deleted per second.
    pub records_per_second: f64,
    /// The longest claim or completion overlapping the sweep.
    pub max_stall: Duration,
}

/// Cycles the concurrent claimer completes before the sweep starts.
const WARM_UP_CYCLES: u64 = 20;

/// Runs W4 once.
pub fn run<S: System>(system: &mut S, config: &Config, run: u32) -> Result<Sweep> {
    if config.expiring == 0 {
        bail!("W4 needs --expiring 1 or more");
    }
    let t0 = now_ms();
    system.set_time(t0);
    let expiring = KeyStream::new(config.seed, stream_id(run, stream::W4_EXPIRING, 0));
    system.insert_completed(expiring, config.expiring, t0, t0 + 1000)?;
    let claims = KeyStream::new(config.seed, stream_id(run, stream::W4_CLAIMS, 0));
    let system = &*system;
    let mut claimer = system.session(1)?;
    let stop = AtomicBool::new(false);
    let cycles = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| -> Result<Vec<(Instant, Instant)>> {
            let mut ops = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = claims.request(i);
                i += 1;
                let begun = Instant::now();
                let claim = match claimer.claim(&request.key, &request.fp, now_ms())? {
                    Claimed::Won(claim) => claim,
                    Claimed::Taken { .. } => bail!(
                        "wrong answer: the claim of the fresh key {} was not granted during the sweep",
                        request.key
                    ),
                };
                let claimed = Instant::now();
                claimer.complete(claim, &request.response)?;
                let completed = Instant::now();
                ops.push((begun, claimed));
                ops.push((claimed, completed));
                cycles.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ops)
        });
        let warm = Instant::now();
        while cycles.load(Ordering::Relaxed) < WARM_UP_CYCLES
            && warm.elapsed() < Duration::from_secs(5)
            && !worker.is_finished()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let sweep_started = Instant::now();
        let swept = system.sweep(t0 + 2000);
        let sweep_ended = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let ops = worker
            .join()
            .map_err(|_| anyhow!("the W4 claimer thread panicked"))??;
        let swept = swept?;
        if swept != config.expiring {
            bail!(
                "wrong answer: the sweep deleted {swept} records, but {} had expired",
                config.expiring
            );
        }
        let max_stall = ops
            .iter()
            .filter(|(begun, ended)| *begun < sweep_ended && *ended > sweep_started)
            .map(|(begun, ended)| ended.duration_since(*begun))
            .max()
            .unwrap_or_default();
        let elapsed = sweep_ended.duration_since(sweep_started).as_secs_f64();
        Ok(Sweep {
            records_per_second: swept as f64 / elapsed,
            max_stall,
        })
    })
}
