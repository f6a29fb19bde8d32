//! Invariant checks for the cargo-fuzz targets under `fuzz/` (feature `fuzzing`).
//!
//! The code these targets exercise is crate-private, so the checks live here: one file and
//! one function per target (the file named like the target, with its seeds), taking the fuzzer's raw bytes and panicking (with a message saying which
//! invariant broke) when the engine misbehaves. The targets in `fuzz/fuzz_targets/` only call
//! them, and `tests/fuzz_corpora.rs` replays every committed corpus file and crash input
//! through the same functions under plain `cargo test --all-features`.
//!
//! Every check takes plain bytes, so a corpus file means the same thing to libFuzzer and to
//! the replay test. Where a target wants structure (several keys, a journal image), it is
//! derived from the bytes in a documented way, so seeds can be written by hand or by
//! [`seed_corpus`], which builds the committed seeds with the real encoders.
//!
//! Adding a target: write its check and seeds in a file of its own here, list it in
//! [`TARGETS`] and [`seed_corpus`], add
//! `fuzz/fuzz_targets/<name>.rs` (calling the check) and its `[[bin]]` in `fuzz/Cargo.toml`,
//! and commit seeds in `fuzz/corpus/<name>/`. `fuzz/run.sh` (and so CI) and the replay test
//! pick it up from there; the replay test fails until all of these exist.
//!
//! Not part of the API: no stability promise, hidden from the docs.

mod canonical_json;
mod journal_frame;
mod key_parse;
mod op_sequence;
mod record_decode;
mod samples;

pub use canonical_json::canonical_json_check;
pub use journal_frame::{FUZZ_JOURNAL_ID, journal_frame};
pub use key_parse::{KEY_SEPARATOR, key_parse};
pub use op_sequence::{MAX_OP_BYTES, op_sequence};
pub use record_decode::record_decode;

use crate::canonical_json::MAX_DEPTH;

/// A fuzz check: takes the fuzzer's bytes, panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every fuzz target by name (the name of its file in `fuzz/fuzz_targets/` and of its
/// directories under `fuzz/corpus/` and `fuzz/artifacts/`), with its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("record_decode", record_decode),
    ("key_parse", key_parse),
    ("canonical_json", canonical_json_check),
    ("journal_frame", journal_frame),
    ("op_sequence", op_sequence),
];

/// One seed corpus file.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target it seeds (a name in [`TARGETS`]).
    pub target: &'static str,
    /// Its file name under `fuzz/corpus/<target>/`.
    pub name: String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// The committed seed corpora, built with the real encoders: valid inputs of every shape
/// and damaged variants of them. `tests/fuzz_corpora.rs` has an ignored test that writes
/// them to `fuzz/corpus/`.
pub fn seed_corpus() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        });
    };
    for (name, bytes) in record_decode::seeds() {
        add("record_decode", &name, bytes);
    }
    for (name, bytes) in key_parse::seeds() {
        add("key_parse", &name, bytes);
    }
    for (name, text) in canonical_json::JSON_SEEDS {
        add("canonical_json", name, text.as_bytes().to_vec());
    }
    add(
        "canonical_json",
        "invalid_utf8.json",
        b"[\"\xc3\x28\"]".to_vec(),
    );
    add("canonical_json", "deep_128.json", {
        let mut v = "[".repeat(MAX_DEPTH).into_bytes();
        v.extend_from_slice("]".repeat(MAX_DEPTH).as_bytes());
        v
    });
    add("canonical_json", "deep_129.json", {
        let mut v = "{\"a\":".repeat(MAX_DEPTH + 1).into_bytes();
        v.extend_from_slice(b"1");
        v.extend_from_slice("}".repeat(MAX_DEPTH + 1).as_bytes());
        v
    });
    for (name, bytes) in journal_frame::seeds() {
        add("journal_frame", &name, bytes);
    }
    for (name, bytes) in op_sequence::seeds() {
        add("op_sequence", name, bytes);
    }
    seeds
}
