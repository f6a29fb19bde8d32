//! `idemdb run`, one run at a time: execute, replay, conflict, failure policies, output
//! limits and bad input. Each test runs the real binary in its own temporary directory.

mod cli_support;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use cli_support::*;
use predicates::prelude::*;

/// Writes bytes that are not UTF-8 (and a NUL) to stdout and a line to stderr, counts
/// itself in `side`, and exits with 3.
const AWKWARD: &str =
    r#"echo ran >> side; printf 'out\000\377\n'; printf 'err: \342\234\223\n' >&2; exit 3"#;

#[test]
fn a_retry_replays_stdout_stderr_and_status_byte_for_byte() {
    let env = Env::new();
    let first = env
        .cmd()
        .args(["run", "--key", "job-1", "--", "sh", "-c", AWKWARD])
        .output()
        .expect("run");
    assert_eq!(first.status.code(), Some(3));
    assert_eq!(first.stdout, b"out\0\xff\n");
    // A first run adds nothing of its own to stderr.
    assert_eq!(first.stderr, "err: \u{2713}\n".as_bytes());
    assert_eq!(env.count_lines("side"), 1);

    let quiet = env
        .cmd()
        .args([
            "run", "--quiet", "--key", "job-1", "--", "sh", "-c", AWKWARD,
        ])
        .output()
        .expect("replay");
    assert_eq!(quiet.status.code(), Some(3));
    assert_eq!(quiet.stdout, first.stdout);
    assert_eq!(quiet.stderr, first.stderr);
    assert_eq!(env.count_lines("side"), 1, "a replay must not run COMMAND");

    // Without --quiet the replay says so on stderr, and still writes the recorded bytes.
    env.cmd()
        .args(["run", "--key", "job-1", "--", "sh", "-c", AWKWARD])
        .assert()
        .code(3)
        .stdout(predicate::eq(&b"out\0\xff\n"[..]))
        .stderr(predicate::str::contains("replaying the result"))
        .stderr(predicate::str::ends_with("err: \u{2713}\n"));
    assert_eq!(env.count_lines("side"), 1);
}

#[test]
fn the_same_key_with_another_command_line_is_a_conflict() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--key", "k", "--", "sh", "-c", "echo a >> side"])
        .assert()
        .success();
    env.cmd()
        .args(["run", "--key", "k", "--", "sh", "-c", "echo b >> side"])
        .assert()
        .code(CONFLICT)
        .stdout("")
        .stderr(predicate::str::contains("different command line"));
    // Arguments are framed one by one: the same words split differently are another
    // command line.
    env.cmd()
        .args([
            "run", "--key", "k", "--", "sh", "-c", "echo", "a", ">>", "side",
        ])
        .assert()
        .code(CONFLICT);
    assert_eq!(
        std::fs::read_to_string(env.path("side")).expect("side"),
        "a\n"
    );
    // Another scope is another key.
    env.cmd()
        .args([
            "run",
            "--scope",
            "other",
            "--key",
            "k",
            "--",
            "sh",
            "-c",
            "echo b >> side",
        ])
        .assert()
        .success();
    assert_eq!(env.count_lines("side"), 2);
}

#[test]
fn a_failure_is_recorded_by_default_and_released_on_request() {
    let env = Env::new();
    let failing = ["sh", "-c", "echo ran >> side; exit 4"];
    for _ in 0..2 {
        env.cmd()
            .args(["run", "--key", "recorded", "--"])
            .args(failing)
            .assert()
            .code(4);
    }
    assert_eq!(env.count_lines("side"), 1, "the failure is replayed");

    for expected_runs in 2..4 {
        env.cmd()
            .args(["run", "--on-failure", "release", "--key", "released", "--"])
            .args(failing)
            .assert()
            .code(4)
            .stderr(predicate::str::contains("released"));
        assert_eq!(
            env.count_lines("side"),
            expected_runs,
            "released: runs again"
        );
    }
    // A success is recorded under either policy.
    for _ in 0..2 {
        env.cmd()
            .args(["run", "--on-failure", "release", "--key", "ok", "--"])
            .args(["sh", "-c", "echo ran >> side"])
            .assert()
            .success();
    }
    assert_eq!(env.count_lines("side"), 4);
}

#[test]
fn a_command_that_cannot_start_leaves_the_key_free() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--key", "k", "--", "./no-such-program"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains("no-such-program"));
    std::fs::write(env.path("not-executable"), "#!/bin/sh\n").expect("write");
    env.cmd()
        .args(["run", "--key", "k2", "--", "./not-executable"])
        .assert()
        .code(126);
    for key in ["k", "k2"] {
        env.cmd().args(["get", key]).assert().code(NOT_FOUND);
    }
}

#[test]
fn output_beyond_the_limit_passes_through_and_is_cut_with_a_note() {
    let env = Env::new();
    let job = [
        "sh",
        "-c",
        "echo ran >> side; head -c 3000000 /dev/zero | tr '\\000' x",
    ];
    let first = env
        .cmd()
        .args(["run", "--quiet", "--key", "big", "--"])
        .args(job)
        .output()
        .expect("run");
    assert!(first.status.success());
    assert_eq!(first.stdout.len(), 3_000_000, "live output is never cut");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("only the first"), "{stderr}");

    let replay = env
        .cmd()
        .args(["run", "--quiet", "--key", "big", "--"])
        .args(job)
        .output()
        .expect("replay");
    assert!(replay.status.success());
    assert!(replay.stdout.len() < 1024 * 1024 && replay.stdout.len() > 1000 * 1000);
    assert!(replay.stdout.iter().all(|b| *b == b'x'));
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(
        stderr.contains("wrote 3000000 bytes to stdout; only the first"),
        "{stderr}"
    );
    assert_eq!(env.count_lines("side"), 1);
}

#[test]
fn invalid_keys_scopes_and_durations_are_refused_before_anything_runs() {
    let env = Env::new();
    let long_key = "k".repeat(256);
    let cases: Vec<Vec<&str>> = vec![
        vec!["--key", ""],
        vec!["--key", "bell\u{7}"],
        vec!["--key", &long_key],
        vec!["--key", "k", "--scope", ""],
        vec!["--key", "k", "--ttl", "5x"],
        vec!["--key", "k", "--ttl", "0s"],
        vec!["--key", "k", "--ttl", "24"],
        vec!["--key", "k", "--wait", "soon"],
        vec!["--key", "k", "--lease", "-1s"],
        vec!["--key", "k", "--on-failure", "maybe"],
        vec!["--key", "k", "--no-wait", "--wait", "1s"],
    ];
    for args in cases {
        env.cmd()
            .arg("run")
            .args(&args)
            .args(["--", "sh", "-c", "echo ran >> side"])
            .assert()
            .code(INVALID_INPUT)
            .stderr(predicate::str::is_empty().not());
    }
    // No key at all, no command at all.
    env.cmd()
        .args(["run", "--", "true"])
        .assert()
        .code(INVALID_INPUT);
    env.cmd()
        .args(["run", "--key", "k"])
        .assert()
        .code(INVALID_INPUT);
    assert_eq!(env.count_lines("side"), 0);
    assert!(!env.db.exists(), "bad input must not create a store");

    // A retention longer than the store allows is refused by the store itself.
    env.cmd()
        .args([
            "run",
            "--key",
            "k",
            "--ttl",
            "400d",
            "--",
            "sh",
            "-c",
            "echo ran >> side",
        ])
        .assert()
        .code(INVALID_INPUT)
        .stderr(predicate::str::contains("retention"));
    assert_eq!(env.count_lines("side"), 0);
}

#[test]
fn a_key_that_is_not_utf8_is_invalid_input() {
    let env = Env::new();
    let key = OsString::from_vec(b"key-\xff\xfe".to_vec());
    env.cmd()
        .arg("run")
        .arg("--key")
        .arg(&key)
        .args(["--", "sh", "-c", "echo ran >> side"])
        .assert()
        .code(INVALID_INPUT)
        .stderr(predicate::str::contains("UTF-8"));
    env.cmd().arg("get").arg(&key).assert().code(INVALID_INPUT);
    assert_eq!(env.count_lines("side"), 0);
}

#[test]
fn a_record_counts_only_within_its_ttl() {
    let env = Env::new();
    let job = ["sh", "-c", "echo ran >> side"];
    env.cmd()
        .args(["run", "--ttl", "1s", "--key", "short", "--"])
        .args(job)
        .assert()
        .success();
    env.cmd()
        .args(["run", "--ttl", "forever", "--key", "long", "--"])
        .args(job)
        .assert()
        .success();
    let forever = env
        .cmd()
        .args(["--json", "get", "long"])
        .output()
        .expect("get");
    assert!(json(&forever.stdout)["expires_at"].is_null());
    // Expiry is exact: once `get` finds nothing, a run executes again.
    wait_until("the 1s record to expire", || {
        env.cmd()
            .args(["get", "short"])
            .output()
            .expect("get")
            .status
            .code()
            == Some(NOT_FOUND)
    });
    env.cmd()
        .args(["run", "--ttl", "1s", "--key", "short", "--"])
        .args(job)
        .assert()
        .success();
    assert_eq!(env.count_lines("side"), 3);
}

#[test]
fn json_mode_reports_on_stderr_in_json_lines() {
    let env = Env::new();
    let lines = |stderr: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(stderr)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let first = env
        .cmd()
        .args(["--json", "run", "--key", "j", "--", "echo", "hi"])
        .output()
        .expect("run");
    assert_eq!(first.stdout, b"hi\n");
    assert_eq!(lines(&first.stderr)[0]["event"], "recorded");

    let replay = env
        .cmd()
        .args(["--json", "run", "--key", "j", "--", "echo", "hi"])
        .output()
        .expect("replay");
    assert_eq!(replay.stdout, b"hi\n");
    let notes = lines(&replay.stderr);
    assert_eq!(notes[0]["event"], "replayed");
    assert_eq!(notes[0]["exit_code"], 0);

    let conflict = env
        .cmd()
        .args(["--json", "run", "--key", "j", "--", "echo", "bye"])
        .output()
        .expect("conflict");
    assert_eq!(conflict.status.code(), Some(CONFLICT));
    let error = &lines(&conflict.stderr)[0];
    assert_eq!(error["idemdb"], "error");
    assert_eq!(error["kind"], "conflict");
    assert_eq!(error["exit_code"], CONFLICT);
}

#[test]
fn help_documents_the_exit_codes_and_the_defaults() {
    let env = Env::new();
    let help = env.cmd().arg("--help").output().expect("help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "70",
        "conflict",
        "71",
        "in progress",
        "72",
        "abandoned",
        "73",
        "invalid input",
        "74",
        "locked",
        "75",
        "corrupt",
        "IDEMDB_PATH",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}");
    }
    let run_help = env
        .cmd()
        .args(["run", "--help"])
        .output()
        .expect("run help");
    let text = String::from_utf8_lossy(&run_help.stdout);
    assert!(text.contains("[default: record]"), "{text}");
    assert!(text.contains("[default: fail]"), "{text}");
    assert!(text.contains("cron"), "{text}");
}
