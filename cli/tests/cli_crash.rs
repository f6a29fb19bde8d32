//! Killing `idemdb run` while its command runs: SIGKILL leaves a claim whose owner is gone,
//! recognised at once by the next run; SIGINT and SIGTERM are forwarded to the command and
//! leave the key abandoned. Either way the key runs again only under
//! `--on-abandoned retry`.

mod cli_support;

use std::process::{Child, Stdio};

use cli_support::*;
use predicates::prelude::*;

/// Starts `idemdb run` of the gated job for `key` and waits until its command has started
/// (so the claim is on disk).
fn start_gated(env: &Env, key: &str) -> Child {
    let before = env.count_lines("side");
    let child = env
        .std_cmd()
        .args(["run", "--key", key, "--"])
        .args(gated_job("side", "release"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a run");
    wait_until("the command to start", || {
        env.count_lines("side") == before + 1
    });
    child
}

fn kill_hard(env: &Env, key: &str) {
    let mut run = start_gated(env, key);
    run.kill().expect("SIGKILL");
    assert_eq!(wait_exit(&mut run), 128 + 9);
    // The dead run's claim is stuck from this moment, long before its lease would end.
    let listed = env
        .cmd()
        .args(["--json", "ls", "--state", "stuck"])
        .output()
        .expect("ls");
    let records = json_lines(&listed.stdout);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["key"], key);
}

#[test]
fn after_sigkill_the_fail_policy_never_runs_the_command_again() {
    let env = Env::new();
    kill_hard(&env, "k");
    let job = gated_job("side", "release");
    for policy in [&[][..], &["--on-abandoned", "fail"][..]] {
        env.cmd()
            .args(["run", "--key", "k"])
            .args(policy)
            .arg("--")
            .args(&job)
            .assert()
            .code(ABANDONED)
            .stderr(predicate::str::contains("ended without recording a result"));
    }
    assert_eq!(env.count_lines("side"), 1);
    // The command killed along with nothing: let the orphan finish.
    env.touch("release");

    // An operator clears the key; then it runs again.
    env.cmd().args(["rm", "k"]).assert().success();
    env.cmd()
        .args(["run", "--key", "k", "--"])
        .args(&job)
        .assert()
        .success()
        .stdout("done\n");
    assert_eq!(env.count_lines("side"), 2);
}

#[test]
fn after_sigkill_the_retry_policy_runs_the_command_again_once() {
    let env = Env::new();
    kill_hard(&env, "k");
    env.touch("release");
    let job = gated_job("side", "release");
    env.cmd()
        .args(["run", "--on-abandoned", "retry", "--key", "k", "--"])
        .args(&job)
        .assert()
        .success()
        .stdout("done\n")
        .stderr(predicate::str::contains("running COMMAND again (attempt 2"));
    assert_eq!(env.count_lines("side"), 2);
    // The rerun's result is recorded: the next run replays it, under either policy.
    env.cmd()
        .args(["run", "--quiet", "--key", "k", "--"])
        .args(&job)
        .assert()
        .success()
        .stdout("done\n");
    let record = env
        .cmd()
        .args(["--json", "get", "k"])
        .output()
        .expect("get");
    assert_eq!(json(&record.stdout)["attempt"], 2);
    assert_eq!(env.count_lines("side"), 2);
}

#[test]
fn sigint_and_sigterm_are_forwarded_and_leave_the_key_abandoned() {
    let env = Env::new();
    // The command notes the signal it receives, then ends.
    let job = [
        "sh",
        "-c",
        "trap 'echo got-signal >> trapped; exit 5' INT TERM; echo ran >> side; i=0; while [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done",
    ];
    for (n, (name, number)) in [("TERM", 15), ("INT", 2)].into_iter().enumerate() {
        let key = format!("k-{name}");
        let mut run = env
            .std_cmd()
            .args(["run", "--key", &key, "--"])
            .args(job)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a run");
        wait_until("the command to start", || env.count_lines("side") == n + 1);
        signal(run.id(), name);
        assert_eq!(wait_exit(&mut run), 128 + number);
        let notes = StderrLines::follow(run.stderr.take().expect("stderr")).rest();
        assert!(
            notes.iter().any(|l| l.contains("interrupted by SIG")),
            "{notes:?}"
        );
        assert_eq!(
            env.count_lines("trapped"),
            n + 1,
            "the signal reached COMMAND"
        );

        let record = env
            .cmd()
            .args(["--json", "get", &key])
            .output()
            .expect("get");
        let record = json(&record.stdout);
        assert_eq!(record["status"], "abandoned");
        assert!(record["abandoned_at"].is_u64());
        env.cmd()
            .args(["run", "--key", &key, "--"])
            .args(job)
            .assert()
            .code(ABANDONED);
        assert_eq!(env.count_lines("side"), n + 1, "never run twice by default");
    }
}
