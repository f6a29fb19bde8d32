//! Bad and busy store files: foreign, empty, damaged, missing, and held by another process.

mod cli_support;

use std::process::Stdio;

use cli_support::*;
use predicates::prelude::*;

const JOB: [&str; 3] = ["sh", "-c", "echo ran >> side"];

/// Every command that opens the store fails with `code`, and COMMAND never runs.
fn every_command_fails_with(env: &Env, code: i32, message: &str) {
    env.cmd()
        .args(["run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .code(code)
        .stderr(predicate::str::contains(message));
    let operator_commands: [&[&str]; 9] = [
        &["get", "k"],
        &["ls"],
        &["rm", "k"],
        &["stats"],
        &["sweep"],
        &["check"],
        &["compact"],
        &["export"],
        &["import", "-"],
    ];
    for args in operator_commands {
        env.cmd()
            .args(args)
            .write_stdin("")
            .assert()
            .code(code)
            .stderr(predicate::str::contains(message));
    }
    assert_eq!(env.count_lines("side"), 0);
}

#[test]
fn a_foreign_file_is_refused_as_corrupt() {
    let env = Env::new();
    std::fs::write(&env.db, b"this is somebody's notes, not a store\n").expect("write");
    every_command_fails_with(&env, CORRUPT, "not an idemdb store");
    assert_eq!(
        std::fs::read(&env.db).expect("read"),
        b"this is somebody's notes, not a store\n",
        "a foreign file is never written to"
    );
}

#[test]
fn an_empty_file_is_refused_as_corrupt() {
    let env = Env::new();
    std::fs::write(&env.db, b"").expect("write");
    every_command_fails_with(&env, CORRUPT, "empty");
}

#[test]
fn a_damaged_store_is_refused_as_corrupt() {
    let env = Env::new();
    for i in 0..5 {
        env.cmd()
            .args(["run", "--key", &format!("k{i}"), "--", "echo", "hello"])
            .assert()
            .success();
    }
    std::fs::remove_file(env.path("side")).ok();
    // Overwrite every page after the header: each tree page fails its checksum.
    let mut bytes = std::fs::read(&env.db).expect("read");
    assert!(bytes.len() > 8192);
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = [0xde, 0xad, 0xbe, 0xef][i % 4];
    }
    std::fs::write(&env.db, &bytes).expect("write");
    every_command_fails_with(&env, CORRUPT, "corrupt");
}

#[test]
fn operator_commands_never_create_a_store() {
    let env = Env::new();
    let commands: [&[&str]; 8] = [
        &["get", "k"],
        &["ls"],
        &["rm", "k"],
        &["stats"],
        &["sweep"],
        &["check"],
        &["compact"],
        &["export"],
    ];
    for args in commands {
        env.cmd()
            .args(args)
            .assert()
            .code(NOT_FOUND)
            .stderr(predicate::str::contains("no store exists"));
    }
    assert!(!env.db.exists());
    // `--db` wins over IDEMDB_PATH.
    let other = env.path("other.idemdb");
    env.cmd()
        .arg("--db")
        .arg(&other)
        .args(["run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .success();
    assert!(other.exists());
    assert!(!env.db.exists());
}

#[test]
fn without_db_or_idemdb_path_the_store_lives_in_the_state_directory() {
    let env = Env::new();
    let state = env.path("state");
    let home = env.path("home");
    env.cmd()
        .env_remove("IDEMDB_PATH")
        .env("XDG_STATE_HOME", &state)
        .env("HOME", &home)
        .args(["run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .success();
    assert!(state.join("idemdb").join("store.idemdb").is_file());
    env.cmd()
        .env_remove("IDEMDB_PATH")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", &home)
        .args(["run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .success();
    assert!(
        home.join(".local/state/idemdb/store.idemdb").is_file(),
        "without XDG_STATE_HOME: ~/.local/state"
    );
    assert_eq!(env.count_lines("side"), 2, "two stores, one run each");
    env.cmd()
        .env_remove("IDEMDB_PATH")
        .env_remove("XDG_STATE_HOME")
        .env_remove("HOME")
        .args(["run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .code(INVALID_INPUT)
        .stderr(predicate::str::contains("--db"));
}

#[test]
fn a_store_held_by_another_process_is_retried_then_reported() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--key", "first", "--"])
        .args(JOB)
        .assert()
        .success();
    // This test process holds the file, as another program using the library would.
    let holder = idemdb::Store::open(&env.db).expect("hold the store");
    env.cmd()
        .args(["--lock-wait", "1s", "run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .code(LOCKED)
        .stderr(predicate::str::contains("held by another process"));
    for args in [&["ls"][..], &["check"][..], &["compact"][..]] {
        env.cmd()
            .args(["--lock-wait", "1s"])
            .args(args)
            .assert()
            .code(LOCKED);
    }
    assert_eq!(env.count_lines("side"), 1);

    // A run that starts while the file is held gets it once the holder lets go.
    let mut waiting = env
        .std_cmd()
        .args(["--lock-wait", "10m", "run", "--key", "k", "--"])
        .args(JOB)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a run");
    std::thread::sleep(std::time::Duration::from_millis(300));
    holder.close().expect("release the store");
    assert_eq!(wait_exit(&mut waiting), 0);
    assert_eq!(env.count_lines("side"), 2);
}

#[test]
fn check_passes_a_sound_store() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--key", "k", "--"])
        .args(JOB)
        .assert()
        .success();
    let out = env.cmd().args(["--json", "check"]).output().expect("check");
    assert!(out.status.success());
    let report = json(&out.stdout);
    assert_eq!(report["healthy"], true);
    assert_eq!(report["records"], 1);
    assert_eq!(report["problem_count"], 0);
    env.cmd()
        .arg("check")
        .assert()
        .success()
        .stdout(predicate::str::contains("0 problems"));
}
