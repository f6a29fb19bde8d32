//! Real processes: a child killed with SIGKILL mid-load loses no acknowledged operation,
//! and a store held by another process is a typed "locked" error.
//!
//! The child is this test binary, re-executed with `IDEMDB_TEST_CHILD` set, running
//! `child_entry` only. It prints `ACK CLAIM key` after each `begin` returned Execute and
//! `ACK DONE key` after each `complete` returned; the parent kills it at a random moment,
//! reopens the store and checks every acknowledgement.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fp;
use idemdb::{Begin, Error, RecordState, Store};

const CHILD_ENV: &str = "IDEMDB_TEST_CHILD";
const CHILD_THREADS: usize = 4;

fn response_for(key: &str) -> Vec<u8> {
    format!("response of {key}: {}", "x".repeat(key.len() * 7)).into_bytes()
}

/// Runs only when spawned by a test below.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, rest) = spec.split_once(':').expect("mode:prefix:path");
    let (prefix, path) = rest.split_once(':').expect("mode:prefix:path");
    let store = Store::builder()
        .sweep_interval(None)
        .open(path)
        .expect("child opens the store");
    match mode {
        "load" => std::thread::scope(|s| {
            for t in 0..CHILD_THREADS {
                let store = &store;
                s.spawn(move || {
                    for i in 0.. {
                        let key = format!("{prefix}t{t}-{i}");
                        let Begin::Execute(claim) =
                            store.begin("crash", &key, fp(&key)).expect("begin")
                        else {
                            panic!("fresh keys execute")
                        };
                        println!("ACK CLAIM {key}");
                        claim.complete(response_for(&key)).expect("complete");
                        println!("ACK DONE {key}");
                    }
                });
            }
        }),
        "hold" => {
            println!("ACK OPEN");
            // Hold the store until the parent closes our stdin.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            store.close().expect("close");
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// The acknowledgement in a line of child output. libtest writes `test child_entry ... `
/// without a newline before the test's own output, so an acknowledgement may not start its
/// line.
fn ack(line: &str) -> &str {
    line.find("ACK ").map_or("", |at| &line[at..])
}

fn spawn_child(mode: &str, prefix: &str, path: &Path) -> Child {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{prefix}:{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    // A child that misbehaves must fail the test, not hang it: kill it after two minutes
    // (the test process, and this thread with it, usually ends long before).
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(120));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    child
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Everything the children were told, over all rounds on one file.
#[derive(Default)]
struct Acks {
    claimed: Vec<String>,
    done: Vec<String>,
}

impl Acks {
    fn record(&mut self, line: &str) {
        let line = ack(line);
        if let Some(key) = line.strip_prefix("ACK CLAIM ") {
            self.claimed.push(key.to_owned());
        } else if let Some(key) = line.strip_prefix("ACK DONE ") {
            self.done.push(key.to_owned());
        }
    }

    fn len(&self) -> usize {
        self.claimed.len() + self.done.len()
    }
}

/// Starts a loading child on `path` (keys prefixed `round`), kills it with SIGKILL after
/// `acks` acknowledgements, or, with `after`, at that moment whatever it has done (perhaps
/// while it is still opening and recovering the store); then reopens the store and checks
/// every acknowledgement of every round so far. Returns the acknowledgements of this round.
fn kill_and_check(
    path: &Path,
    round: usize,
    acks: usize,
    after: Option<Duration>,
    all: &mut Acks,
    seed: u64,
) -> usize {
    let prefix = format!("r{round}");
    let mut child = spawn_child("load", &prefix, path);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let before = all.len();
    match after {
        Some(delay) => std::thread::sleep(delay),
        None => {
            while all.len() - before < acks {
                let Some(Ok(line)) = lines.next() else {
                    panic!("seed {seed}: the child ended before {acks} acknowledgements");
                };
                all.record(&line);
            }
        }
    }
    child.kill().expect("SIGKILL");
    // Acknowledgements already written before the kill count too.
    for line in lines.map_while(Result::ok) {
        all.record(&line);
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "seed {seed}: the child was killed");

    let store = Store::builder()
        .sweep_interval(None)
        .open(path)
        .unwrap_or_else(|e| panic!("seed {seed}: reopen after SIGKILL {round}: {e}"));
    let mut highest: HashMap<String, u64> = HashMap::new();
    for key in &all.claimed {
        let record = store
            .get("crash", key)
            .expect("get")
            .unwrap_or_else(|| panic!("seed {seed}: acknowledged claim {key} lost"));
        assert_eq!(record.fingerprint(), fp(key), "seed {seed}: {key}");
        let (thread, i) = key.split_once('-').expect("t-i");
        let i: u64 = i.parse().expect("index");
        let h = highest.entry(thread.to_owned()).or_default();
        *h = (*h).max(i);
    }
    for key in &all.done {
        let record = store.get("crash", key).expect("get");
        match record.as_ref().map(|r| r.state()) {
            Some(RecordState::Completed(c)) => {
                assert_eq!(c.response(), response_for(key), "seed {seed}: {key}")
            }
            other => panic!("seed {seed}: acknowledged completion {key} is {other:?}"),
        }
    }
    // Nothing that was never submitted: per child thread, at most the one claim after the
    // last acknowledged one can exist (it was in flight when the child died).
    let mut per_thread: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in store.scan(Some("crash")).expect("scan") {
        let entry = entry.expect("entry");
        let (thread, i) = entry.key.split_once('-').expect("t-i");
        per_thread
            .entry(thread.to_owned())
            .or_default()
            .push(i.parse().expect("index"));
    }
    for (thread, indices) in per_thread {
        let limit = highest.get(&thread).map_or(0, |h| h + 1);
        assert!(
            indices.iter().all(|i| *i <= limit),
            "seed {seed}: thread {thread} has records beyond what it submitted: {indices:?} > {limit}"
        );
    }
    let report = store.check().expect("integrity check");
    assert!(report.is_healthy(), "seed {seed}: {:?}", report.problems);
    store.close().expect("close");
    all.len() - before
}

/// docs/reliability.md, scenario 4: SIGKILL at random moments, again and again on one file
/// (`IDEMDB_KILLS`, 20 by default): a quarter of the kills land at a random instant, perhaps
/// while the child is still recovering from the previous one; the rest after a random number
/// of acknowledgements. Every acknowledgement of every round is checked after each kill.
#[test]
fn sigkill_mid_load_loses_no_acknowledged_operation() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let mut seed = common::seed();
    let initial = seed;
    let kills = common::env_number("IDEMDB_KILLS", 20) as usize;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("killed.idemdb");
    let mut all = Acks::default();
    let mut early = 0;
    for round in 0..kills {
        let after = next(&mut seed)
            .is_multiple_of(4)
            .then(|| Duration::from_millis(next(&mut seed) % 300));
        early += usize::from(after.is_some());
        let acks = 20 + (next(&mut seed) % 400) as usize;
        kill_and_check(&path, round, acks, after, &mut all, initial);
    }
    eprintln!(
        "SIGKILL: seed {initial}, {kills} kills survived ({early} at a random instant), \
         {} acknowledgements checked after every kill, 0 lost",
        all.len()
    );
}

#[test]
fn a_store_held_by_another_process_is_locked() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("held.idemdb");
    Store::open(&path).expect("create").close().expect("close");
    let mut child = spawn_child("hold", "-", &path);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        let line = lines.next().expect("child output").expect("line");
        if ack(&line) == "ACK OPEN" {
            break;
        }
    }
    match Store::open(&path) {
        Err(Error::Locked { path: p }) => assert_eq!(p, path),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    let store = Store::open(&path).expect("free again");
    store.close().expect("close");
}

#[test]
fn a_second_open_in_the_same_process_is_locked_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("twice.idemdb");
    let first = Store::open(&path).expect("open");
    assert!(matches!(Store::open(&path), Err(Error::Locked { .. })));
    drop(first);
    // dropping closes: the file is free at once
    let again = Store::open(&path).expect("reopen");
    std::thread::sleep(Duration::from_millis(1));
    again.close().expect("close");
}
