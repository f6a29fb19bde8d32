//! Replays the fuzz corpora under plain `cargo test --all-features`: every seed in
//! `fuzz/corpus/<target>/` and every crash input in `fuzz/artifacts/<target>/` goes through
//! the target's checks (`idemdb::fuzz_checks`), so a regression is caught on the stable
//! toolchain without cargo-fuzz.
//!
//! The seeds are written by `cargo test --all-features --test fuzz_corpora -- --ignored
//! write_seed_corpora` (it only adds or overwrites the generated files).
#![cfg(feature = "fuzzing")]

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use idemdb::fuzz_checks::{Check, TARGETS, seed_corpus};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file, and returns a line per file that made it panic.
fn replay(check: Check, files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let data = fs::read(file).expect("read a corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    failures
}

#[test]
fn every_target_has_a_check_and_a_seed_corpus() {
    let fuzz = fuzz_dir();
    let targets = files(&fuzz.join("fuzz_targets"));
    assert!(!targets.is_empty(), "no fuzz targets in {}", fuzz.display());
    for target in targets {
        let name = target
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a target file name");
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz target {name} has no entry in idemdb::fuzz_checks::TARGETS"
        );
    }
    for (name, _) in TARGETS {
        assert!(
            fuzz.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "{name} is in TARGETS but fuzz/fuzz_targets/{name}.rs is missing"
        );
        let corpus = fuzz.join("corpus").join(name);
        assert!(
            !files(&corpus).is_empty(),
            "the seed corpus {} is missing or empty",
            corpus.display()
        );
    }
}

#[test]
fn corpora_and_crash_inputs_pass_their_checks() {
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, check) in TARGETS {
        let mut inputs = files(&fuzz.join("corpus").join(name));
        inputs.extend(files(&fuzz.join("artifacts").join(name)));
        replayed += inputs.len();
        failures.extend(replay(*check, &inputs));
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} fuzz inputs fail their checks:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn generated_seeds_pass_their_checks() {
    for seed in seed_corpus() {
        let (_, check) = TARGETS
            .iter()
            .find(|(t, _)| *t == seed.target)
            .expect("a seed for a known target");
        check(&seed.bytes);
    }
}

/// Writes the generated seeds into `fuzz/corpus/<target>/`.
#[test]
#[ignore = "writes files: run on purpose to regenerate the seed corpora"]
fn write_seed_corpora() {
    let corpus = fuzz_dir().join("corpus");
    for seed in seed_corpus() {
        let dir = corpus.join(seed.target);
        fs::create_dir_all(&dir).expect("create a corpus directory");
        fs::write(dir.join(&seed.name), &seed.bytes).expect("write a seed");
    }
}
