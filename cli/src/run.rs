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
    Begin, BeginOptions, ClaimTicket, Fingerprint, KeyPolicy, MAX_RESPONSE_LIMIT, RecordState,
    RecoveryPolicy, Replay, Store, validate_scope,
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
        ticket: ClaimTicket,
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

    let ticket = match wait_for_claim(
        global,
        &args,
        &scope,
        &key,
        fingerprint,
        &options,
        &interrupts,
        &reporter,
    )? {
        Claimed::Ticket(ticket) => ticket,
        Claimed::Replayed(code) => return Ok(code),
    };
    execute(global, &args, ticket, &interrupts, &reporter)
}

enum Claimed {
    Ticket(ClaimTicket),
    Replayed(u8),
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
                ticket,
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
                return Ok(Claimed::Ticket(ticket));
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
                    ticket: claim.detach(),
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
    ticket: ClaimTicket,
    interrupts: &Interrupts,
    reporter: &Reporter,
) -> Result<u8, CliError> {
    if let Some(signal) = interrupts.received() {
        // COMMAND has not started: the key may be freed.
        if let Err(e) = finish(global, &ticket, Finish::Release, interrupts, reporter) {
            reporter.warn(
                "not_released",
                &format!("could not free key {:?}: {e}", ticket.key),
                json!({}),
            );
        }
        return Err(CliError::Interrupted(signal));
    }
    let ran = match capture::run(&args.command, OUTPUT_BUDGET, interrupts) {
        Ok(ran) => ran,
        Err(source) => {
            // Nothing ran: free the key so a corrected setup can run it.
            if let Err(e) = finish(global, &ticket, Finish::Release, interrupts, reporter) {
                reporter.warn(
                    "not_released",
                    &format!("could not free key {:?}: {e}", ticket.key),
                    json!({}),
                );
            }
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
    let key = &ticket.key;
    let code = result.status.exit_code();

    if let Some(signal) = interrupts.forwarded() {
        // COMMAND was interrupted: whether it did its work is unknown. The key is never
        // freed; abandoned, the next run follows --on-abandoned.
        let outcome = match finish(global, &ticket, Finish::Abandon, interrupts, reporter) {
            Ok(()) => "left abandoned".to_owned(),
            Err(e) => {
                format!("left in flight ({e}); it counts as abandoned once this process has exited")
            }
        };
        reporter.warn(
            "interrupted",
            &format!(
                "interrupted by {}: forwarded to COMMAND ({}); key {key:?} {outcome}: the next run follows --on-abandoned",
                signals::name(signal),
                result.status
            ),
            json!({ "scope": ticket.scope, "key": key, "signal": signal }),
        );
        return Ok(128u8.saturating_add(u8::try_from(signal).unwrap_or(127)));
    }

    if !result.status.success() && args.on_failure == OnFailure::Release {
        finish(global, &ticket, Finish::Release, interrupts, reporter).map_err(|e| {
            CliError::NotRecorded {
                status: result.status.to_string(),
                source: Box::new(e),
            }
        })?;
        reporter.note(
            "released",
            &format!(
                "COMMAND failed ({}); key {key:?} released (--on-failure release): the next run executes it again",
                result.status
            ),
            json!({ "scope": ticket.scope, "key": key, "exit_code": code }),
        );
        return Ok(code);
    }

    match finish(
        global,
        &ticket,
        Finish::Complete(result.encode()),
        interrupts,
        reporter,
    ) {
        Ok(()) => {}
        Err(CliError::Interrupted(signal)) => {
            reporter.warn(
                "interrupted",
                &format!(
                    "interrupted by {} while waiting for the store to record COMMAND's result ({}); key {key:?} left in flight: it counts as abandoned once this process has exited, and the next run follows --on-abandoned",
                    signals::name(signal),
                    result.status
                ),
                json!({ "scope": ticket.scope, "key": key, "signal": signal }),
            );
            return Err(CliError::Interrupted(signal));
        }
        Err(e) => {
            return Err(CliError::NotRecorded {
                status: result.status.to_string(),
                source: Box::new(e),
            });
        }
    }
    if reporter.json {
        reporter.note(
            "recorded",
            &format!("key {key:?}: recorded COMMAND's result ({})", result.status),
            json!({ "scope": ticket.scope, "key": key, "exit_code": code }),
        );
    }
    Ok(code)
}

/// How a claim ends.
enum Finish {
    Complete(Vec<u8>),
    Release,
    Abandon,
}

/// Opens the store, takes the claim back, ends it, and closes the store. The open waits
/// for the lock as long as another process holds the store, saying so every few seconds:
/// once COMMAND has run, giving up would lose its result. Only a signal ends the wait
/// ([`CliError::Interrupted`]; the key stays in flight, and counts as abandoned once this
/// process has exited). A failure to close after the claim ended is a warning: what was
/// written is in the journal, and the next open recovers it.
fn finish(
    global: &Global,
    ticket: &ClaimTicket,
    how: Finish,
    interrupts: &Interrupts,
    reporter: &Reporter,
) -> Result<(), CliError> {
    let key = &ticket.key;
    let (doing, done) = match how {
        Finish::Complete(_) => ("record COMMAND's result for", "the result is recorded"),
        Finish::Release => ("free", "the key is free"),
        Finish::Abandon => ("leave abandoned", "the key is left abandoned"),
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
    let store = open_store_patiently(global, Access::Create, Some(interrupts), &say)?;
    let ended = (|| -> Result<(), CliError> {
        let claim = store.resume(ticket)?;
        match how {
            Finish::Complete(response) => {
                claim.complete(response).map_err(|e| e.error)?;
                // Keep the file from growing with expired records; the result is recorded
                // already, so a failed sweep is only a missed chance.
                let _ = store.sweep_now();
            }
            Finish::Release => claim.release()?,
            Finish::Abandon => claim.abandon()?,
        }
        Ok(())
    })();
    let closed = store.close();
    ended?;
    if let Err(e) = closed {
        reporter.warn(
            "close_failed",
            &format!(
                "key {key:?}: {done}, but closing the store failed: {e}; the journal holds what was written, and the next open recovers it"
            ),
            json!({ "scope": ticket.scope, "key": key, "error": e.to_string() }),
        );
    }
    Ok(())
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
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&result.stdout.bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::io("writing the recorded stdout", e))?;
    let mut stderr = std::io::stderr().lock();
    stderr
        .write_all(&result.stderr.bytes)
        .and_then(|()| stderr.flush())
        .map_err(|e| CliError::io("writing the recorded stderr", e))?;
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
