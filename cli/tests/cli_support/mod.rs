//! Helpers for the tests that run the real `idemdb` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long a test waits for something another process does. Generous: the machine may be
/// loaded, and a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// idemdb's own exit codes (see `idemdb --help`).
pub const CONFLICT: i32 = 70;
pub const IN_PROGRESS: i32 = 71;
pub const ABANDONED: i32 = 72;
pub const INVALID_INPUT: i32 = 73;
pub const LOCKED: i32 = 74;
pub const CORRUPT: i32 = 75;
pub const NOT_FOUND: i32 = 77;

/// The binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_idemdb"))
}

/// A temporary directory with a store path in it; commands run there, with the store given
/// by `IDEMDB_PATH` and every other idemdb variable removed.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("test.idemdb");
        Env { dir, db }
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `idemdb` with this environment, for assert_cmd.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(bin());
        cmd.current_dir(self.dir.path())
            .env("IDEMDB_PATH", &self.db)
            .timeout(PATIENCE);
        cmd
    }

    /// `idemdb` with this environment, for processes the test starts and stops itself.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin());
        cmd.current_dir(self.dir.path())
            .env("IDEMDB_PATH", &self.db)
            .stdin(Stdio::null());
        cmd
    }

    /// Lines in a file of the directory (0 if it does not exist).
    pub fn count_lines(&self, name: &str) -> usize {
        std::fs::read_to_string(self.path(name))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// Creates an empty file in the directory.
    pub fn touch(&self, name: &str) {
        std::fs::write(self.path(name), b"").expect("create file");
    }
}

/// A shell command that appends a line to `side` (the side effect to count), then waits
/// for the file `release` to appear (bounded, so a leftover process always ends), then
/// prints `done`.
pub fn gated_job(side: &str, release: &str) -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!(
            "echo ran >> {side}; i=0; while [ ! -e {release} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; echo done"
        ),
    ]
}

/// Polls `condition` until it holds, or panics after [`PATIENCE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child process to exit, or kills it and panics after [`PATIENCE`].
pub fn wait_exit(child: &mut Child) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            use std::os::unix::process::ExitStatusExt;
            return status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("a child process did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines a child writes to stderr, delivered as they come.
pub struct StderrLines {
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl StderrLines {
    pub fn follow(stderr: ChildStderr) -> StderrLines {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        StderrLines {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; panics after [`PATIENCE`] or at end of stream.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        if self.seen.iter().any(|l| l.contains(text)) {
            return;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no stderr line with {text:?}; saw {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("stderr ended without {text:?}; saw {:?}", self.seen)
                }
            }
        }
    }

    /// Everything written so far and until the stream ends.
    pub fn rest(mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        self.seen
    }
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Parses stdout as one JSON value.
pub fn json(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// Parses stdout as JSON lines (one value a line), as `ls --json` writes them.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {line}"))
        })
        .collect()
}

/// Fills the store at `db` with `n` completed records (keys `k000000`…, scope `default`)
/// through the library, as a store that has served many runs would hold them.
pub fn fill_store(db: &Path, n: usize) {
    // Synced once, at close, as `idemdb import` does.
    let store = idemdb::Store::builder()
        .durability(idemdb::Durability::None)
        .open(db)
        .expect("open the store");
    for i in 0..n {
        let record = idemdb::Record::builder(
            idemdb::Fingerprint::of(b"a command line"),
            idemdb::Timestamp::from_millis(1_000),
        )
        .completed(idemdb::Timestamp::from_millis(2_000), b"hello".to_vec());
        store
            .import("default", &format!("k{i:06}"), record, false)
            .expect("import a record");
    }
    store.close().expect("close the store");
}
