//! Damage through the command line: `check` reports a damaged store file (the path, what
//! is damaged, how many records can still be read) in text and JSON with exit 75, `export
//! --salvage` writes what can still be read, and a store file missing beside its journal
//! is refused, never recreated.

mod cli_support;

use cli_support::*;

/// A store of 200 runs whose record of key `k100` has 16 bytes changed on disk.
fn damaged_store(env: &Env) {
    for i in 0..200 {
        env.cmd()
            .args(["run", "--key", &format!("k{i}"), "--", "echo"])
            .arg(format!("output-of-run-{i:04}"))
            .assert()
            .success();
    }
    // Runs leave their results in the journal; a check folds them into the store file.
    env.cmd().arg("check").assert().success();
    let mut bytes = std::fs::read(&env.db).expect("read the store");
    let needle = b"output-of-run-0100";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record is in the file");
    for b in &mut bytes[at..at + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&env.db, &bytes).expect("damage the store");
}

#[test]
fn check_reports_a_damaged_store_file_with_its_path_and_readable_records() {
    let env = Env::new();
    damaged_store(&env);
    let out = env.cmd().arg("check").assert().code(CORRUPT);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let path = env.db.display().to_string();
    assert!(stdout.contains(&path), "{stdout}");
    assert!(stdout.contains("DAMAGED"), "{stdout}");
    assert!(stdout.contains("200 records still readable"), "{stdout}");
    assert!(stdout.contains("damaged_file"), "{stdout}");

    let out = env.cmd().args(["--json", "check"]).assert().code(CORRUPT);
    let report = json(&out.get_output().stdout);
    assert_eq!(report["pages"], "damaged");
    assert_eq!(report["healthy"], false);
    assert_eq!(report["records"], 200);
    assert!(
        report["problems"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&path)),
        "{report}"
    );
}

#[test]
fn a_damaged_store_file_still_serves_other_keys_and_salvages_every_record() {
    let env = Env::new();
    damaged_store(&env);
    // A replay: the recorded output, from a store whose other page is damaged.
    env.cmd()
        .args(["run", "--key", "k5", "--", "echo", "output-of-run-0005"])
        .assert()
        .success()
        .stdout("output-of-run-0005\n");
    let out = env
        .cmd()
        .args(["export", "--salvage", "-o", "salvaged.exp"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("salvaged 200 records"), "{stderr}");
    assert_eq!(
        env.count_lines("salvaged.exp"),
        202,
        "a header, 200 records and the trailer"
    );
    let fresh = env.path("fresh.idemdb");
    env.cmd()
        .arg("--db")
        .arg(&fresh)
        .args(["import", "salvaged.exp"])
        .assert()
        .success();
    // A replay from the new store.
    env.cmd()
        .arg("--db")
        .arg(&fresh)
        .args(["run", "--key", "k7", "--", "echo", "output-of-run-0007"])
        .assert()
        .success()
        .stdout("output-of-run-0007\n");
}

#[test]
fn a_store_file_missing_beside_its_journal_is_refused_not_recreated() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--key", "a", "--", "true"])
        .assert()
        .success();
    std::fs::remove_file(&env.db).expect("delete the store file");
    let journal = env.path("test.idemdb-journal");
    let before = std::fs::read(&journal).expect("journal");
    let out = env
        .cmd()
        .args(["run", "--key", "b", "--", "true"])
        .assert()
        .code(CORRUPT);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains(&env.db.display().to_string()), "{stderr}");
    assert!(stderr.contains("removing the journal"), "{stderr}");
    assert!(!env.db.exists(), "no new store");
    assert_eq!(std::fs::read(&journal).expect("journal"), before);
}
