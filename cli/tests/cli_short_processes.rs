//! Many short processes on one store, as cron jobs and scripts use it: creating one new
//! store at once never fails; reading commands never write (so they work on an immutable
//! file and directory and on a full disk, and leave the files byte-for-byte unchanged);
//! and a run whose COMMAND has run always records its result, however long another
//! process holds the store.

mod cli_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::*;

/// Starts `idemdb run --key KEY -- true` in `env`, output captured.
fn spawn_run(env: &Env, key: &str) -> std::process::Child {
    env.std_cmd()
        .args(["run", "--key", key, "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a run")
}

/// Starts `n` runs on new keys of a store that does not exist yet, all at once, and
/// returns the failures (exit code and stderr).
fn create_at_once(env: &Env, n: usize) -> Vec<String> {
    let children: Vec<_> = (0..n).map(|i| spawn_run(env, &format!("k{i}"))).collect();
    let mut failures = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        if !out.status.success() {
            failures.push(format!(
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if failures.is_empty() {
        for i in 0..n {
            env.cmd().args(["get", &format!("k{i}")]).assert().success();
        }
    }
    failures
}

#[test]
fn fifty_pairs_of_runs_creating_one_new_store_never_fail() {
    let mut failures = Vec::new();
    for trial in 0..50 {
        let env = Env::new();
        failures.extend(
            create_at_once(&env, 2)
                .into_iter()
                .map(|f| format!("trial {trial}: {f}")),
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn twenty_runs_creating_one_new_store_never_fail() {
    let env = Env::new();
    let failures = create_at_once(&env, 20);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every file in `dir` (but `except`) with its bytes: nothing may appear, vanish or change.
fn files(dir: &Path, except: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            !except
                .iter()
                .any(|name| p.file_name() == Some(name.as_ref()))
        })
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    all.sort();
    all
}

/// The command line a test store records under key `done`.
const DONE: [&str; 3] = ["sh", "-c", "echo recorded-output"];

/// A store with a completed key and a failed one, closed.
fn recorded_store(env: &Env) {
    env.cmd()
        .args(["run", "--key", "done", "--"])
        .args(DONE)
        .assert()
        .success();
    env.cmd()
        .args(["run", "--key", "failed", "--", "false"])
        .assert()
        .code(1);
}

/// Runs every reading command (`get`, `ls`, `stats`, `export`, and a replay), checking
/// each succeeds and leaves the files of `dir` (but `except`) as they were.
fn every_reading_command_reads_without_writing(env: &Env, dir: &Path, except: &[&str]) {
    let before = files(dir, except);
    let mut replay: Vec<&str> = vec!["run", "--key", "done", "--"];
    replay.extend(DONE);
    let commands: [&[&str]; 6] = [
        &["get", "done"],
        &["get", "--json", "failed"],
        &["ls"],
        &["stats"],
        &["export"],
        &replay,
    ];
    for args in commands {
        let out = env.cmd().args(args).output().expect("run idemdb");
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(files(dir, except) == before, "{args:?} changed the files");
    }
    let out = env.cmd().args(replay).output().expect("replay");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "recorded-output\n");
}

#[test]
fn reading_commands_leave_the_files_byte_for_byte_unchanged() {
    let env = Env::new();
    recorded_store(&env);
    every_reading_command_reads_without_writing(&env, env.dir.path(), &[]);
}

/// Makes paths immutable (`chattr +i`: not even root may write them, create files in a
/// directory, or open a file for writing) until dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[PathBuf]) -> Result<Immutable, String> {
        let mut done = Immutable(Vec::new());
        for path in paths {
            let out = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .output()
                .map_err(|e| format!("chattr is not available: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "chattr +i {} failed: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            done.0.push(path.clone());
        }
        Ok(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}

/// A read-only file and directory, made so for root too: `chmod` does not stop root (the
/// tests run as root in CI), `chattr +i` does. Skipped, saying why, on a file system
/// without the immutable attribute or without the privilege to set it.
#[test]
fn reading_commands_work_on_an_immutable_file_and_directory() {
    let env = Env::new();
    recorded_store(&env);
    let journal = env.path("test.idemdb-journal");
    let guard = match Immutable::set(&[env.db.clone(), journal, env.dir.path().to_owned()]) {
        Ok(guard) => guard,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    // The files are really out of reach: a writing command fails.
    env.cmd()
        .args(["run", "--key", "new", "--", "true"])
        .assert()
        .failure();
    every_reading_command_reads_without_writing(&env, env.dir.path(), &[]);
    drop(guard);
}

/// A small tmpfs mounted on a directory until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount is not available: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails for want of space.
fn fill(dir: &Path) {
    let mut file = std::fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Then page by page, and byte by byte: not a byte is left.
    for size in [4096, 1] {
        let small = vec![0x5au8; size];
        while file.write_all(&small).is_ok() {}
    }
    let _ = file.sync_all();
    let probe = std::fs::write(dir.join("probe"), [0u8; 4096]);
    assert!(
        matches!(&probe, Err(e) if e.kind() == std::io::ErrorKind::StorageFull),
        "the disk is full: {probe:?}"
    );
    let _ = std::fs::remove_file(dir.join("probe"));
}

/// A full disk: a tmpfs filled to the last byte. Skipped, saying why, where a tmpfs
/// cannot be mounted (not root, or no mount privilege in the container).
#[test]
fn reading_commands_work_on_a_full_disk() {
    let outer = Env::new();
    let mount = outer.path("small");
    let _tmpfs = match Tmpfs::mount(&mount, "128m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let env = Env {
        dir: tempfile::tempdir_in(&mount).expect("dir on the tmpfs"),
        db: PathBuf::new(),
    };
    let env = Env {
        db: env.dir.path().join("test.idemdb"),
        ..env
    };
    recorded_store(&env);
    fill(env.dir.path());
    every_reading_command_reads_without_writing(&env, env.dir.path(), &["filler"]);
}

/// Whether another process holds the store now: a reader cannot get in without waiting.
fn store_held(env: &Env) -> bool {
    env.std_cmd()
        .args(["get", "--lock-wait", "0s", "done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("probe")
        .code()
        == Some(LOCKED)
}

/// Starts a run whose COMMAND waits for the file `go`, then exits 3; `--lock-wait` is a
/// tenth of a second, which recording a result must not heed.
fn spawn_gated_run(env: &Env, key: &str) -> std::process::Child {
    env.std_cmd()
        .args(["run", "--lock-wait", "100ms", "--key", key, "--"])
        .args([
            "sh",
            "-c",
            "touch started; i=0; while [ ! -e go ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; exit 3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the run")
}

/// The run's COMMAND ended while another process held the store: the run waited, recorded
/// the result, and exited with COMMAND's status; the result is there to replay.
fn assert_recorded(env: &Env, run: std::process::Child, key: &str) -> String {
    let out = run.wait_with_output().expect("wait for the run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let get = env
        .cmd()
        .args(["get", "--json", key])
        .output()
        .expect("get");
    assert!(get.status.success());
    let record: serde_json::Value = serde_json::from_slice(&get.stdout).expect("json");
    assert_eq!(record["state"], "completed", "{record}");
    stderr
}

/// The scenario: an `import` holds the store for 20 s (its input stays open) while
/// a run's COMMAND finishes. The run waits the whole time, says so every few seconds, and
/// records the result.
#[test]
fn a_run_records_its_result_while_an_import_holds_the_store_for_twenty_seconds() {
    const HOLD: Duration = Duration::from_secs(20);
    let env = Env::new();
    recorded_store(&env);
    let run = spawn_gated_run(&env, "k");
    wait_until("COMMAND to start", || env.path("started").exists());
    let mut import = env
        .std_cmd()
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the import");
    wait_until("the import to hold the store", || store_held(&env));
    let held_since = Instant::now();
    env.touch("go");
    std::thread::sleep(HOLD.saturating_sub(held_since.elapsed()));
    assert!(store_held(&env), "the import held the store throughout");
    drop(import.stdin.take());
    let _ = wait_exit(&mut import);
    let stderr = assert_recorded(&env, run, "k");
    assert!(
        stderr.contains("waiting to record COMMAND's result"),
        "the wait is reported: {stderr}"
    );
}

/// Builds a store of `n` completed records through `idemdb import`.
fn store_of(env: &Env, n: usize) {
    let mut lines = String::from("{\"idemdb_export\":1,\"exported_at\":1796694509130}\n");
    for i in 0..n {
        lines.push_str(&format!(
            "{{\"scope\":\"bulk\",\"key\":\"r{i}\",\"state\":\"completed\",\"fingerprint\":\"{}\",\"created_at\":1796694509047,\"expires_at\":null,\"attempt\":1,\"completed_at\":1796694509095,\"response_base64\":\"\"}}\n",
            "ab".repeat(32)
        ));
    }
    std::fs::write(env.path("records.exp"), lines).expect("write export");
    env.cmd()
        .args(["import", "--no-trailer", "records.exp"])
        .assert()
        .success();
}

/// `check` and `compact` hold the store while they work (on 50,000 records, a few seconds
/// in a debug build): a run whose COMMAND ends meanwhile waits for them, far past its
/// `--lock-wait`, and records its result.
#[test]
fn a_run_records_its_result_while_check_or_compact_holds_the_store() {
    let env = Env::new();
    recorded_store(&env);
    store_of(&env, 50_000);
    for (i, tool) in ["check", "compact"].into_iter().enumerate() {
        let key = format!("k{i}");
        let _ = std::fs::remove_file(env.path("go"));
        let _ = std::fs::remove_file(env.path("started"));
        let run = spawn_gated_run(&env, &key);
        wait_until("COMMAND to start", || env.path("started").exists());
        let mut holder = env
            .std_cmd()
            .arg(tool)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the tool");
        wait_until("the tool to hold the store", || store_held(&env));
        env.touch("go");
        assert_eq!(wait_exit(&mut holder), 0, "{tool} succeeds");
        assert_recorded(&env, run, &key);
    }
}

/// 100 runs on new keys at once, with the default settings, never give up on the lock
/// (74) nor fail to record (76). Each run holds the store twice, for as long as an open of
/// the store takes; the 200,000 records make that long in a debug build (seconds
/// a run), so the store here has 5,000, which keeps the test near 20 s on two cores: the
/// processes queue for the lock the same way.
#[test]
fn a_hundred_runs_at_once_never_give_up_on_the_lock() {
    let env = Env::new();
    store_of(&env, 5_000);
    let started = Instant::now();
    let children: Vec<_> = (0..100)
        .map(|i| spawn_run(&env, &format!("new{i}")))
        .collect();
    let mut failures = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        if !out.status.success() {
            failures.push(format!(
                "run {i}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!("100 runs took {:?}", started.elapsed());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A store its holder left without closing (killed): redb must repair it before anything
/// reads it, so the first reading command opens it writable once; from then on reading
/// writes nothing again.
#[test]
fn after_a_crash_the_first_reader_repairs_the_store_and_later_readers_write_nothing() {
    let env = Env::new();
    recorded_store(&env);
    let mut import = env
        .std_cmd()
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the import");
    wait_until("the import to hold the store", || store_held(&env));
    import.kill().expect("kill the import");
    let _ = import.wait();
    env.cmd().args(["get", "done"]).assert().success();
    every_reading_command_reads_without_writing(&env, env.dir.path(), &[]);
}

/// Only a signal ends the wait to record: the run exits 128+N, and the key is left
/// abandoned (the next run with the default `--on-abandoned fail` exits 72).
#[test]
fn a_signal_ends_the_wait_to_record_and_leaves_the_key_abandoned() {
    let env = Env::new();
    recorded_store(&env);
    let mut run = spawn_gated_run(&env, "k");
    wait_until("COMMAND to start", || env.path("started").exists());
    let mut import = env
        .std_cmd()
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the import");
    wait_until("the import to hold the store", || store_held(&env));
    env.touch("go");
    // The run says it is waiting (every 5 s) before it is stopped.
    let mut lines = StderrLines::follow(run.stderr.take().expect("stderr"));
    lines.wait_for("waiting to record");
    let killed = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(wait_exit(&mut run), 128 + 15);
    drop(import.stdin.take());
    let _ = wait_exit(&mut import);
    env.cmd()
        .args(["run", "--lock-wait", "100ms", "--key", "k", "--"])
        .args([
            "sh",
            "-c",
            "touch started; i=0; while [ ! -e go ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; exit 3",
        ])
        .assert()
        .code(ABANDONED);
}

/// A claim lost while the run waits to record is still reported as lost, truthfully: the
/// holder of the store deletes the key, and once the lock is free the run says the record
/// was deleted while COMMAND ran or while it waited for the store, and exits 76 with
/// nothing recorded in the key's name.
#[test]
fn a_claim_lost_while_waiting_to_record_is_reported_as_lost() {
    let env = Env::new();
    recorded_store(&env);
    let run = spawn_gated_run(&env, "k");
    wait_until("COMMAND to start", || env.path("started").exists());
    let holder = idemdb::Store::open(&env.db).expect("hold the store");
    assert!(holder.delete("default", "k").expect("delete the key"));
    env.touch("go");
    // Long enough for the run to be waiting for the lock, and to say how long it waited.
    std::thread::sleep(Duration::from_secs(2));
    holder.close().expect("release the store");
    let out = run.wait_with_output().expect("wait for the run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{stderr}");
    assert!(
        stderr.contains("record was deleted while COMMAND ran or while this run then waited"),
        "{stderr}"
    );
    assert!(stderr.contains("the key is free"), "{stderr}");
    env.cmd().args(["get", "k"]).assert().code(NOT_FOUND);
}

/// A read-only mount: a tmpfs remounted read-only after the store was written. Skipped,
/// saying why, where a tmpfs cannot be mounted.
#[test]
fn reading_commands_work_on_a_read_only_mount() {
    let outer = Env::new();
    let mount = outer.path("ro");
    let tmpfs = match Tmpfs::mount(&mount, "128m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let env = Env {
        dir: tempfile::tempdir_in(&mount).expect("dir on the tmpfs"),
        db: PathBuf::new(),
    };
    let env = Env {
        db: env.dir.path().join("test.idemdb"),
        ..env
    };
    recorded_store(&env);
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mount)
        .status()
        .expect("mount");
    assert!(remounted.success(), "remounting read-only");
    env.cmd()
        .args(["run", "--key", "new", "--", "true"])
        .assert()
        .failure();
    every_reading_command_reads_without_writing(&env, env.dir.path(), &[]);
    // The temporary directory cannot be removed from a read-only mount: unmounting is the
    // clean-up.
    std::mem::forget(env);
    drop(tmpfs);
}
