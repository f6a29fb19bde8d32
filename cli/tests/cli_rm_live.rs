//! An operator cannot break a live run by accident: `rm` of a key whose run still runs is
//! refused (exit 78) unless `--force`, and a run whose record was deleted under it says
//! what happened instead of blaming a lease.

mod cli_support;

use std::process::{Child, Stdio};

use cli_support::*;
use predicates::prelude::*;

const IN_USE: i32 = 78;
const STORE_ERROR: i32 = 76;

/// Starts `idemdb run` of a gated job for `key` and waits until its command has started
/// (so the claim is on disk).
fn start_gated(env: &Env, key: &str, side: &str, release: &str) -> Child {
    let before = env.count_lines(side);
    let child = env
        .std_cmd()
        .args(["run", "--key", key, "--"])
        .args(gated_job(side, release))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a run");
    wait_until("the command to start", || {
        env.count_lines(side) == before + 1
    });
    child
}

#[test]
fn rm_of_a_running_key_is_refused_and_names_its_owner() {
    let env = Env::new();
    let mut run = start_gated(&env, "k", "side", "release");
    let pid = run.id();
    env.cmd()
        .args(["rm", "k"])
        .assert()
        .code(IN_USE)
        .stderr(predicate::str::contains(format!("pid {pid}")))
        .stderr(predicate::str::contains("still runs"))
        .stderr(predicate::str::contains("--force"));
    let refused = env
        .cmd()
        .args(["--json", "rm", "k"])
        .output()
        .expect("rm --json");
    assert_eq!(refused.status.code(), Some(IN_USE));
    let line = json(&refused.stderr);
    assert_eq!(line["kind"], "in_use");
    assert_eq!(line["exit_code"], IN_USE);
    // The record is untouched, and a second run of the key still waits for the first.
    env.cmd().args(["get", "k"]).assert().success();
    env.cmd()
        .args(["run", "--no-wait", "--key", "k", "--"])
        .args(gated_job("side", "release"))
        .assert()
        .code(IN_PROGRESS);
    env.touch("release");
    assert_eq!(wait_exit(&mut run), 0);
    assert_eq!(env.count_lines("side"), 1);
    // Once the run has finished, its record can be removed as before.
    env.cmd().args(["rm", "k"]).assert().success();
}

#[test]
fn after_a_forced_rm_the_run_says_its_record_was_deleted() {
    let env = Env::new();
    let run = start_gated(&env, "k", "side", "release");
    env.cmd()
        .args(["rm", "--force", "k"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--force"))
        .stderr(predicate::str::contains("cannot record its result"));
    env.touch("release");
    let out = run.wait_with_output().expect("the run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(STORE_ERROR), "{stderr}");
    assert!(
        stderr.contains("record was deleted while COMMAND ran"),
        "{stderr}"
    );
    assert!(stderr.contains("the key is free"), "{stderr}");
    assert!(!stderr.contains("lease"), "{stderr}");
    assert!(!stderr.contains("stays in flight"), "{stderr}");
    // Nothing is recorded: the next run executes COMMAND.
    env.cmd().args(["get", "k"]).assert().code(NOT_FOUND);
}

#[test]
fn a_run_whose_key_was_deleted_and_claimed_again_says_so() {
    let env = Env::new();
    let first = start_gated(&env, "k", "side", "release-1");
    env.cmd().args(["rm", "--force", "k"]).assert().success();
    // A second run of the same command line now claims the key afresh.
    let second = env
        .std_cmd()
        .args(["run", "--key", "k", "--"])
        .args(gated_job("side", "release-2"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second run");
    let second_pid = second.id();
    wait_until("the second command to start", || {
        env.count_lines("side") == 2
    });
    env.touch("release-1");
    let out = first.wait_with_output().expect("the first run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(STORE_ERROR), "{stderr}");
    assert!(
        stderr.contains("record was deleted while COMMAND ran"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("another run (pid {second_pid}")),
        "{stderr}"
    );
    assert!(!stderr.contains("lease ended"), "{stderr}");
    // The second run records its own result, which retries replay.
    env.touch("release-2");
    let out = second.wait_with_output().expect("the second run ends");
    assert_eq!(out.status.code(), Some(0));
    env.cmd()
        .args(["run", "--key", "k", "--"])
        .args(gated_job("side", "release-2"))
        .assert()
        .success()
        .stderr(predicate::str::contains("replaying"));
    assert_eq!(env.count_lines("side"), 2);
}
