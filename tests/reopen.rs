//! Claims made before the store was last opened. Only one process holds a store, so a
//! claim an earlier opening made and did not detach has lost its holder (it closed the
//! store or died): the retry executes at once as a recovery (or is told Abandoned under
//! the strict policy) instead of waiting for the lease to end. A detached claim may be
//! resumed by a later opening, so it keeps its lease.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestStore, execute, fp};
use idemdb::{Begin, BeginOptions, ClaimId, RecoveryPolicy, Store};

/// Set for the child process: the store it opens.
const CHILD_STORE: &str = "IDEMDB_TEST_HOLDER_STORE";
const CHILD: &str = "child_holds_a_claim_until_it_is_killed";

/// The child process of [`a_service_killed_mid_handler_is_recovered_at_once_after_a_restart`]
/// and its strict twin, run by them with `--ignored`: claims a key with a long lease, says
/// which claim, and waits to be killed.
#[test]
#[ignore = "the child process of the reopen tests; they run it"]
fn child_holds_a_claim_until_it_is_killed() {
    let Some(path) = std::env::var_os(CHILD_STORE) else {
        return;
    };
    let store = Store::open(path).expect("the child opens the store");
    let lease = BeginOptions::new()
        .lease(Duration::from_secs(600))
        .owner(b"child".to_vec());
    let claim = execute(store.begin_with("s", "k", fp("a"), &lease).expect("begin"));
    println!("claimed {}", claim.id());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs the child on the store at `path` until it holds the claim, kills it (SIGKILL on
/// Unix), and returns its claim.
fn claim_in_a_killed_process(path: &Path) -> ClaimId {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            CHILD,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_STORE, path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("the child's stdout");
    let claim = BufReader::new(stdout)
        .lines()
        .map(|line| line.expect("read the child's output"))
        // The harness may print its "test ... " on the same line first.
        .find_map(|line| {
            let (_, id) = line.split_once("claimed ")?;
            ClaimId::parse(id.trim())
        });
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    claim.expect("the child claimed the key before it was killed")
}

#[test]
fn a_service_killed_mid_handler_is_recovered_at_once_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("restart.idemdb");
    let dead = claim_in_a_killed_process(&path);
    // The restarted service: the child's lease has nearly ten minutes left.
    let store = Store::open(&path).expect("reopen after the crash");
    let claim = match store.begin("s", "k", fp("a")).expect("begin") {
        Begin::Execute(claim) => claim,
        other => panic!("the retry must execute at once, got {other:?}"),
    };
    let recovery = claim.recovery().expect("flagged as a recovery");
    assert_eq!(recovery.previous_claim, dead);
    assert_eq!(recovery.previous_owner.as_deref(), Some(&b"child"[..]));
    assert_eq!(claim.attempt(), 2);
    claim.complete(b"sent once more").expect("complete");
    store.close().expect("close");
}

#[test]
fn a_service_killed_mid_handler_is_abandoned_at_once_under_strict_recovery() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("restart.idemdb");
    let dead = claim_in_a_killed_process(&path);
    let store = Store::builder()
        .recovery(RecoveryPolicy::Strict)
        .open(&path)
        .expect("reopen after the crash");
    match store.begin("s", "k", fp("a")).expect("begin") {
        Begin::Abandoned(a) => {
            assert_eq!(a.claim, dead);
            assert!(a.since <= store.now());
        }
        other => panic!("strict recovery must say abandoned at once, got {other:?}"),
    }
    store.close().expect("close");
}

/// In one process too: a claim whose store was closed under it is gone with that opening.
#[test]
fn a_claim_left_behind_by_a_closed_store_is_recovered_after_reopening() {
    let mut t = TestStore::new();
    let left = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    let id = left.id();
    t.reopen(|b| b);
    let claim = execute(t.store.begin("s", "k", fp("a")).expect("begin"));
    assert_eq!(claim.recovery().map(|r| r.previous_claim), Some(id));
    assert_eq!(
        claim.recovery().map(|r| r.lease_ended_at),
        Some(t.store.now()),
        "its lease had not ended: its holder was found gone at the reopen"
    );
    claim.complete(b"r").expect("complete");
    // The old handle can do nothing any more.
    assert!(left.complete(b"stale").is_err());
}

/// A detached claim (the CLI's flow: claim, detach, close; run; reopen, resume, complete)
/// is judged by its lease after a reopen, and the later opening resumes it.
#[test]
fn a_detached_claim_keeps_its_lease_across_a_reopen_and_resumes() {
    let mut t = TestStore::new();
    let claim = execute(
        t.store
            .begin_with(
                "s",
                "k",
                fp("a"),
                &BeginOptions::new().owner(b"host pid".to_vec()),
            )
            .expect("begin"),
    );
    let ticket = claim.detach().expect("detach");
    t.reopen(|b| b);
    let stored = t.store.get("s", "k").expect("get").expect("in flight");
    let flight = match stored.state() {
        idemdb::RecordState::InFlight(f) => f.clone(),
        other => panic!("{other:?}"),
    };
    assert!(flight.is_detached());
    assert_eq!(flight.owner(), Some(&b"host pid"[..]));
    match t
        .store
        .begin_with("s", "k", fp("a"), &BeginOptions::new().no_wait())
        .expect("begin")
    {
        Begin::InProgress(p) => assert_eq!(p.claim, ticket.claim),
        other => panic!("a detached claim keeps its lease, got {other:?}"),
    }
    t.reopen(|b| b);
    let resumed = t.store.resume(&ticket).expect("resume");
    resumed.complete(b"done").expect("complete");
    assert_eq!(
        common::replay(t.store.begin("s", "k", fp("a")).expect("begin")),
        b"done"
    );
}
