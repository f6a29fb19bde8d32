//! Overlapping `idemdb run`s of one key: the command executes once; the others wait and
//! replay, or report "in progress". Synchronised on files and stderr lines, never on
//! timing.

mod cli_support;

use std::process::Stdio;

use cli_support::*;
use predicates::prelude::*;

#[test]
fn overlapping_runs_of_a_slow_command_execute_it_once() {
    let env = Env::new();
    let job = gated_job("side", "release");
    let mut first = env
        .std_cmd()
        .args(["run", "--key", "slow", "--"])
        .args(&job)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first run");
    wait_until("the first run to start its command", || {
        env.count_lines("side") == 1
    });

    // Two more runs of the same key while the first is still running: both wait.
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let mut child = env
            .std_cmd()
            .args(["--json", "run", "--wait", "10m", "--key", "slow", "--"])
            .args(&job)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a waiting run");
        let mut stderr = StderrLines::follow(child.stderr.take().expect("stderr"));
        stderr.wait_for(r#""event":"waiting""#);
        waiters.push((child, stderr));
    }
    // The store file is free while the command runs: operator commands work meanwhile.
    env.cmd()
        .args(["--json", "get", "slow"])
        .assert()
        .success()
        .stdout(predicate::str::contains(r#""status":"in_flight""#))
        .stdout(predicate::str::contains(r#""owner_alive":"alive""#));

    env.touch("release");
    let first_status = wait_exit(&mut first);
    assert_eq!(first_status, 0);
    let first_out = std::io::read_to_string(first.stdout.take().expect("stdout")).expect("read");
    assert_eq!(first_out, "done\n");

    for (mut child, stderr) in waiters {
        assert_eq!(wait_exit(&mut child), 0);
        let out = std::io::read_to_string(child.stdout.take().expect("stdout")).expect("read");
        assert_eq!(out, "done\n", "a waiter replays the first run's output");
        let notes = stderr.rest();
        assert!(
            notes.iter().any(|l| l.contains(r#""event":"replayed""#)),
            "{notes:?}"
        );
    }
    assert_eq!(env.count_lines("side"), 1, "the command ran exactly once");
}

#[test]
fn no_wait_and_an_exhausted_wait_report_in_progress() {
    let env = Env::new();
    let job = gated_job("side", "release");
    let mut first = env
        .std_cmd()
        .args(["run", "--key", "busy", "--"])
        .args(&job)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the first run");
    wait_until("the first run to start its command", || {
        env.count_lines("side") == 1
    });

    env.cmd()
        .args(["run", "--no-wait", "--key", "busy", "--"])
        .args(&job)
        .assert()
        .code(IN_PROGRESS)
        .stdout("")
        .stderr(predicate::str::contains("in progress"))
        .stderr(predicate::str::contains("--no-wait"));
    let started = std::time::Instant::now();
    env.cmd()
        .args(["run", "--wait", "1s", "--key", "busy", "--"])
        .args(&job)
        .assert()
        .code(IN_PROGRESS)
        .stderr(predicate::str::contains("gave up after waiting"));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(env.count_lines("side"), 1);

    env.touch("release");
    assert_eq!(wait_exit(&mut first), 0);
    env.cmd()
        .args(["run", "--no-wait", "--quiet", "--key", "busy", "--"])
        .args(&job)
        .assert()
        .success()
        .stdout("done\n");
    assert_eq!(env.count_lines("side"), 1);
}
