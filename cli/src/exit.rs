//! Exit codes, and the one error type of the command line tool.
//!
//! `idemdb run` passes COMMAND's own exit status through, so idemdb's own codes sit in
//! 70–79: clear of 0–2 (success and the common failure codes), of 126/127 (the shell's
//! "cannot execute" and "not found") and of 128+N (killed by signal N).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::output;

/// The key was used with a different command line (another fingerprint).
pub const CONFLICT: u8 = 70;
/// Another run holds the key (`--no-wait`, or `--wait` ran out).
pub const IN_PROGRESS: u8 = 71;
/// An earlier run vanished without a result, and `--on-abandoned fail` refuses to rerun.
pub const ABANDONED: u8 = 72;
/// Invalid input: arguments, keys, scopes, durations, import lines, an import cut short, a
/// directory given as the store.
pub const INVALID_INPUT: u8 = 73;
/// Another process held the store longer than `--lock-wait`.
pub const LOCKED: u8 = 74;
/// The store file is damaged, or is not an idemdb store (foreign, empty, newer format).
pub const CORRUPT: u8 = 75;
/// Any other store or I/O failure (disk full, permissions, a result that could not be
/// recorded).
pub const STORE_ERROR: u8 = 76;
/// No such key (`get`, `rm`), or no store at the path (operator commands never create one).
pub const NOT_FOUND: u8 = 77;
/// `rm` of a key whose run is still running (without `--force`).
pub const IN_USE: u8 = 78;
/// COMMAND exists but could not be executed (as in a shell). Nothing was recorded.
pub const CANNOT_EXECUTE: u8 = 126;
/// COMMAND was not found (as in a shell). Nothing was recorded.
pub const COMMAND_NOT_FOUND: u8 = 127;

/// The exit-code table shown at the end of `--help`.
pub const HELP_TABLE: &str = "\
Exit status:
  0-255  `run`: COMMAND's own exit status, first run or replay (128+N if it was killed
         by signal N, or if idemdb itself was interrupted by signal N); other commands:
         0 on success
  70     conflict: the key was used with a different command line
  71     in progress: another run holds the key (--no-wait, or --wait ran out)
  72     abandoned: an earlier run vanished without a result (--on-abandoned fail)
  73     invalid input: arguments, key, scope, duration, import line, an import without
         its trailer or with another record count, a directory given as the store
  74     store locked: another process held the store longer than --lock-wait (for run,
         only before COMMAND: recording a result waits as long as it takes)
  75     store corrupt: damaged file, or not an idemdb store (also `check` finding damage)
  76     store error: I/O failure, disk full; after COMMAND ran: its result was not recorded
  77     not found: no such key (get, rm), or no store file (operator commands)
  78     in use: `rm` of a key whose run is still running (--force deletes it anyway)
  126    COMMAND could not be executed (nothing recorded, the key is free again)
  127    COMMAND not found (nothing recorded, the key is free again)";

/// Everything that ends the tool with one of its own exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or input.
    #[error("{0}")]
    Invalid(String),
    /// An error from the store; its variant picks the exit code.
    #[error("{}", store_message(.0))]
    Store(#[from] idemdb::Error),
    /// An error from the store whose own message does not say which file it is about.
    #[error("{}: {}", path.display(), store_message(source))]
    StoreFile {
        /// The store file.
        path: PathBuf,
        /// The error.
        source: idemdb::Error,
    },
    /// The key belongs to a different command line.
    #[error(
        "key {key:?} in scope {scope:?} was used for a different command line ({state}, created {created}); COMMAND not run"
    )]
    Conflict {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// The state of the record holding the key.
        state: String,
        /// When that record was created, for people.
        created: String,
    },
    /// Another run holds the key.
    #[error("key {key:?} in scope {scope:?} is in progress in another run ({holder}){waited}")]
    InProgress {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// Who holds it, for people.
        holder: String,
        /// How long this run waited, as a phrase (may be empty).
        waited: String,
    },
    /// The previous run vanished and the policy refuses to run again.
    #[error(
        "key {key:?} in scope {scope:?}: an earlier run ({holder}) ended without recording a result, so COMMAND may have run; --on-abandoned fail: not running it again (`idemdb rm` the key to allow a new run, or use --on-abandoned retry)"
    )]
    Abandoned {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// Who held it, for people.
        holder: String,
    },
    /// The store stayed locked by another process.
    #[error("{}: the store is held by another process; gave up after {}", path.display(), output::span(*waited))]
    Locked {
        /// The store file.
        path: PathBuf,
        /// How long this process tried.
        waited: Duration,
    },
    /// Nothing under that key, or no store.
    #[error("{0}")]
    NotFound(String),
    /// `check` found damage.
    #[error("{0}")]
    Unhealthy(String),
    /// A stored response that `idemdb run` did not write.
    #[error(
        "key {key:?} in scope {scope:?}: the stored response was not written by `idemdb run` ({reason})"
    )]
    ForeignResponse {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// COMMAND could not be started.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// An I/O failure outside the store (writing output, reading an import file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A signal ended idemdb before COMMAND started.
    #[error("interrupted by {}; COMMAND did not run", crate::signals::name(*.0))]
    Interrupted(i32),
    /// A signal ended an operator command part way.
    #[error("interrupted by {}: {what}", crate::signals::name(*signal))]
    Stopped {
        /// The signal.
        signal: i32,
        /// What was left undone, for people.
        what: String,
    },
    /// COMMAND ran, but writing its result failed: the claim still holds the key, without
    /// a result.
    #[error(
        "COMMAND ran ({status}) but its result could not be recorded: {source}; the key is left without a result: the next run finds it abandoned and follows --on-abandoned"
    )]
    NotRecorded {
        /// COMMAND's status, for people.
        status: String,
        /// Why recording failed.
        source: Box<CliError>,
    },
    /// COMMAND ran, but its claim no longer held the key when the result was to be
    /// recorded (an operator deleted the record, the key expired, another run took it).
    #[error("COMMAND ran ({status}) but its result was not recorded: {what}")]
    ClaimLost {
        /// COMMAND's status, for people.
        status: String,
        /// What happened to the key instead, for people.
        what: String,
    },
    /// `rm` of a key whose run is still running.
    #[error(
        "key {key:?} in scope {scope:?} is held by a run that {why} ({owner}); deleting it would let a second COMMAND start beside that one: not deleted (`idemdb rm --force` deletes it anyway)"
    )]
    InUse {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// Who holds it, for people.
        owner: String,
        /// Why it counts as running, as a phrase.
        why: String,
    },
    /// An import stopped by an error, after writing some records.
    #[error("{source}; {}", imported_phrase(*imported, *kept, *durable))]
    Partial {
        /// Records written.
        imported: u64,
        /// Records read but kept as they were (a live record existed).
        kept: u64,
        /// Whether the store closed cleanly, making the records written durable.
        durable: bool,
        /// What stopped the import.
        source: Box<CliError>,
    },
}

fn imported_phrase(imported: u64, kept: u64, durable: bool) -> String {
    if imported == 0 && kept == 0 {
        return "nothing was imported".to_owned();
    }
    let mut text = format!(
        "{imported} record{} imported",
        if imported == 1 { " was" } else { "s were" }
    );
    if kept > 0 {
        text.push_str(&format!(" and {kept} kept as they were"));
    }
    text.push_str(if durable {
        " before it stopped (they stay in the store)"
    } else {
        " before it stopped, but the store did not close cleanly: they may not all be durable"
    });
    text
}

/// A store error for people: the library's message, with durations as people write them.
fn store_message(error: &idemdb::Error) -> String {
    use idemdb::Error as E;
    match error {
        E::InvalidRetention {
            requested,
            min,
            max,
        } => format!(
            "invalid retention {}: it must be between {} and {} (or `forever`)",
            output::span(*requested),
            output::span(*min),
            output::span(*max)
        ),
        E::InvalidLease { requested, reason } => {
            format!("invalid lease {}: {reason}", output::span(*requested))
        }
        E::NotAFile { path } if path.is_dir() => format!(
            "{}: is a directory, not a store file (the store is a file, e.g. {})",
            path.display(),
            path.join("store.idemdb").display()
        ),
        other => other.to_string(),
    }
}

/// Whether a store error's message leaves out the file it is about.
fn lacks_path(error: &idemdb::Error) -> bool {
    use idemdb::Error as E;
    matches!(
        error,
        E::Io(_) | E::StorageFull(_) | E::Storage(_) | E::Corrupt { .. } | E::Internal { .. }
    )
}

impl CliError {
    /// The exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => INVALID_INPUT,
            CliError::Store(e) | CliError::StoreFile { source: e, .. } => store_code(e),
            CliError::InUse { .. } => IN_USE,
            CliError::Partial { source, .. } => source.code(),
            CliError::Conflict { .. } => CONFLICT,
            CliError::InProgress { .. } => IN_PROGRESS,
            CliError::Abandoned { .. } => ABANDONED,
            CliError::Locked { .. } => LOCKED,
            CliError::NotFound(_) => NOT_FOUND,
            CliError::Unhealthy(_) | CliError::ForeignResponse { .. } => CORRUPT,
            CliError::Spawn { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    COMMAND_NOT_FOUND
                } else {
                    CANNOT_EXECUTE
                }
            }
            CliError::Io { .. } => STORE_ERROR,
            CliError::Interrupted(signal) | CliError::Stopped { signal, .. } => {
                u8::try_from(128 + (*signal).clamp(1, 127)).unwrap_or(255)
            }
            // Whatever stopped the recording, the key is now in an unfinished state: a
            // store failure, not the cause's own code (a lock timeout here is not "retry
            // later and all is well").
            CliError::NotRecorded { .. } | CliError::ClaimLost { .. } => STORE_ERROR,
        }
    }

    /// A short lower-case name of the kind of error, for `--json`.
    pub fn kind(&self) -> &'static str {
        if let CliError::Partial { source, .. } = self {
            return source.kind();
        }
        match self.code() {
            CONFLICT => "conflict",
            IN_PROGRESS => "in_progress",
            ABANDONED => "abandoned",
            INVALID_INPUT => "invalid_input",
            LOCKED => "locked",
            CORRUPT => "corrupt",
            NOT_FOUND => "not_found",
            CANNOT_EXECUTE => "cannot_execute",
            COMMAND_NOT_FOUND => "command_not_found",
            IN_USE => "in_use",
            _ if matches!(
                self,
                CliError::NotRecorded { .. } | CliError::ClaimLost { .. }
            ) =>
            {
                "not_recorded"
            }
            _ if matches!(self, CliError::Interrupted(_) | CliError::Stopped { .. }) => {
                "interrupted"
            }
            _ => "store_error",
        }
    }

    /// The same error, saying which store file it is about where the library's message
    /// does not (an I/O failure or damage, also beneath a failure to record).
    pub fn naming_store(self, path: &Path) -> CliError {
        match self {
            CliError::Store(source) if lacks_path(&source) => CliError::StoreFile {
                path: path.to_owned(),
                source,
            },
            CliError::NotRecorded { status, source } => CliError::NotRecorded {
                status,
                source: Box::new(source.naming_store(path)),
            },
            CliError::Partial {
                imported,
                kept,
                durable,
                source,
            } => CliError::Partial {
                imported,
                kept,
                durable,
                source: Box::new(source.naming_store(path)),
            },
            other => other,
        }
    }

    /// Whether this is a write to a pipe whose reader has gone.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// Fields `--json` adds to this error's line: how far an import got.
    pub fn json_fields(&self) -> Option<serde_json::Value> {
        match self {
            CliError::Partial {
                imported,
                kept,
                durable,
                ..
            } => Some(serde_json::json!({
                "imported": imported,
                "kept": kept,
                "durable": durable,
            })),
            _ => None,
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The exit code for a store error, by its variant.
fn store_code(error: &idemdb::Error) -> u8 {
    use idemdb::Error as E;
    match error {
        E::InvalidKey(_)
        | E::InvalidScope(_)
        | E::InvalidRetention { .. }
        | E::InvalidLease { .. }
        | E::ResponseTooLarge { .. }
        | E::OwnerTooLarge { .. }
        | E::InvalidConfig { .. }
        | E::InvalidJson { .. }
        | E::NotAFile { .. } => INVALID_INPUT,
        E::Locked { .. } => LOCKED,
        E::NotAStore { .. } | E::EmptyFile { .. } | E::NewerFormat { .. } | E::Corrupt { .. } => {
            CORRUPT
        }
        E::Missing { .. } => NOT_FOUND,
        _ => STORE_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_outside_the_usual_ranges() {
        let ours = [
            CONFLICT,
            IN_PROGRESS,
            ABANDONED,
            INVALID_INPUT,
            LOCKED,
            CORRUPT,
            STORE_ERROR,
            NOT_FOUND,
            IN_USE,
        ];
        for (i, a) in ours.iter().enumerate() {
            assert!((70..=79).contains(a));
            for b in &ours[i + 1..] {
                assert_ne!(a, b);
            }
            assert!(
                HELP_TABLE.contains(&format!("  {a}     ")),
                "{a} undocumented"
            );
        }
    }

    #[test]
    fn store_errors_map_by_variant() {
        let path = PathBuf::from("x");
        assert_eq!(
            CliError::from(idemdb::Error::Locked { path: path.clone() }).code(),
            LOCKED
        );
        assert_eq!(
            CliError::from(idemdb::Error::Corrupt {
                detail: String::new()
            })
            .code(),
            CORRUPT
        );
        assert_eq!(
            CliError::from(idemdb::Error::Missing { path }).code(),
            NOT_FOUND
        );
        assert_eq!(CliError::from(idemdb::Error::Closed).code(), STORE_ERROR);
    }
}
