//! What a run writes: a replay and a `get` leave both files of the store byte for byte
//! unchanged, and a fresh run changes only the journal (the store file is written when
//! the journal asks for a fold, by `check`, `compact` and `import`).

mod cli_support;

use cli_support::*;

fn files(env: &Env) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(&env.db).expect("store file"),
        std::fs::read(env.path("test.idemdb-journal")).expect("journal"),
    )
}

#[test]
fn a_replay_and_a_get_write_nothing_and_a_fresh_run_only_the_journal() {
    let env = Env::new();
    for key in ["a", "b"] {
        env.cmd()
            .args(["run", "--key", key, "--", "echo", "hello"])
            .assert()
            .success();
    }
    let before = files(&env);
    env.cmd()
        .args(["run", "--key", "a", "--", "echo", "hello"])
        .assert()
        .success()
        .stdout("hello\n");
    env.cmd().args(["get", "a"]).assert().success();
    assert!(
        files(&env) == before,
        "a replay or a get wrote to the store"
    );

    env.cmd()
        .args(["run", "--key", "c", "--", "echo", "hello"])
        .assert()
        .success();
    let after = files(&env);
    assert!(after.0 == before.0, "a fresh run wrote the store file");
    assert!(after.1 != before.1, "a fresh run is journaled");
}
