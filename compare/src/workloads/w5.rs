//! W5: many threads race for one fresh key per round, many rounds. Exactly one claim per
//! round may win (it then completes the key); any other count is a violation of
//! at-most-once and fails the run. A loser that is handed the stored response (idemdb's
//! in-process waiters are) must get the winner's bytes. Result: microseconds per
//! contended key (a round: the race, the winner's completion, every loser's answer).

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};

use super::{Config, now_ms, stream};
use crate::keys::{KeyStream, stream_id};
use crate::system::{Claimed, Session, System};

/// Microseconds per contended key.
pub fn run<S: System>(system: &S, config: &Config, run: u32) -> Result<f64> {
    let threads = config.w5_threads;
    let keys = KeyStream::new(config.seed, stream_id(run, stream::W5, 0));
    let sessions = (0..threads)
        .map(|_| system.session(threads))
        .collect::<Result<Vec<_>>>()?;
    // The coordinator (this thread) is one more party at each barrier.
    let barrier = Barrier::new(threads + 1);
    let round = AtomicU64::new(0);
    let winners = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = sessions
            .into_iter()
            .map(|mut session| {
                let (barrier, round, winners, stop, failed) =
                    (&barrier, &round, &winners, &stop, &failed);
                scope.spawn(move || -> Result<()> {
                    let mut first_error = None;
                    loop {
                        barrier.wait();
                        if stop.load(Ordering::SeqCst) {
                            return first_error.map_or(Ok(()), Err);
                        }
                        if first_error.is_none() {
                            let request = keys.request(round.load(Ordering::SeqCst));
                            if let Err(e) = race(&mut session, &request, winners) {
                                failed.store(true, Ordering::SeqCst);
                                first_error = Some(e);
                            }
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let mut rounds = 0u64;
        let mut violation = None;
        loop {
            let done = started.elapsed() >= config.duration
                || rounds >= config.w5_max_rounds
                || failed.load(Ordering::SeqCst)
                || violation.is_some()
                || crate::check_interrupted().is_err();
            if done {
                stop.store(true, Ordering::SeqCst);
                barrier.wait();
                break;
            }
            round.store(rounds, Ordering::SeqCst);
            winners.store(0, Ordering::SeqCst);
            barrier.wait();
            barrier.wait();
            let won = winners.load(Ordering::SeqCst);
            if won != 1 && !failed.load(Ordering::SeqCst) {
                violation = Some((rounds, won));
            }
            rounds += 1;
        }
        let elapsed = started.elapsed();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow!("a W5 thread panicked"))??;
        }
        crate::check_interrupted()?;
        if let Some((round, won)) = violation {
            bail!(
                "VIOLATION: {won} of {threads} racing claims won the key of round {round} (exactly one must)"
            );
        }
        if rounds == 0 {
            bail!("W5 ran no round");
        }
        Ok(elapsed.as_secs_f64() * 1e6 / rounds as f64)
    })
}

/// One thread's part of a round: claim; the winner completes.
fn race<S: Session>(
    session: &mut S,
    request: &crate::keys::Request,
    winners: &AtomicUsize,
) -> Result<()> {
    match session.claim(&request.key, &request.fp, now_ms())? {
        Claimed::Won(claim) => {
            winners.fetch_add(1, Ordering::SeqCst);
            session.complete(claim, &request.response)
        }
        Claimed::Taken {
            replayed: Some(bytes),
        } if bytes != request.response => bail!(
            "wrong answer: a losing claim of {} was replayed other bytes than the winner stored",
            request.key
        ),
        Claimed::Taken { .. } => Ok(()),
    }
}
