//! The command line, as clap parses it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::HELP_TABLE;

const ABOUT: &str = "Durable \"at most once\" for scripts, cron jobs and operators.";

const LONG_ABOUT: &str = "\
Durable \"at most once\" for scripts, cron jobs and operators.

`idemdb run --key KEY -- COMMAND` runs COMMAND at most once per key within the retention
window (--ttl) and records its exit status, stdout and stderr. A retry with the same key
does not run COMMAND again: it writes the recorded output and exits with the recorded
status. The same key with a different command line is a conflict.

The other commands look inside a store: get, ls, rm, stats, sweep, compact, check, export
and import.

The store file is --db, else $IDEMDB_PATH, else $XDG_STATE_HOME/idemdb/store.idemdb, else
~/.local/state/idemdb/store.idemdb.";

/// The `idemdb` command line.
#[derive(Debug, Parser)]
#[command(
    name = "idemdb",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = HELP_TABLE,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The store file [default: $XDG_STATE_HOME/idemdb/store.idemdb, else
    /// ~/.local/state/idemdb/store.idemdb]
    #[arg(long, global = true, env = "IDEMDB_PATH", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Machine-readable output: JSON on stdout, and idemdb's own messages and errors as
    /// JSON lines on stderr.
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to wait while another process holds the store file (`run` waits this long
    /// only before COMMAND: once it has run, recording its result waits as long as it takes).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lock_wait: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND at most once per key; replay its recorded result to every retry.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Show the record of one key.
    Get(KeyArgs),
    /// List records: stuck ones (abandoned, or in flight with a dead owner) first, then in
    /// flight, completed and expired, oldest first; at most 100 unless --limit or --all.
    /// With --json: one JSON object a line.
    Ls(LsArgs),
    /// Delete the record of one key (e.g. after a bug, or to let an abandoned key run
    /// again). A key whose run is still running is not deleted (exit status 78) unless
    /// --force.
    Rm(RmArgs),
    /// Counts by state, stored bytes, the oldest in-flight key, file size, sweeping.
    Stats,
    /// Delete every expired record now.
    Sweep,
    /// Give the space of deleted records back to the file system (needs the store to
    /// itself).
    Compact,
    /// Verify the store: page checksums, every record, the expiry index.
    Check,
    /// Write records as JSON lines (a header line, one record a line, then a trailer line
    /// with the record count).
    Export(ExportArgs),
    /// Read records from an export (JSON lines); an export without its trailer, or with
    /// another record count, fails with exit status 73 after what it imported.
    Import(ImportArgs),
}

const RUN_AFTER_HELP: &str = "\
COMMAND is identified by its command line: the program and every argument, byte for byte.
It runs with idemdb's stdin, environment and working directory; its stdout and stderr pass
through live and are recorded (up to 1 MiB together; a note on stderr says when output was
cut). A replay writes the recorded stdout, then the recorded stderr.

The store file is not held while COMMAND runs: other runs and operator commands can use it.
A second run of the same key waits for the first (--wait) and then replays its result.

SIGINT, SIGTERM and SIGHUP are forwarded to COMMAND; the key is then left abandoned
(its outcome is unknown), never freed, and the next run follows --on-abandoned. A run killed
with SIGKILL is recognised as gone by the next run on this host at once (its pid no longer
runs, or runs another process). COMMAND itself is not killed with it: prefer --on-abandoned
fail where a second COMMAND must never overlap a leftover first one.

Exit status: COMMAND's own (first run or replay; 128+N if killed by signal N), or one of
idemdb's codes 70-79 (see `idemdb --help`).

Example (cron): send the daily report once a day, even if cron retries or runs overlap:
  0 * * * * idemdb run --key report-$(date +\\%F) --ttl 30d -- /usr/local/bin/send-report";

/// `idemdb run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The idempotency key: any non-empty UTF-8 text without control characters, at most
    /// 255 bytes.
    #[arg(long, value_name = "KEY")]
    pub key: OsString,

    /// A namespace for keys: the same key in two scopes is two unrelated records.
    #[arg(long, value_name = "SCOPE", default_value = "default")]
    pub scope: OsString,

    /// How long the result counts, from the first run: e.g. 30s, 15m, 24h, 30d (1s to
    /// 365d), or `forever`.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Ttl,

    /// How long to wait for another run of the same key before giving up with exit
    /// status 71.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub wait: Duration,

    /// Do not wait for another run of the same key: exit with status 71 at once.
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,

    /// What a non-zero exit of COMMAND does: `record` it (retries replay the failure; the
    /// safe default, since a failing COMMAND may have done part of its work) or `release`
    /// the key (the next run executes COMMAND again; for commands that fail without side
    /// effects).
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = OnFailure::Record)]
    pub on_failure: OnFailure,

    /// What a run does when an earlier run of the key ended without a result (killed,
    /// crashed, interrupted), so COMMAND may or may not have run: `fail` with status 72
    /// (strict at most once; the default) or `retry` it (at least once after a crash).
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = OnAbandoned::Fail)]
    pub on_abandoned: OnAbandoned,

    /// How long a claim holds the key when its owner's liveness cannot be checked (a run
    /// on another host sharing the file). On this host a live run is always waited for and
    /// a dead one detected at once, whatever the lease.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub lease: Duration,

    /// No notes on stderr about replaying or taking over (warnings and errors still appear).
    #[arg(long, short)]
    pub quiet: bool,

    /// The command to run, and its arguments (put `--` before it).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// How long a record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// For this long from the first run.
    For(Duration),
    /// Never expires.
    Forever,
}

/// What a failed COMMAND does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailure {
    /// Record the failure: retries replay it.
    Record,
    /// Free the key: the next run executes COMMAND again.
    Release,
}

/// What a run does with an abandoned key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnAbandoned {
    /// Run COMMAND again.
    Retry,
    /// Exit with status 72 without running COMMAND.
    Fail,
}

/// A scope and a key.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The key.
    #[arg(value_name = "KEY")]
    pub key: OsString,

    /// The key's scope.
    #[arg(long, value_name = "SCOPE", default_value = "default")]
    pub scope: OsString,
}

/// `idemdb rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The key and its scope.
    #[command(flatten)]
    pub key: KeyArgs,

    /// Delete the record even while the run holding it still runs (that run then cannot
    /// record its result, and a new run may start COMMAND beside it).
    #[arg(long)]
    pub force: bool,
}

/// `idemdb ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only this scope.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<OsString>,

    /// Only these states (repeat or separate with commas). `stuck`: abandoned, or in flight
    /// with an owner that is gone. Expired records are listed only when asked for.
    #[arg(long, value_enum, value_name = "STATE", value_delimiter = ',')]
    pub state: Vec<StateFilter>,

    /// Only records created at least this long ago.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,

    /// Only records created at most this long ago.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub newer_than: Option<Duration>,

    /// Show at most this many records (the first in listing order); stderr says how many
    /// more there are.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,

    /// Show every record, however many.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

/// A state `ls` can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// In flight with a live lease.
    #[value(name = "in_flight")]
    InFlight,
    /// In flight, lease ended or explicitly abandoned.
    Abandoned,
    /// Completed.
    Completed,
    /// Expired, not yet swept.
    Expired,
    /// Abandoned, or in flight with an owner process that is gone.
    Stuck,
}

/// `idemdb export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this scope.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<OsString>,

    /// Also export expired records the sweeper has not deleted yet.
    #[arg(long)]
    pub include_expired: bool,

    /// Write to this file instead of stdout (through a temporary file beside it, renamed
    /// into place once complete).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Read a damaged store without opening it: write every record that can still be
    /// decoded from the store file and its journal (expired ones included), and say on
    /// stderr what was skipped.
    #[arg(long)]
    pub salvage: bool,
}

/// `idemdb import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export to read (`-` or nothing: stdin).
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Replace records that exist (by default a live record is kept).
    #[arg(long)]
    pub overwrite: bool,

    /// Accept an export that ends without its trailer line: a format-1 export (written
    /// before exports had one), or one you know is whole. Without a trailer, an export cut
    /// short cannot be told from a whole one. A trailer that is there is still checked.
    #[arg(long)]
    pub no_trailer: bool,
}

/// Parses a duration such as `30s`, `15m`, `24h`, `30d` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (write a number and a unit, e.g. 30s, 15m, 24h or 30d)"))
}

/// Parses a retention: a duration of at least one second, or `forever`.
pub fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.trim().eq_ignore_ascii_case("forever") {
        return Ok(Ttl::Forever);
    }
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err("a retention must be at least 1s (or `forever`)".to_owned());
    }
    Ok(Ttl::For(duration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_people_write() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
        assert_eq!(parse_ttl("forever"), Ok(Ttl::Forever));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("500ms").is_err());
    }
}
