//! Conventional edges: a closed pipe ends a command quietly (a replay keeps its recorded
//! status), errors name the path, durations print as people write them, a directory is not
//! a store, `ls` is bounded and streams JSON lines, and progress shows on a terminal only.

mod cli_support;

use std::process::Stdio;

use cli_support::*;
use predicates::prelude::*;

fn store_with(env: &Env, n: usize) {
    fill_store(&env.db, n);
}

/// Runs idemdb with stdout a pipe whose reader is already gone; returns the exit status
/// and stderr.
fn into_closed_pipe(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = env
        .std_cmd()
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run idemdb");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let env = Env::new();
    store_with(&env, 150);
    for args in [
        &["ls"][..],
        &["ls", "--all"][..],
        &["--json", "ls"][..],
        &["export"][..],
        &["get", "k000001"][..],
        &["stats"][..],
    ] {
        let (code, stderr) = into_closed_pipe(&env, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_replay_into_a_closed_pipe_exits_with_the_recorded_status() {
    let env = Env::new();
    let job = ["sh", "-c", "echo out; echo err >&2; exit 3"];
    env.cmd()
        .args(["run", "--key", "k", "--"])
        .args(job)
        .assert()
        .code(3);
    let mut args = vec!["run", "--key", "k", "--"];
    args.extend(job);
    let (code, stderr) = into_closed_pipe(&env, &args);
    assert_eq!(code, Some(3), "{stderr}");
    // The recorded stderr is still written.
    assert!(stderr.contains("err"), "{stderr}");
}

#[test]
fn a_directory_given_as_the_store_is_invalid_input() {
    let env = Env::new();
    std::fs::create_dir(&env.db).expect("a directory");
    for args in [
        &["run", "--key", "k", "--", "true"][..],
        &["get", "k"][..],
        &["ls"][..],
    ] {
        env.cmd()
            .args(args)
            .assert()
            .code(INVALID_INPUT)
            .stderr(predicate::str::contains(env.db.display().to_string()))
            .stderr(predicate::str::contains("is a directory"));
    }
}

#[test]
fn an_io_error_names_the_path() {
    let env = Env::new();
    let db = env.path("no-such-dir/store.idemdb");
    env.cmd()
        .arg("--db")
        .arg(&db)
        .args(["run", "--key", "k", "--", "true"])
        .assert()
        .code(76)
        .stderr(predicate::str::contains(db.display().to_string()));
}

#[test]
fn damage_found_by_check_names_the_path() {
    let env = Env::new();
    store_with(&env, 200);
    // 16 bytes changed in the middle of every page past the header: the file's size (and
    // which of its pages are free) depends on when folds ran, so one spot could land on a
    // free page.
    let mut bytes = std::fs::read(&env.db).expect("read");
    for page in bytes.chunks_mut(4096).skip(1) {
        let middle = page.len() / 2;
        for b in &mut page[middle..middle + 16] {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&env.db, &bytes).expect("write");
    let out = env.cmd().arg("check").output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(CORRUPT), "{stderr}");
    assert!(stderr.contains(&env.db.display().to_string()), "{stderr}");
}

#[test]
fn durations_print_the_way_people_write_them() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--ttl", "400d", "--key", "k", "--", "true"])
        .assert()
        .code(INVALID_INPUT)
        .stderr(predicate::str::contains("400d"))
        .stderr(predicate::str::contains("between 1s and 365d"))
        .stderr(predicate::str::contains("31536000s").not());

    env.cmd()
        .args(["run", "--key", "first", "--", "true"])
        .assert()
        .success();
    let holder = idemdb::Store::open(&env.db).expect("hold the store");
    env.cmd()
        .args(["--lock-wait", "1s", "get", "first"])
        .assert()
        .code(LOCKED)
        .stderr(predicate::str::ends_with("gave up after 1s\n"));
    holder.close().expect("release the store");
}

#[test]
fn ls_shows_a_hundred_rows_unless_told_otherwise() {
    let env = Env::new();
    store_with(&env, 130);
    let out = env.cmd().arg("ls").output().expect("ls");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 101);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("30 more records not shown"), "{stderr}");

    let out = env.cmd().args(["ls", "--limit", "7"]).output().expect("ls");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 8);
    let out = env.cmd().args(["ls", "--all"]).output().expect("ls");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 131);
    assert!(out.stderr.is_empty());

    // JSON: one object a line, the first 100 in order; the rest announced on stderr.
    let out = env.cmd().args(["--json", "ls"]).output().expect("ls");
    let rows = json_lines(&out.stdout);
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[0]["key"], "k000000");
    assert_eq!(rows[99]["key"], "k000099");
    let note = json(&out.stderr);
    assert_eq!(note["event"], "more");
    assert_eq!(note["matched"], 130);
    let out = env
        .cmd()
        .args(["--json", "ls", "--all"])
        .output()
        .expect("ls");
    assert_eq!(json_lines(&out.stdout).len(), 130);
}

/// Runs a shell command line under `script`, so idemdb's stderr is a terminal; returns
/// what the terminal showed.
fn on_a_terminal(env: &Env, line: &str) -> String {
    let out = assert_cmd::Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .current_dir(env.dir.path())
        .env("IDEMDB_PATH", &env.db)
        .timeout(PATIENCE)
        .output()
        .expect("run script(1)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn waiting_for_the_lock_shows_progress_on_a_terminal_only() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--key", "first", "--", "true"])
        .assert()
        .success();
    let holder = idemdb::Store::open(&env.db).expect("hold the store");
    let shown = on_a_terminal(
        &env,
        &format!("{} --lock-wait 2s get first", bin().display()),
    );
    assert!(shown.contains("waiting for"), "{shown}");
    // Not on a pipe: only the error.
    let out = env
        .cmd()
        .args(["--lock-wait", "1s", "get", "first"])
        .output()
        .expect("get");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("waiting for"), "{stderr}");
    holder.close().expect("release the store");
}
