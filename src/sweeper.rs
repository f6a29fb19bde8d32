//! The background sweeper: deletes expired records through the expiry index, in bounded
//! batches, so its cost follows what expired rather than the size of the store.
//!
//! Each batch is one durable write of the engine (a journal frame of tombstones): a record
//! is deleted only if it is still expired *and* still indexed at the instant found, and a
//! key with a newer, not yet folded change is decided against that change, so a key
//! claimed anew is never deleted. The batches of one pass resume where the last stopped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender, TryRecvError};

use crate::error::Result;
use crate::stats::{Counters, Stats};
use crate::storage::{Engine, SweepPass};
use crate::telemetry;
use crate::time::{Clock, Timestamp};

/// The sweeper thread; stopping it (or dropping it) ends the thread.
pub(crate) struct Sweeper {
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

impl Sweeper {
    pub(crate) fn start(
        engine: Arc<dyn Engine>,
        clock: Arc<dyn Clock>,
        interval: Duration,
        batch: usize,
        counters: Arc<Counters>,
    ) -> std::io::Result<Sweeper> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("idemdb-sweeper".to_owned())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = clock.now();
                    let mut from = None;
                    loop {
                        match sweep_once(engine.as_ref(), now, batch, from.as_deref(), &counters)
                        {
                            // A full batch: more may be due right away.
                            Ok(SweepPass {
                                resume: Some(resume),
                                ..
                            }) => {
                                if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                                    return;
                                }
                                from = Some(resume);
                            }
                            Ok(_) => break,
                            Err(error) => {
                                tracing::warn!(%error, "idemdb sweep failed; retrying next interval");
                                break;
                            }
                        }
                    }
                    // The sweeper's interval is the store's heartbeat for its metrics.
                    let stats = Stats::collect(&counters, engine.stats(), 0);
                    telemetry::publish(&stats, None);
                }
            })?;
        Ok(Sweeper { stop, handle })
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.handle.join().is_err() {
            tracing::error!("the idemdb sweeper thread panicked");
        }
    }
}

/// Examines up to `batch` due index entries from `from` and deletes the expired records
/// among them.
pub(crate) fn sweep_once(
    engine: &dyn Engine,
    now: Timestamp,
    batch: usize,
    from: Option<&[u8]>,
    counters: &Counters,
) -> Result<SweepPass> {
    let pass = engine.sweep(now, batch, from)?;
    if pass.found > 0 {
        counters
            .sweeps
            .fetch_add(pass.batches.max(1), Ordering::Relaxed);
        counters
            .expired_swept
            .fetch_add(pass.deleted, Ordering::Relaxed);
    }
    Ok(pass)
}
