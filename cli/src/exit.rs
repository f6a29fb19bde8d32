//! Exit codes, and the one error type of the command line tool.
//!
//! `idemdb run` passes COMMAND's own exit status through, so idemdb's own codes sit in
//! 70–79: clear of 0–2 (success and the common failure codes), of 126/127 (the shell's
//! "cannot execute" and "not found") and of 128+N (killed by signal N).

use std::path::PathBuf;
use std::time::Duration;

/// The key was used with a different command line (another fingerprint).
pub const CONFLICT: u8 = 70;
/// Another run holds the key (`--no-wait`, or `--wait` ran out).
pub const IN_PROGRESS: u8 = 71;
/// An earlier run vanished without a result, and `--on-abandoned fail` refuses to rerun.
pub const ABANDONED: u8 = 72;
/// Invalid input: arguments, keys, scopes, durations, import lines.
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
  73     invalid input: arguments, key, scope, duration, import line
  74     store locked: another process held the store longer than --lock-wait (for run,
         only before COMMAND: recording a result waits as long as it takes)
  75     store corrupt: damaged file, or not an idemdb store (also `check` finding damage)
  76     store error: I/O failure, disk full; after COMMAND ran: its result was not recorded
  77     not found: no such key (get, rm), or no store file (operator commands)
  126    COMMAND could not be executed (nothing recorded, the key is free again)
  127    COMMAND not found (nothing recorded, the key is free again)";

/// Everything that ends the tool with one of its own exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or input.
    #[error("{0}")]
    Invalid(String),
    /// An error from the store; its variant picks the exit code.
    #[error("{0}")]
    Store(#[from] idemdb::Error),
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
    #[error("{}: the store is held by another process; gave up after {}", path.display(), humantime::format_duration(*waited))]
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
    /// COMMAND ran, but its result could not be recorded.
    #[error(
        "COMMAND ran ({status}) but its result could not be recorded: {source}; the key stays in flight and counts as abandoned once this process has exited"
    )]
    NotRecorded {
        /// COMMAND's status, for people.
        status: String,
        /// Why recording failed.
        source: Box<CliError>,
    },
}

impl CliError {
    /// The exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => INVALID_INPUT,
            CliError::Store(e) => store_code(e),
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
            CliError::Interrupted(signal) => {
                u8::try_from(128 + (*signal).clamp(1, 127)).unwrap_or(255)
            }
            // Whatever stopped the recording, the key is now in an unfinished state: a
            // store failure, not the cause's own code (a lock timeout here is not "retry
            // later and all is well").
            CliError::NotRecorded { .. } => STORE_ERROR,
        }
    }

    /// A short lower-case name of the kind of error, for `--json`.
    pub fn kind(&self) -> &'static str {
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
            _ if matches!(self, CliError::NotRecorded { .. }) => "not_recorded",
            _ if matches!(self, CliError::Interrupted(_)) => "interrupted",
            _ => "store_error",
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
        | E::InvalidJson { .. } => INVALID_INPUT,
        E::Locked { .. } => LOCKED,
        E::NotAStore { .. }
        | E::EmptyFile { .. }
        | E::NotAFile { .. }
        | E::NewerFormat { .. }
        | E::Corrupt { .. } => CORRUPT,
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
