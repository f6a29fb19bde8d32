//! Finding the store file and opening it, retrying while another process holds it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use idemdb::{Durability, Store};

use crate::args::Global;
use crate::exit::CliError;
use crate::output;
use crate::progress;
use crate::signals::Interrupts;

/// The file name of the default store, inside the state directory.
const DEFAULT_FILE: &str = "store.idemdb";

/// Where the store lives: `--db`, else `IDEMDB_PATH` (clap reads both into `db`), else
/// `$XDG_STATE_HOME/idemdb/store.idemdb`, else `$HOME/.local/state/idemdb/store.idemdb`.
/// The flag says whether it is the default location (whose directory may be created).
pub fn store_path(global: &Global) -> Result<(PathBuf, bool), CliError> {
    if let Some(path) = &global.db {
        if path.as_os_str().is_empty() {
            return Err(CliError::Invalid("the store path is empty".to_owned()));
        }
        return Ok((path.clone(), false));
    }
    let state_home = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local").join("state"))
        })
        .ok_or_else(|| {
            CliError::Invalid(
                "no store given: pass --db FILE or set IDEMDB_PATH (neither XDG_STATE_HOME nor HOME is set for the default)"
                    .to_owned(),
            )
        })?;
    Ok((state_home.join("idemdb").join(DEFAULT_FILE), true))
}

/// How a command uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `run` and `import`: a missing store is created.
    Create,
    /// Operator commands: a missing store is an error, never created.
    Existing,
    /// `import`: created if missing, and commits are synced once at the end (a crash loses
    /// the import, which is then run again, never half of an acknowledged run).
    Bulk,
    /// Reading commands (`get`, `ls`, `stats`, `export`, a replay): opened read-only under
    /// a shared lock, never created, never written.
    Read,
}

/// Opens the store, waiting while another process holds it for up to `global.lock_wait`.
/// With `interrupts`, a signal ends the waiting.
pub fn open_store(
    global: &Global,
    access: Access,
    interrupts: Option<&Interrupts>,
) -> Result<Store, CliError> {
    let path = prepare_path(global, access)?;
    let show = Show {
        json: global.json,
        say: &|_| {},
    };
    match open_waiting(&path, access, Some(global.lock_wait), interrupts, &show) {
        // A store a crash left unrepaired (or of an older format) is readable only after
        // a writing open has repaired it: the one case where reading writes.
        Err(CliError::Store(idemdb::Error::ReadOnly { .. })) if access == Access::Read => {
            open_waiting(
                &path,
                Access::Existing,
                Some(global.lock_wait),
                interrupts,
                &show,
            )
        }
        opened => opened,
    }
}

/// Opens the store, waiting for as long as another process holds it: only a signal (with
/// `interrupts`) ends the wait. `say` is called every [`NOTE_EVERY`] of waiting with the
/// time waited so far.
pub fn open_store_patiently(
    global: &Global,
    access: Access,
    interrupts: Option<&Interrupts>,
    say: &dyn Fn(Duration),
) -> Result<Store, CliError> {
    let path = prepare_path(global, access)?;
    let show = Show {
        json: global.json,
        say,
    };
    open_waiting(&path, access, None, interrupts, &show)
}

/// What a wait for the lock shows while it lasts.
struct Show<'a> {
    /// `--json`: no spinner (there is none off a terminal either).
    json: bool,
    /// Called every [`NOTE_EVERY`] of waiting with the time waited so far.
    say: &'a dyn Fn(Duration),
}

/// How often a long wait for the lock says so.
pub const NOTE_EVERY: Duration = Duration::from_secs(5);

/// How often a wait looks for a signal or its deadline.
const WAIT_SLICE: Duration = Duration::from_millis(50);

fn prepare_path(global: &Global, access: Access) -> Result<PathBuf, CliError> {
    let (path, is_default) = store_path(global)?;
    if is_default
        && matches!(access, Access::Create | Access::Bulk)
        && let Some(dir) = path.parent()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::io(format!("creating the store directory {}", dir.display()), e)
        })?;
    }
    Ok(path)
}

/// Opens the store at `path`; while another process holds it, a thread waits for the lock
/// in the kernel (which hands it over when it is released: no polling, no back-off to
/// lose the race with), and this thread watches for a signal, the deadline `limit`
/// (`None`: none) and the time to call `show.say`, while a spinner on a terminal says
/// what it waits for.
fn open_waiting(
    path: &Path,
    access: Access,
    limit: Option<Duration>,
    interrupts: Option<&Interrupts>,
    show: &Show,
) -> Result<Store, CliError> {
    match builder(access).open(path) {
        Ok(store) => return Ok(store),
        Err(idemdb::Error::Locked { .. }) => {}
        Err(e) => return Err(open_error(e)),
    }
    let started = Instant::now();
    // Cleared from the terminal however the wait ends.
    let spinner = progress::spinner(show.json, &waiting_message(path, limit));
    let (sender, answer) = std::sync::mpsc::channel();
    let blocking = builder(access).block_on_lock(true);
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("idemdb-lock-wait".to_owned())
        .spawn(move || {
            let opened = blocking.open(&owned);
            // Nobody waits any more (a deadline or a signal ended the wait): let go at once.
            if let Err(std::sync::mpsc::SendError(Ok(store))) = sender.send(opened) {
                let _ = store.close();
            }
        })
        .map_err(|e| CliError::io("starting the thread that waits for the store's lock", e))?;
    let mut next_note = NOTE_EVERY;
    loop {
        match answer.recv_timeout(WAIT_SLICE) {
            Ok(opened) => return opened.map_err(open_error),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CliError::io(
                    format!("waiting for the lock of {}", path.display()),
                    std::io::Error::other("the waiting thread ended without an answer"),
                ));
            }
        }
        if let Some(signal) = interrupts.and_then(Interrupts::received) {
            return Err(CliError::Interrupted(signal));
        }
        let waited = started.elapsed();
        if let Some(limit) = limit
            && waited >= limit
        {
            return Err(CliError::Locked {
                path: path.to_owned(),
                waited,
            });
        }
        if waited >= next_note {
            spinner.suspend(|| (show.say)(waited));
            next_note += NOTE_EVERY;
        }
    }
}

fn open_error(e: idemdb::Error) -> CliError {
    match e {
        idemdb::Error::Missing { path } => missing(&path),
        e => e.into(),
    }
}

/// Runs an offline maintenance step on the store file (which needs the file to itself),
/// retrying with back-off while another process holds it, for up to `global.lock_wait`
/// (the step opens the file itself, so it cannot wait on the lock as [`open_store`] does).
/// `doing` names the step for the progress shown on a terminal (e.g. `checking`).
pub fn with_file<T>(
    global: &Global,
    doing: &str,
    step: impl Fn(&Path) -> idemdb::Result<T>,
) -> Result<(PathBuf, T), CliError> {
    let (path, _) = store_path(global)?;
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
    let working = format!("{doing} {}", path.display());
    let spinner = progress::spinner(global.json, &working);
    loop {
        match step(&path) {
            Ok(value) => return Ok((path, value)),
            Err(idemdb::Error::Locked { .. }) => {
                let waited = started.elapsed();
                if waited >= global.lock_wait {
                    return Err(CliError::Locked { path, waited });
                }
                spinner.set_message(waiting_message(&path, Some(global.lock_wait)));
                std::thread::sleep(backoff.next().min(global.lock_wait - waited));
                spinner.set_message(working.clone());
            }
            Err(idemdb::Error::Missing { path }) => return Err(missing(&path)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a wait for the lock of `path` says on a terminal; `limit`: when it gives up
/// (`None`: never).
fn waiting_message(path: &Path, limit: Option<Duration>) -> String {
    let until = match limit {
        Some(limit) => format!("giving up after {}", output::span(limit)),
        None => "waiting as long as it takes".to_owned(),
    };
    format!(
        "waiting for {}: another process holds it ({until})",
        path.display()
    )
}

fn missing(path: &Path) -> CliError {
    CliError::NotFound(format!(
        "{}: no store exists at this path (`idemdb run` or `idemdb import` creates one)",
        path.display()
    ))
}

fn builder(access: Access) -> idemdb::StoreBuilder {
    // A command-line process is short-lived: no background sweeper (`run` sweeps when it
    // records a result, `sweep` on request). Expired records count as absent regardless.
    let builder = Store::builder().sweep_interval(None);
    match access {
        // One operation per process: the database file is written only when the journal
        // asks for a fold (see `StoreBuilder::short_process`).
        Access::Create => builder.short_process(true),
        Access::Existing => builder.create_if_missing(false).short_process(true),
        Access::Bulk => builder.durability(Durability::None),
        Access::Read => builder.read_only(true),
    }
}

/// Sleeps for `pause`, in slices, returning early with [`CliError::Interrupted`] when a
/// signal arrives.
pub fn sleep_unless_interrupted(
    pause: Duration,
    interrupts: Option<&Interrupts>,
) -> Result<(), CliError> {
    let until = Instant::now() + pause;
    loop {
        if let Some(signal) = interrupts.and_then(Interrupts::received) {
            return Err(CliError::Interrupted(signal));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Exponential back-off with jitter, so processes that collide once do not keep colliding.
pub struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Backoff {
            next: first,
            max,
            seed: u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1,
        }
    }

    /// The next pause: the current step plus up to half of it at random.
    pub fn next(&mut self) -> Duration {
        // xorshift: cheap, and different in every process.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next;
        let half = u64::try_from(step.as_micros() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        let jitter = Duration::from_micros(self.seed % half);
        self.next = (step * 2).min(self.max);
        step + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let first = b.next();
        assert!(first >= Duration::from_millis(10) && first < Duration::from_millis(15));
        for _ in 0..10 {
            b.next();
        }
        let late = b.next();
        assert!(late >= Duration::from_millis(100) && late < Duration::from_millis(150));
    }
}
