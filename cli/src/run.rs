//! `idemdb run`: COMMAND at most once per key.
//!
//! The store file is held only for short steps, never while COMMAND runs:
//!
//! 1. open, claim the key (or find its result, or its holder), detach the claim, close;
//! 2. run COMMAND, passing its output through and recording it;
//! 3. open, resume the claim, complete it (or release or abandon it), close.
//!
//! A claim carries its owner (host, pid, process start time), so a later run on this host
//! tells a live holder (wait for it, whatever its lease says) from a dead one (abandoned at
//! once; `--on-abandoned` decides).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use idemdb::{
    Begin, BeginOptions, Claim, ClaimLostReason, ClaimTicket, Fingerprint, KeyPolicy,
    MAX_RESPONSE_LIMIT, RecordState, RecoveryPolicy, Replay, Store, Timestamp, validate_scope,
};
use serde_json::json;

use crate::args::{Global, OnAbandoned, OnFailure, RunArgs, Ttl};
use crate::capture;
use crate::exit::CliError;
use crate::open::{Access, Backoff, open_store, open_store_patiently, sleep_unless_interrupted};
use crate::output::{self, Reporter};
use crate::owner::{self, Liveness, Owner};
use crate::response::{self, RunResult};
use crate::signals::{self, Interrupts};

/// The most output (stdout and stderr together) a run records: the store's default
/// response limit, less the encoding's own bytes.
pub const OUTPUT_BUDGET: usize = DEFAULT_RESPONSE_LIMIT - response::OVERHEAD;

/// The store's response limit this tool opens it with (the library's default, 1 MiB).
const DEFAULT_RESPONSE_LIMIT: usize = 1024 * 1024;

const _: () = assert!(DEFAULT_RESPONSE_LIMIT <= MAX_RESPONSE_LIMIT);

/// What one look at the key found.
enum Step {
    /// This run holds the key now.
    Execute {
        held: Held,
        attempt: u32,
        /// Who held it before, when taking over an abandoned claim.
        previous: Option<Option<Vec<u8>>>,
    },
    /// It ran already.
    Replay(Replay),
    /// Another command line holds the key.
    Conflict(idemdb::Conflict),
    /// An earlier run vanished and the policy is strict.
    Abandoned(idemdb::Abandoned),
    /// Another run holds it; look again after `retry_after` (`None`: after a back-off).
    Busy {
        holder: String,
        retry_after: Option<Duration>,
    },
}

/// Runs `idemdb run`; the exit code on success is COMMAND's (or the replayed) status.
pub fn run(global: &Global, args: RunArgs) -> Result<u8, CliError> {
    let reporter = Reporter {
        quiet: args.quiet,
        json: global.json,
    };
    let scope = text(args.scope.clone(), "scope")?;
    let key = text(args.key.clone(), "key")?;
    validate_scope(&scope).map_err(idemdb::Error::InvalidScope)?;
    KeyPolicy::default()
        .validate(&key)
        .map_err(idemdb::Error::InvalidKey)?;
    let fingerprint = command_fingerprint(&args.command);
    let options = begin_options(&args);
    let interrupts =
        Interrupts::install().map_err(|e| CliError::io("catching SIGINT and SIGTERM", e))?;

    let held = match wait_for_claim(
        global,
        &args,
        &scope,
        &key,
        fingerprint,
        &options,
        &interrupts,
        &reporter,
    )? {
        Claimed::Ticket(held) => held,
        Claimed::Replayed(code) => return Ok(code),
    };
    execute(global, &args, held, &interrupts, &reporter)
}

enum Claimed {
    Ticket(Held),
    Replayed(u8),
}

/// The claim this run holds, detached while COMMAND runs, with what it was when taken, so
/// that a run that finds it gone can tell what happened to the key.
pub struct Held {
    ticket: ClaimTicket,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    lease_until: Timestamp,
    attempt: u32,
}

impl Held {
    /// Lets go of a claim for the time COMMAND runs, keeping what it was. The detach is a
    /// durable mark (a later opening of the store leaves the claim to its owner); if it
    /// cannot be written the claim is abandoned and the error returned.
    fn detach(claim: Claim) -> Result<Held, idemdb::Error> {
        let (created_at, expires_at, lease_until, attempt) = (
            claim.created_at(),
            claim.expires_at(),
            claim.lease_until(),
            claim.attempt(),
        );
        Ok(Held {
            ticket: claim.detach()?,
            created_at,
            expires_at,
            lease_until,
            attempt,
        })
    }
}

/// Looks at the key until this run holds it, or it has a result to replay, or waiting ends.
#[allow(clippy::too_many_arguments)]
fn wait_for_claim(
    global: &Global,
    args: &RunArgs,
    scope: &str,
    key: &str,
    fingerprint: Fingerprint,
    options: &BeginOptions,
    interrupts: &Interrupts,
    reporter: &Reporter,
) -> Result<Claimed, CliError> {
    let wait = if args.no_wait {
        Duration::ZERO
    } else {
        args.wait
    };
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut said_waiting = false;
    loop {
        if let Some(signal) = interrupts.received() {
            return Err(CliError::Interrupted(signal));
        }
        // A look without writing first: a replay, a conflict or a key held by a live run
        // needs nothing more, and works on a store this process cannot write.
        let step = match look(
            global,
            Access::Read,
            scope,
            key,
            fingerprint,
            options,
            interrupts,
            reporter,
        )? {
            Some(step) => step,
            None => look(
                global,
                Access::Create,
                scope,
                key,
                fingerprint,
                options,
                interrupts,
                reporter,
            )?
            .ok_or_else(|| {
                CliError::from(idemdb::Error::Internal {
                    detail: "a writable store answered as a read-only one".to_owned(),
                })
            })?,
        };
        match step {
            Step::Execute {
                held,
                attempt,
                previous,
            } => {
                if let Some(previous) = previous {
                    reporter.warn(
                        "took_over",
                        &format!(
                            "key {key:?}: an earlier run ({}) ended without recording a result; running COMMAND again (attempt {attempt}, --on-abandoned retry)",
                            owner::describe(previous.as_deref())
                        ),
                        json!({ "scope": scope, "key": key, "attempt": attempt }),
                    );
                }
                return Ok(Claimed::Ticket(held));
            }
            Step::Replay(replay) => {
                return replay_result(&replay, scope, key, reporter).map(Claimed::Replayed);
            }
            Step::Conflict(conflict) => {
                return Err(CliError::Conflict {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    state: conflict.state.to_string(),
                    created: output::time(conflict.created_at),
                });
            }
            Step::Abandoned(abandoned) => {
                return Err(CliError::Abandoned {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    holder: owner::describe(abandoned.owner.as_deref()),
                });
            }
            Step::Busy {
                holder,
                retry_after,
            } => {
                let waited = started.elapsed();
                if waited >= wait {
                    let waited = if args.no_wait {
                        "; --no-wait".to_owned()
                    } else {
                        format!("; gave up after waiting {}", output::span(waited))
                    };
                    return Err(CliError::InProgress {
                        scope: scope.to_owned(),
                        key: key.to_owned(),
                        holder,
                        waited,
                    });
                }
                if !said_waiting {
                    said_waiting = true;
                    reporter.note(
                        "waiting",
                        &format!(
                            "key {key:?} is in progress in another run ({holder}); waiting up to {}",
                            output::span(wait)
                        ),
                        json!({ "scope": scope, "key": key }),
                    );
                }
                let mut pause = backoff.next();
                if let Some(after) = retry_after {
                    pause = pause.min(after);
                }
                sleep_unless_interrupted(pause.min(wait - waited), Some(interrupts))?;
            }
        }
    }
}

/// Opens the store as `access` says, takes one look at the key, and closes the store
/// before anything else happens: COMMAND never runs while the file is held. `None`: the
/// look needs a store that can be written (read-only, the key is new or its holder gone;
/// or there is no store yet).
#[allow(clippy::too_many_arguments)]
fn look(
    global: &Global,
    access: Access,
    scope: &str,
    key: &str,
    fingerprint: Fingerprint,
    options: &BeginOptions,
    interrupts: &Interrupts,
    reporter: &Reporter,
) -> Result<Option<Step>, CliError> {
    let store = match open_store(global, access, Some(interrupts)) {
        Ok(store) => store,
        Err(CliError::NotFound(_)) if access == Access::Read => return Ok(None),
        Err(e) => return Err(e),
    };
    let read_only = access == Access::Read;
    let step = claim_step(
        &store,
        read_only,
        scope,
        key,
        fingerprint,
        options,
        reporter,
    );
    let closed = store.close();
    let step = match step {
        Err(CliError::Store(idemdb::Error::ReadOnly { .. })) => Ok(None),
        step => step,
    }?;
    closed?;
    Ok(step)
}

/// One look at the key, with the store open; `None` if the store is read-only and the
/// look must write.
fn claim_step(
    store: &Store,
    read_only: bool,
    scope: &str,
    key: &str,
    fingerprint: Fingerprint,
    options: &BeginOptions,
    reporter: &Reporter,
) -> Result<Option<Step>, CliError> {
    // A claim of this command line whose owner runs on this host is waited for, whatever
    // its lease says (COMMAND may simply run long); one whose owner is gone is declared
    // abandoned at once, and the recovery policy decides below.
    if let Some(record) = store.get(scope, key)?
        && record.fingerprint() == fingerprint
        && let RecordState::InFlight(flight) = record.state()
        && flight.abandoned_at().is_none()
    {
        match owner::liveness(flight.owner()) {
            Liveness::Alive => {
                return Ok(Some(Step::Busy {
                    holder: owner::describe(flight.owner()),
                    retry_after: None,
                }));
            }
            // Declaring it abandoned writes: the writing look says so.
            Liveness::Dead(_) if read_only => return Ok(None),
            Liveness::Dead(reason) => {
                reporter.note(
                    "owner_gone",
                    &format!(
                        "key {key:?}: the run holding it ({}) is gone: {reason}",
                        owner::describe(flight.owner())
                    ),
                    json!({ "scope": scope, "key": key }),
                );
                store.abandon(scope, key, flight.claim())?;
            }
            Liveness::Unknown => {}
        }
    }
    Ok(Some(
        match store.begin_with(scope, key, fingerprint, options)? {
            Begin::Execute(claim) => {
                let attempt = claim.attempt();
                let previous = claim.recovery().map(|r| r.previous_owner.clone());
                Step::Execute {
                    held: Held::detach(claim)?,
                    attempt,
                    previous,
                }
            }
            Begin::Replay(replay) => Step::Replay(replay),
            Begin::Conflict(conflict) => Step::Conflict(conflict),
            Begin::Abandoned(abandoned) => Step::Abandoned(abandoned),
            Begin::InProgress(progress) => {
                let holder = owner::describe(progress.owner.as_deref());
                match owner::liveness(progress.owner.as_deref()) {
                    Liveness::Dead(_) if read_only => return Ok(None),
                    // Claimed between the look above and this begin, by a run that died since.
                    Liveness::Dead(_) => {
                        store.abandon(scope, key, progress.claim)?;
                        Step::Busy {
                            holder,
                            retry_after: Some(Duration::ZERO),
                        }
                    }
                    Liveness::Alive => Step::Busy {
                        holder,
                        retry_after: None,
                    },
                    // Another host: its lease is all there is to go by.
                    Liveness::Unknown => Step::Busy {
                        holder,
                        retry_after: Some(progress.retry_after),
                    },
                }
            }
        },
    ))
}

/// Runs COMMAND under the claim, then records, releases or abandons the claim.
fn execute(
    global: &Global,
    args: &RunArgs,
    held: Held,
    interrupts: &Interrupts,
    reporter: &Reporter,
) -> Result<u8, CliError> {
    if let Some(signal) = interrupts.received() {
        // COMMAND has not started: the key may be freed.
        free_unstarted(global, &held, interrupts, reporter);
        return Err(CliError::Interrupted(signal));
    }
    let ran = match capture::run(&args.command, OUTPUT_BUDGET, interrupts) {
        Ok(ran) => ran,
        Err(source) => {
            // Nothing ran: free the key so a corrected setup can run it.
            free_unstarted(global, &held, interrupts, reporter);
            return Err(CliError::Spawn {
                program: args
                    .command
                    .first()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                source,
            });
        }
    };
    let result = RunResult {
        status: ran.status,
        stdout: ran.stdout,
        stderr: ran.stderr,
    };
    warn_if_cut(&result, reporter, "recorded");
    if ran.output_left_open && interrupts.forwarded().is_none() {
        reporter.warn(
            "output_left_open",
            "COMMAND exited, but a process it started still holds its output open; output after that point was not recorded",
            json!({}),
        );
    }
    let ticket = &held.ticket;
    let key = &ticket.key;
    let code = result.status.exit_code();
    let status = result.status.to_string();

    if let Some(signal) = interrupts.forwarded() {
        // COMMAND was interrupted: whether it did its work is unknown. The key is never
        // freed; abandoned, the next run follows --on-abandoned.
        let outcome = match finish(global, &held, Finish::Abandon, interrupts, reporter) {
            Ok(Ended::Written) => "left abandoned: the next run follows --on-abandoned".to_owned(),
            Ok(Ended::WrittenNotClosed(e)) => format!(
                "left abandoned (but closing the store failed afterwards: {}): the next run follows --on-abandoned",
                naming_store(global, e)
            ),
            Ok(Ended::Lost(what)) => format!("no longer held by this run: {what}"),
            Err(e) => format!(
                "left in flight ({}); the next run finds it abandoned and follows --on-abandoned",
                naming_store(global, e)
            ),
        };
        reporter.warn(
            "interrupted",
            &format!(
                "interrupted by {}: forwarded to COMMAND ({status}); key {key:?} {outcome}",
                signals::name(signal),
            ),
            json!({ "scope": ticket.scope, "key": key, "signal": signal }),
        );
        return Ok(128u8.saturating_add(u8::try_from(signal).unwrap_or(127)));
    }

    if !result.status.success() && args.on_failure == OnFailure::Release {
        let fields = json!({ "scope": ticket.scope, "key": key, "exit_code": code });
        match finish(global, &held, Finish::Release, interrupts, reporter) {
            Ok(Ended::Written) => reporter.note(
                "released",
                &format!(
                    "COMMAND failed ({status}); key {key:?} released (--on-failure release): the next run executes it again"
                ),
                fields,
            ),
            Ok(Ended::WrittenNotClosed(e)) => reporter.warn(
                "not_closed",
                &format!(
                    "COMMAND failed ({status}); key {key:?} released (--on-failure release), but closing the store failed afterwards: {}",
                    naming_store(global, e)
                ),
                fields,
            ),
            Ok(Ended::Lost(what)) => reporter.warn(
                "claim_lost",
                &format!(
                    "COMMAND failed ({status}); key {key:?} was not released by this run: {what}"
                ),
                fields,
            ),
            Err(e) => {
                return Err(CliError::NotRecorded {
                    status,
                    source: Box::new(e),
                });
            }
        }
        return Ok(code);
    }

    match finish(
        global,
        &held,
        Finish::Complete(result.encode()),
        interrupts,
        reporter,
    ) {
        Ok(Ended::Written) => {}
        // The result is durable in the journal: the run succeeded, the store's
        // housekeeping did not.
        Ok(Ended::WrittenNotClosed(e)) => reporter.warn(
            "not_closed",
            &format!(
                "key {key:?}: COMMAND's result ({status}) is recorded, in the store's journal, but closing the store failed afterwards: {}; the next command that opens the store folds the journal in",
                naming_store(global, e)
            ),
            json!({ "scope": ticket.scope, "key": key, "exit_code": code }),
        ),
        Ok(Ended::Lost(what)) => return Err(CliError::ClaimLost { status, what }),
        // Only a signal ends the wait to record: the key stays in flight.
        Err(CliError::Interrupted(signal)) => {
            reporter.warn(
                "interrupted",
                &format!(
                    "interrupted by {} while waiting for the store to record COMMAND's result ({status}); key {key:?} left in flight: it counts as abandoned once this process has exited, and the next run follows --on-abandoned",
                    signals::name(signal),
                ),
                json!({ "scope": ticket.scope, "key": key, "signal": signal }),
            );
            return Err(CliError::Interrupted(signal));
        }
        Err(e) => {
            return Err(CliError::NotRecorded {
                status,
                source: Box::new(e),
            });
        }
    }
    if reporter.json {
        reporter.note(
            "recorded",
            &format!("key {key:?}: recorded COMMAND's result ({status})"),
            json!({ "scope": ticket.scope, "key": key, "exit_code": code }),
        );
    }
    Ok(code)
}

/// Frees a key whose COMMAND never started; a failure is only worth a warning.
fn free_unstarted(global: &Global, held: &Held, interrupts: &Interrupts, reporter: &Reporter) {
    let key = &held.ticket.key;
    let problem = match finish(global, held, Finish::Release, interrupts, reporter) {
        Ok(Ended::Written) => return,
        Ok(Ended::WrittenNotClosed(e)) => format!(
            "key {key:?} freed, but closing the store failed afterwards: {}",
            naming_store(global, e)
        ),
        Ok(Ended::Lost(what)) => format!("key {key:?} not freed by this run: {what}"),
        Err(e) => format!(
            "could not free key {key:?}: {}; the next run finds it abandoned and follows --on-abandoned",
            naming_store(global, e)
        ),
    };
    reporter.warn("not_released", &problem, json!({}));
}

/// An error naming the store file, for a warning (errors that end the command are named in
/// `main`).
fn naming_store(global: &Global, error: CliError) -> CliError {
    match crate::open::store_path(global) {
        Ok((path, _)) => error.naming_store(&path),
        Err(_) => error,
    }
}

/// How a claim ends.
enum Finish {
    Complete(Vec<u8>),
    Release,
    Abandon,
}

/// How ending a claim went, when its change was not refused by a store failure.
enum Ended {
    /// Written, and the store closed cleanly.
    Written,
    /// Written (durable in the journal), but closing the store failed afterwards.
    WrittenNotClosed(CliError),
    /// The claim no longer held the key; what happened to the key instead, for people.
    Lost(String),
}

/// Opens the store, takes the claim back, ends it, and closes the store. The open waits
/// for the lock as long as another process holds the store, saying so every few seconds:
/// once COMMAND has run, giving up would lose its result. Only a signal ends the wait
/// ([`CliError::Interrupted`]; the key stays in flight, and counts as abandoned once this
/// process has exited). Otherwise the error is a failure to open the store or to write the
/// change; a failure to close after it was written is [`Ended::WrittenNotClosed`], which
/// the caller reports as one warning.
fn finish(
    global: &Global,
    held: &Held,
    how: Finish,
    interrupts: &Interrupts,
    reporter: &Reporter,
) -> Result<Ended, CliError> {
    let ticket = &held.ticket;
    let key = &ticket.key;
    let doing = match how {
        Finish::Complete(_) => "record COMMAND's result for",
        Finish::Release => "free",
        Finish::Abandon => "leave abandoned",
    };
    let say = |waited: Duration| {
        reporter.warn(
            "waiting_for_lock",
            &format!(
                "waiting to {doing} key {key:?}: another process has held the store for {}; waiting as long as it takes (a signal stops the wait, leaving the key abandoned)",
                output::span(waited)
            ),
            json!({ "scope": ticket.scope, "key": key, "waited_ms": waited.as_millis() as u64 }),
        );
    };
    let started = Instant::now();
    let store = open_store_patiently(global, Access::Create, Some(interrupts), &say)?;
    finish_on(store, held, how, started.elapsed())
}

/// Ends the claim on an open store, then closes it: a failure to close after the change
/// was written is told apart from a failure to write it. `waited`: how long opening the
/// store waited for its lock after COMMAND (a lost claim may have been lost then too).
fn finish_on(store: Store, held: &Held, how: Finish, waited: Duration) -> Result<Ended, CliError> {
    let ended = end_claim(&store, held, how, waited);
    let closed = store.close();
    match (ended, closed) {
        (Ok(Ended::Written), Err(e)) => Ok(Ended::WrittenNotClosed(e.into())),
        (ended, _) => ended,
    }
}

fn end_claim(store: &Store, held: &Held, how: Finish, waited: Duration) -> Result<Ended, CliError> {
    let claim = match store.resume(&held.ticket) {
        Ok(claim) => claim,
        Err(idemdb::Error::ClaimLost(reason)) => {
            return Ok(Ended::Lost(what_happened(store, held, reason, waited)));
        }
        Err(e) => return Err(e.into()),
    };
    let written = match how {
        // On failure the claim comes back in the error and is abandoned when dropped.
        Finish::Complete(response) => claim.complete(response).map_err(|e| e.error).map(|_| {
            // Keep the file from growing with expired records; the result is recorded
            // already, so a failed sweep is only a missed chance.
            let _ = store.sweep_now();
        }),
        Finish::Release => claim.release(),
        Finish::Abandon => claim.abandon(),
    };
    match written {
        Ok(()) => Ok(Ended::Written),
        Err(idemdb::Error::ClaimLost(reason)) => {
            Ok(Ended::Lost(what_happened(store, held, reason, waited)))
        }
        Err(e) => Err(e.into()),
    }
}

/// What became of a key whose claim this run lost while COMMAND ran (or while this run then
/// waited `waited` for the store's lock), told from the record the key holds now.
fn what_happened(store: &Store, held: &Held, reason: ClaimLostReason, waited: Duration) -> String {
    // A wait shorter than this is no time for another process to have done anything worth
    // naming it.
    const NOTICEABLE: Duration = Duration::from_secs(1);
    let during = if waited >= NOTICEABLE {
        format!(
            "while COMMAND ran or while this run then waited {} for the store's lock",
            output::span(waited)
        )
    } else {
        "while COMMAND ran".to_owned()
    };
    let now = store.now();
    let current = store
        .get(&held.ticket.scope, &held.ticket.key)
        .ok()
        .flatten();
    let lease_ended = held.lease_until <= now;
    let Some(record) = current.filter(|_| reason != ClaimLostReason::Missing) else {
        return match held.expires_at {
            Some(at) if at <= now => format!(
                "the key's retention (--ttl) ended at {} {during}, and its record expired; the key is free: the next run executes COMMAND again",
                output::time(at)
            ),
            _ => format!(
                "the key's record was deleted {during} (`idemdb rm --force`, or an import); the key is free: the next run executes COMMAND again"
            ),
        };
    };
    // A record created after this claim, or one that is not at a later attempt, is a new
    // one: this claim's record was deleted first. A take-over keeps the record's creation
    // time and counts one attempt more.
    let recreated = record.created_at() != held.created_at || record.attempt() <= held.attempt;
    let how_lost = if let Some(at) = held.expires_at.filter(|at| recreated && *at <= now) {
        format!(
            "the key's retention (--ttl) ended at {} {during}, and since then",
            output::time(at)
        )
    } else if recreated {
        format!(
            "the key's record was deleted {during} (`idemdb rm --force`, or an import), and since then"
        )
    } else if lease_ended {
        format!(
            "this run's lease (--lease) ended at {} {during}, and since then",
            output::time(held.lease_until)
        )
    } else {
        format!(
            "this run's claim (attempt {}) was declared abandoned or replaced {during}, and since then",
            held.attempt
        )
    };
    match record.state() {
        RecordState::InFlight(flight) => format!(
            "{how_lost} another run ({}, attempt {}) has claimed the key; that run's result is the one that counts",
            owner::describe(flight.owner()),
            record.attempt()
        ),
        RecordState::Completed(completed) => format!(
            "{how_lost} another run has recorded its result ({}, at {}); retries replay that result",
            RunResult::decode(completed.response()).map_or_else(
                |_| "a response not written by `idemdb run`".to_owned(),
                |r| r.status.to_string()
            ),
            output::time(completed.completed_at())
        ),
    }
}

/// Writes a recorded result as COMMAND wrote it, and returns its exit status.
fn replay_result(
    replay: &Replay,
    scope: &str,
    key: &str,
    reporter: &Reporter,
) -> Result<u8, CliError> {
    let result =
        RunResult::decode(&replay.response).map_err(|reason| CliError::ForeignResponse {
            scope: scope.to_owned(),
            key: key.to_owned(),
            reason,
        })?;
    reporter.note(
        "replayed",
        &format!(
            "key {key:?}: replaying the result recorded at {} ({}); COMMAND not run",
            output::time(replay.completed_at),
            result.status
        ),
        json!({
            "scope": scope,
            "key": key,
            "exit_code": result.status.exit_code(),
            "completed_at": replay.completed_at.as_millis(),
        }),
    );
    warn_if_cut(&result, reporter, "replayed");
    // A reader that went away does not change the outcome: the replay exits with the
    // recorded status, as COMMAND would have.
    let quiet_if_gone = |e: std::io::Error, what: &str| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(CliError::io(format!("writing the recorded {what}"), e))
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&result.stdout.bytes)
        .and_then(|()| stdout.flush())
        .or_else(|e| quiet_if_gone(e, "stdout"))?;
    let mut stderr = std::io::stderr().lock();
    stderr
        .write_all(&result.stderr.bytes)
        .and_then(|()| stderr.flush())
        .or_else(|e| quiet_if_gone(e, "stderr"))?;
    Ok(result.status.exit_code())
}

fn warn_if_cut(result: &RunResult, reporter: &Reporter, what: &str) {
    for (name, stream) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
        if stream.truncated() {
            reporter.warn(
                "output_cut",
                &format!(
                    "COMMAND wrote {} bytes to {name}; only the first {} were {what} (a run records at most {OUTPUT_BUDGET} bytes of output, stdout and stderr together)",
                    stream.total,
                    stream.bytes.len(),
                ),
                json!({
                    "stream": name,
                    "written": stream.total,
                    "recorded": stream.bytes.len(),
                }),
            );
        }
    }
}

/// The request fingerprint of a command line: the program and each argument as framed
/// fields, byte for byte, so `sh -c "a b"` and `sh -c a b` differ.
pub fn command_fingerprint(command: &[OsString]) -> Fingerprint {
    let mut builder = Fingerprint::builder()
        .field("idemdb", "run v1")
        .field("argc", (command.len() as u64).to_le_bytes());
    for (i, word) in command.iter().enumerate() {
        let name = if i == 0 { "program" } else { "arg" };
        builder = builder.field(name, word.as_bytes());
    }
    builder.finish()
}

fn begin_options(args: &RunArgs) -> BeginOptions {
    let options = BeginOptions::new()
        .lease(args.lease)
        // Waiting happens here, by polling with the file closed; the store's own wait
        // only covers holders inside one process.
        .no_wait()
        .recovery(match args.on_abandoned {
            OnAbandoned::Retry => RecoveryPolicy::TakeOver,
            OnAbandoned::Fail => RecoveryPolicy::Strict,
        })
        .owner(Owner::current().encode());
    match args.ttl {
        Ttl::For(ttl) => options.retention(ttl),
        Ttl::Forever => options.forever(),
    }
}

/// A key or scope given on the command line, which must be UTF-8.
pub fn text(value: OsString, what: &str) -> Result<String, CliError> {
    value.into_string().map_err(|raw| {
        CliError::Invalid(format!(
            "invalid {what} {}: it is not valid UTF-8",
            output::printable(raw.as_bytes())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str]) -> Vec<OsString> {
        ws.iter().map(OsString::from).collect()
    }

    /// A store on a clock the test moves, and a claim on `key` held by a run on another
    /// host (whose liveness cannot be checked), detached as `idemdb run` detaches it.
    fn held_elsewhere(key: &str) -> (tempfile::TempDir, Store, idemdb::ManualClock, Held) {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = idemdb::ManualClock::new(Timestamp::from_millis(1_000_000));
        let store = Store::builder()
            .clock(clock.clone())
            .sweep_interval(None)
            .open(dir.path().join("s.idemdb"))
            .expect("open");
        let options = BeginOptions::new()
            .lease(Duration::from_secs(60))
            .retention(Duration::from_secs(3_600))
            .no_wait()
            .recovery(RecoveryPolicy::TakeOver)
            .owner(b"idemdb-run/1 host=elsewhere pid=7".to_vec());
        let Begin::Execute(claim) = store
            .begin_with("default", key, fingerprint(), &options)
            .expect("begin")
        else {
            panic!("a fresh key executes");
        };
        (dir, store, clock, Held::detach(claim).expect("detach"))
    }

    fn fingerprint() -> Fingerprint {
        command_fingerprint(&words(&["true"]))
    }

    fn take_over(store: &Store, key: &str) -> Claim {
        let options = BeginOptions::new()
            .no_wait()
            .recovery(RecoveryPolicy::TakeOver)
            .owner(b"idemdb-run/1 host=other pid=8".to_vec());
        match store
            .begin_with("default", key, fingerprint(), &options)
            .expect("begin")
        {
            Begin::Execute(claim) => claim,
            _ => panic!("the key is taken over"),
        }
    }

    fn lost(store: &Store, held: &Held) -> String {
        match end_claim(
            store,
            held,
            Finish::Complete(b"result".to_vec()),
            Duration::ZERO,
        ) {
            Ok(Ended::Lost(what)) => what,
            Ok(Ended::Written | Ended::WrittenNotClosed(_)) => panic!("the claim was lost"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn a_claim_taken_over_after_its_lease_says_so() {
        let (_dir, store, clock, held) = held_elsewhere("k");
        clock.advance(Duration::from_secs(61));
        let other = take_over(&store, "k");
        let what = lost(&store, &held);
        assert!(what.contains("lease (--lease) ended"), "{what}");
        assert!(
            what.contains("another run (pid 8 on other, attempt 2) has claimed the key"),
            "{what}"
        );
        assert!(!what.contains("deleted"), "{what}");
        // Once the other run has recorded its result, that is what is said.
        other.complete(b"theirs").expect("complete");
        let what = lost(&store, &held);
        assert!(
            what.contains("another run has recorded its result"),
            "{what}"
        );
        store.close().expect("close");
    }

    #[test]
    fn a_claim_whose_record_expired_says_so() {
        let (_dir, store, clock, held) = held_elsewhere("k");
        clock.advance(Duration::from_secs(3_601));
        store.sweep_now().expect("sweep");
        let what = lost(&store, &held);
        assert!(what.contains("retention (--ttl) ended"), "{what}");
        assert!(what.contains("the key is free"), "{what}");
        // Claimed afresh since: still the expiry, not a delete, is what happened.
        let _other = take_over(&store, "k");
        let what = lost(&store, &held);
        assert!(what.contains("retention (--ttl) ended"), "{what}");
        assert!(what.contains("another run (pid 8 on other"), "{what}");
        store.close().expect("close");
    }

    #[test]
    fn a_claim_whose_record_was_deleted_and_completed_again_says_so() {
        let (_dir, store, _clock, held) = held_elsewhere("k");
        assert!(store.delete("default", "k").expect("delete"));
        let other = take_over(&store, "k");
        other.complete(b"theirs").expect("complete");
        let what = lost(&store, &held);
        assert!(
            what.contains("record was deleted while COMMAND ran"),
            "{what}"
        );
        assert!(
            what.contains("another run has recorded its result"),
            "{what}"
        );
        store.close().expect("close");
    }

    /// Whatever fails while a result is recorded, what the run then says matches what a
    /// restart finds: "recorded" (also when only closing failed) means the result is
    /// durable, and a failure to record means it is not there.
    #[test]
    fn what_a_run_says_after_a_failing_disk_matches_what_survives() {
        use idemdb::testing::{CrashMode, Persistence, SimStorage};
        let builder = || Store::builder().sweep_interval(None);
        let mut seen = (0, 0, 0);
        for n in 1..=40 {
            let sim = SimStorage::new();
            let store = sim.open(builder()).expect("open");
            let options = BeginOptions::new().no_wait();
            let Begin::Execute(claim) = store
                .begin_with("default", "k", fingerprint(), &options)
                .expect("begin")
            else {
                panic!("a fresh key executes");
            };
            let held = Held::detach(claim).expect("detach");
            sim.fail_after(n, Persistence::Forever);
            let outcome = finish_on(
                store,
                &held,
                Finish::Complete(b"result".to_vec()),
                Duration::ZERO,
            );
            sim.power_cut(CrashMode::Durable);
            let reopened = sim.open(builder()).expect("reopen");
            let record = reopened.get("default", "k").expect("get");
            let completed = record
                .as_ref()
                .and_then(idemdb::Record::response)
                .is_some_and(|r| r == b"result");
            match outcome {
                Ok(Ended::Written) => {
                    assert!(completed, "n={n}: said recorded, but {record:?}");
                    seen.0 += 1;
                }
                Ok(Ended::WrittenNotClosed(e)) => {
                    assert!(completed, "n={n}: said recorded ({e}), but {record:?}");
                    seen.1 += 1;
                }
                Ok(Ended::Lost(what)) => panic!("n={n}: the claim was not lost: {what}"),
                Err(e) => {
                    assert!(!completed, "n={n}: said not recorded ({e}), but it is");
                    seen.2 += 1;
                }
            }
            reopened.close().expect("close");
        }
        assert!(seen.1 > 0 && seen.2 > 0, "{seen:?}");
    }

    #[test]
    fn fingerprints_frame_every_word() {
        let a = command_fingerprint(&words(&["sh", "-c", "a b"]));
        let b = command_fingerprint(&words(&["sh", "-c", "a", "b"]));
        let c = command_fingerprint(&words(&["sh", "-ca b"]));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, command_fingerprint(&words(&["sh", "-c", "a b"])));
    }
}
