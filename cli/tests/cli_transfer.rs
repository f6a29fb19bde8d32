//! Exports and imports are checkable: an export ends with a trailer counting its records,
//! an import of a file cut short or miscounted fails (exit 73) after saying how many
//! records went in, and `export -o` never leaves a partial file under the name asked for.

mod cli_support;

use cli_support::*;

/// A store with `n` records, exported to `name` in the test directory; returns the
/// export's lines.
fn exported(env: &Env, n: usize, name: &str) -> Vec<String> {
    fill_store(&env.db, n);
    env.cmd().args(["export", "-o", name]).assert().success();
    let text = std::fs::read_to_string(env.path(name)).expect("read the export");
    text.lines().map(str::to_owned).collect()
}

fn import_into(env: &Env, store: &str, input: String, extra: &[&str]) -> std::process::Output {
    env.cmd()
        .args(["--db", store])
        .args(extra)
        .arg("import")
        .write_stdin(input)
        .output()
        .expect("import")
}

#[test]
fn an_export_ends_with_a_trailer_counting_its_records() {
    let env = Env::new();
    let lines = exported(&env, 3, "out.exp");
    assert_eq!(lines.len(), 5);
    assert!(
        lines[0].starts_with(r#"{"idemdb_export":2,"#),
        "{}",
        lines[0]
    );
    assert_eq!(lines[4], r#"{"idemdb_export_end":true,"records":3}"#);
    // On stdout as well.
    let out = env.cmd().arg("export").output().expect("export");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().last(),
        Some(r#"{"idemdb_export_end":true,"records":3}"#)
    );
}

#[test]
fn an_import_cut_short_fails_after_saying_how_many_went_in() {
    let env = Env::new();
    let lines = exported(&env, 10, "out.exp");
    // `head -n 5 out.exp | idemdb import`: the header and 4 records.
    let cut = lines[..5].join("\n") + "\n";
    let out = import_into(&env, "cut.idemdb", cut.clone(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{stderr}");
    assert!(stderr.contains("without the export's trailer"), "{stderr}");
    assert!(stderr.contains("4 records were imported"), "{stderr}");
    // The same in JSON, with the counts as fields.
    let out = import_into(&env, "cut-json.idemdb", cut, &["--json"]);
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
    let error = json(&out.stderr);
    assert_eq!(error["kind"], "invalid_input");
    assert_eq!(error["imported"], 4);
    assert_eq!(error["kept"], 0);
}

#[test]
fn an_import_with_another_count_or_lines_after_the_trailer_fails() {
    let env = Env::new();
    let lines = exported(&env, 5, "out.exp");
    // A record line lost from the middle.
    let mut missing = lines.clone();
    missing.remove(3);
    let out = import_into(&env, "a.idemdb", missing.join("\n") + "\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{stderr}");
    assert!(
        stderr.contains("counts 5 records, but 4 were read"),
        "{stderr}"
    );
    assert!(stderr.contains("4 records were imported"), "{stderr}");
    // Two exports joined: lines after the first trailer.
    let joined = lines.join("\n") + "\n" + &lines[1] + "\n";
    let out = import_into(&env, "b.idemdb", joined, &[]);
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after the export's trailer"));
}

#[test]
fn an_import_stopped_by_a_bad_line_says_how_many_went_in() {
    let env = Env::new();
    let lines = exported(&env, 5, "out.exp");
    let mut broken = lines.clone();
    broken[4] = "not json".to_owned();
    let out = import_into(&env, "a.idemdb", broken.join("\n") + "\n", &["--json"]);
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
    let error = json(&out.stderr);
    assert_eq!(error["imported"], 3);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("line 5"),
        "{error}"
    );
}

#[test]
fn a_format_1_export_is_imported_only_with_no_trailer() {
    let env = Env::new();
    let lines = exported(&env, 2, "out.exp");
    let old = std::iter::once(r#"{"idemdb_export":1,"exported_at":0}"#.to_owned())
        .chain(lines[1..3].iter().cloned())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let out = import_into(&env, "a.idemdb", old.clone(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{stderr}");
    assert!(stderr.contains("--no-trailer"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    env.cmd()
        .args(["--db", "a.idemdb", "import", "--no-trailer"])
        .write_stdin(old)
        .assert()
        .success()
        .stdout("imported 2 records\n");
    // --no-trailer still checks a trailer that is there.
    let mut miscounted = lines.clone();
    miscounted.remove(1);
    let out = import_into(
        &env,
        "b.idemdb",
        miscounted.join("\n") + "\n",
        &["--no-trailer"],
    );
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
}

#[test]
fn a_failed_export_leaves_no_partial_file() {
    let env = Env::new();
    exported(&env, 3000, "whole.exp");
    let store_size = std::fs::metadata(&env.db).expect("store size").len();
    let export_size = std::fs::metadata(env.path("whole.exp"))
        .expect("export size")
        .len();
    // A file-size limit between the two: the store opens, the export's writes fail
    // (EFBIG, with SIGXFSZ ignored) part way through.
    let limit_blocks = (store_size + 32 * 1024) / 512;
    assert!(
        limit_blocks * 512 < export_size,
        "{store_size} {export_size}"
    );
    let script =
        format!("trap '' XFSZ; ulimit -f {limit_blocks} && exec \"$0\" export -o part.exp");
    let out = assert_cmd::Command::new("sh")
        .args(["-c", &script])
        .arg(bin())
        .current_dir(env.dir.path())
        .env("IDEMDB_PATH", &env.db)
        .timeout(PATIENCE)
        .output()
        .expect("run the export");
    let left: Vec<String> = std::fs::read_dir(env.dir.path())
        .expect("list the directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("part.exp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{stderr}");
    assert!(stderr.contains("part.exp"), "{stderr}");
}

#[test]
fn an_interrupted_export_leaves_no_file() {
    let env = Env::new();
    fill_store(&env.db, 100_000);
    let partial = |env: &Env| -> Vec<String> {
        std::fs::read_dir(env.dir.path())
            .expect("list the directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("out.exp"))
            .collect()
    };
    let mut export = env
        .std_cmd()
        .args(["export", "-o", "out.exp"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the export");
    wait_until("the export to start writing", || !partial(&env).is_empty());
    signal(export.id(), "INT");
    let code = wait_exit(&mut export);
    let mut stderr = String::new();
    if let Some(mut pipe) = export.stderr.take() {
        use std::io::Read;
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    // Either the signal came in time (130, nothing left) or the export had finished (0,
    // the whole file); never a partial file under either name.
    match code {
        130 => {
            assert!(partial(&env).is_empty(), "left behind: {:?}", partial(&env));
            assert!(stderr.contains("nothing written to out.exp"), "{stderr}");
        }
        0 => assert_eq!(partial(&env), ["out.exp"]),
        other => panic!("exit {other}: {stderr}"),
    }
}
