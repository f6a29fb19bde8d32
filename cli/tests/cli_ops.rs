//! The operator commands (get, ls, rm, stats, sweep, compact) in text and JSON, and the
//! export → import round trip.

mod cli_support;

use std::time::{SystemTime, UNIX_EPOCH};

use cli_support::*;
use predicates::prelude::*;
use serde_json::{Value, json};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// An export of hand-made records: an abandoned claim (with owner and abandonment time),
/// a live claim of another host, and a record that expired an hour ago.
fn crafted_export() -> String {
    let now = now_ms();
    let header = json!({ "idemdb_export": 2, "exported_at": now });
    let abandoned = json!({
        "scope": "jobs", "key": "stuck-1", "state": "in_flight",
        "fingerprint": "ab".repeat(32), "created_at": now - 7_200_000,
        "expires_at": now + 86_400_000, "attempt": 2,
        "claim": "0123456789abcdef0123456789abcdef", "lease_until": now - 3_600_000,
        "abandoned_at": now - 3_600_000,
        "owner_base64": "aWRlbWRiLXJ1bi8xIGhvc3Q9ZWxzZXdoZXJlIHBpZD0x",
    });
    let elsewhere = json!({
        "scope": "jobs", "key": "running-elsewhere", "state": "in_flight",
        "fingerprint": "cd".repeat(32), "created_at": now - 60_000,
        "expires_at": null, "attempt": 1,
        "claim": "fedcba9876543210fedcba9876543210", "lease_until": now + 3_600_000,
        "owner_base64": "aWRlbWRiLXJ1bi8xIGhvc3Q9ZWxzZXdoZXJlIHBpZD0x",
    });
    let expired = json!({
        "scope": "jobs", "key": "old", "state": "completed",
        "fingerprint": "ef".repeat(32), "created_at": now - 7_200_000,
        "expires_at": now - 3_600_000, "attempt": 1,
        "completed_at": now - 7_100_000, "response_base64": "AAEC/w==",
    });
    let trailer = json!({ "idemdb_export_end": true, "records": 3 });
    format!("{header}\n{abandoned}\n{elsewhere}\n{expired}\n{trailer}\n")
}

fn records(stdout: &[u8]) -> Vec<Value> {
    json_lines(stdout)
}

#[test]
fn get_ls_rm_stats_sweep_and_compact() {
    let env = Env::new();
    env.cmd()
        .args(["run", "--scope", "mail", "--key", "welcome-1", "--"])
        .args(["sh", "-c", "echo hello; echo note >&2"])
        .assert()
        .success();
    env.cmd()
        .args(["run", "--scope", "mail", "--key", "welcome-2", "--"])
        .args(["sh", "-c", "exit 9"])
        .assert()
        .code(9);
    env.cmd()
        .args(["import", "-"])
        .write_stdin(crafted_export())
        .assert()
        .success()
        .stdout("imported 3 records\n");

    // get, as text and as JSON.
    env.cmd()
        .args(["get", "--scope", "mail", "welcome-1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("completed"))
        .stdout(predicate::str::contains("exit status 0"))
        .stdout(predicate::str::contains(r#""hello\n""#));
    let got = env
        .cmd()
        .args(["--json", "get", "--scope", "mail", "welcome-1"])
        .output()
        .expect("get");
    let got = json(&got.stdout);
    assert_eq!(got["status"], "completed");
    assert_eq!(got["run"]["exit_code"], 0);
    assert_eq!(got["run"]["stdout"], "hello\n");
    assert_eq!(got["run"]["stderr"], "note\n");
    let got = env
        .cmd()
        .args(["--json", "get", "--scope", "jobs", "running-elsewhere"])
        .output()
        .expect("get");
    let got = json(&got.stdout);
    assert_eq!(got["status"], "in_flight");
    assert_eq!(got["owner"], "pid 1 on elsewhere");
    assert_eq!(got["owner_alive"], "unknown");
    env.cmd()
        .args(["get", "--scope", "mail", "nope"])
        .assert()
        .code(NOT_FOUND);

    // ls: stuck first, then in flight, then completed; expired only on request.
    let by = |args: &[&str]| -> Vec<String> {
        let out = env
            .cmd()
            .arg("--json")
            .arg("ls")
            .args(args)
            .output()
            .expect("ls");
        assert!(out.status.success());
        records(&out.stdout)
            .iter()
            .map(|r| r["key"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        by(&[]),
        ["stuck-1", "running-elsewhere", "welcome-1", "welcome-2"]
    );
    assert_eq!(by(&["--state", "stuck"]), ["stuck-1"]);
    assert_eq!(by(&["--state", "completed"]), ["welcome-1", "welcome-2"]);
    assert_eq!(by(&["--state", "expired"]), ["old"]);
    assert_eq!(
        by(&["--state", "in_flight,abandoned"]),
        ["stuck-1", "running-elsewhere"]
    );
    assert_eq!(by(&["--scope", "mail", "--limit", "1"]), ["welcome-1"]);
    assert_eq!(by(&["--older-than", "1h"]), ["stuck-1"]);
    assert_eq!(by(&["--newer-than", "10m", "--scope", "mail"]).len(), 2);
    env.cmd()
        .arg("ls")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("SCOPE"))
        .stdout(predicate::str::contains("exit status 9"));

    // stats.
    let stats = env.cmd().args(["--json", "stats"]).output().expect("stats");
    let stats = json(&stats.stdout);
    assert_eq!(stats["completed"], 2);
    assert_eq!(stats["abandoned"], 1);
    assert_eq!(stats["in_flight"], 1);
    assert_eq!(stats["stuck"], 1);
    assert_eq!(stats["expired"], 1);
    assert_eq!(stats["sweeper"]["awaiting_sweep"], 1);
    assert_eq!(stats["oldest_in_flight"]["key"], "stuck-1");
    assert!(stats["file_bytes"].as_u64().unwrap_or(0) > 0);
    env.cmd()
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains("1 expired awaiting sweep"));

    // sweep deletes the expired record; rm deletes a live one.
    let swept = env.cmd().args(["--json", "sweep"]).output().expect("sweep");
    assert_eq!(json(&swept.stdout)["deleted"], 1);
    assert_eq!(by(&["--state", "expired"]), Vec::<String>::new());
    env.cmd()
        .args(["rm", "--scope", "jobs", "stuck-1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deleted"));
    env.cmd()
        .args(["rm", "--scope", "jobs", "stuck-1"])
        .assert()
        .code(NOT_FOUND);
    assert_eq!(by(&["--state", "stuck"]), Vec::<String>::new());

    // compact, offline.
    let compacted = env
        .cmd()
        .args(["--json", "compact"])
        .output()
        .expect("compact");
    assert!(compacted.status.success());
    let compacted = json(&compacted.stdout);
    assert!(compacted["size_after"].as_u64() <= compacted["size_before"].as_u64());
    env.cmd().arg("check").assert().success();
}

#[test]
fn export_then_import_round_trips_every_record_exactly() {
    let env = Env::new();
    let job = [
        "sh",
        "-c",
        "echo ran >> side; printf 'bin\\000\\377'; exit 2",
    ];
    env.cmd()
        .args(["run", "--key", "binary", "--"])
        .args(job)
        .assert()
        .code(2);
    env.cmd()
        .args([
            "run", "--ttl", "forever", "--scope", "ids", "--key", "user-7", "--",
        ])
        .args(["echo", "created"])
        .assert()
        .success();
    env.cmd()
        .args(["import", "-"])
        .write_stdin(crafted_export())
        .assert()
        .success();

    let exported = env.path("backup.jsonl");
    env.cmd()
        .args(["export", "--include-expired", "--output"])
        .arg(&exported)
        .assert()
        .success()
        .stdout("exported 5 records to ".to_owned() + &exported.display().to_string() + "\n");
    let original = std::fs::read_to_string(&exported).expect("read export");
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[6], r#"{"idemdb_export_end":true,"records":5}"#);
    for line in &lines {
        let _: Value = serde_json::from_str(line).expect("each line is JSON");
    }

    // Into a fresh store, then out again: identical but for the header's time.
    let restored = env.path("restored.idemdb");
    env.cmd()
        .arg("--db")
        .arg(&restored)
        .args(["--json", "import"])
        .arg(&exported)
        .assert()
        .success()
        .stdout(r#"{"imported":5,"kept":0}"#.to_owned() + "\n");
    let again = env
        .cmd()
        .arg("--db")
        .arg(&restored)
        .args(["export", "--include-expired"])
        .output()
        .expect("export again");
    assert!(again.status.success());
    let again = String::from_utf8(again.stdout).expect("UTF-8");
    assert_eq!(again.lines().skip(1).collect::<Vec<_>>(), lines[1..]);

    // The restored store replays the recorded run without running it.
    env.cmd()
        .arg("--db")
        .arg(&restored)
        .args(["run", "--quiet", "--key", "binary", "--"])
        .args(job)
        .assert()
        .code(2)
        .stdout(predicate::eq(&b"bin\0\xff"[..]));
    assert_eq!(env.count_lines("side"), 1);

    // Importing again keeps what is there unless told to overwrite.
    env.cmd()
        .arg("--db")
        .arg(&restored)
        .arg("import")
        .arg(&exported)
        .assert()
        .success()
        .stdout(predicate::str::contains("kept 4 existing"));
    env.cmd()
        .arg("--db")
        .arg(&restored)
        .args(["import", "--overwrite"])
        .arg(&exported)
        .assert()
        .success()
        .stdout("imported 5 records\n");
}

#[test]
fn import_refuses_bad_input_and_names_the_line() {
    let env = Env::new();
    let header = r#"{"idemdb_export":2,"exported_at":0}"#;
    let good = crafted_export();
    let good_record = good.lines().nth(1).expect("a record line");
    let cases = [
        (String::new(), "empty"),
        ("{\"scope\":\"a\"}\n".to_owned(), "line 1"),
        (
            r#"{"idemdb_export":9,"exported_at":0}"#.to_owned() + "\n",
            "format 9",
        ),
        (format!("{header}\n{good_record}\nnot json\n"), "line 3"),
        (
            format!("{header}\n{}\n", good_record.replace("\"ab", "\"zz")),
            "fingerprint",
        ),
        (
            format!(
                "{header}\n{}\n",
                good_record.replace("stuck-1", "bad\\u0007key")
            ),
            "line 2",
        ),
        (
            format!("{header}\n{}\n", good_record.replace("jobs", "")),
            "scope",
        ),
    ];
    for (input, message) in cases {
        env.cmd()
            .arg("import")
            .write_stdin(input.clone())
            .assert()
            .code(INVALID_INPUT)
            .stderr(predicate::str::contains(message));
    }
    // The bad third line did not undo the good second one.
    env.cmd()
        .args(["get", "--scope", "jobs", "stuck-1"])
        .assert()
        .success();
}
