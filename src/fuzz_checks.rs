//! Invariant checks for the cargo-fuzz targets under `fuzz/` (feature `fuzzing`).
//!
//! The code these targets exercise is crate-private, so the checks live here: one function
//! per target, taking the fuzzer's raw bytes and panicking (with a message saying which
//! invariant broke) when the engine misbehaves. The targets in `fuzz/fuzz_targets/` only call
//! them, and `tests/fuzz_corpora.rs` replays every committed corpus file and crash input
//! through the same functions under plain `cargo test --all-features`.
//!
//! Every check takes plain bytes, so a corpus file means the same thing to libFuzzer and to
//! the replay test. Where a target wants structure (several keys, a journal image), it is
//! derived from the bytes in a documented way, so seeds can be written by hand or by
//! [`seed_corpus`], which builds the committed seeds with the real encoders.
//!
//! Adding a target: write its check here and list it in [`TARGETS`], add
//! `fuzz/fuzz_targets/<name>.rs` (calling the check) and its `[[bin]]` in `fuzz/Cargo.toml`,
//! and commit seeds in `fuzz/corpus/<name>/`. `fuzz/run.sh` (and so CI) and the replay test
//! pick it up from there; the replay test fails until all of these exist.
//!
//! Not part of the API: no stability promise, hidden from the docs.

use std::borrow::Cow;
use std::collections::HashMap;

use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use crate::canonical_json::{JsonErrorKind, MAX_DEPTH, canonical_json};
use crate::codec;
use crate::error::{Error, KeyError};
use crate::fingerprint::Fingerprint;
use crate::key::{
    DEFAULT_MAX_KEY_LEN, KeyPolicy, MAX_KEY_LEN_LIMIT, MAX_SCOPE_LEN, UuidVersions, scope_prefix,
    split_storage_key, storage_key, validate_scope,
};
use crate::record::{ClaimId, Completed, Record, RecordState};
use crate::storage::journal::frame::{
    self, FILE_HEADER_LEN, FRAME_ALIGN, FrameKind, HEADER_LEN, JOURNAL_FORMAT,
};
use crate::storage::journal::{Journal, MIN_CAPACITY};
use crate::time::Timestamp;

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

// ---------------------------------------------------------------------------------------
// op_sequence

/// The most input bytes one `op_sequence` run reads: about a hundred steps, so one run
/// stays in the milliseconds.
pub const MAX_OP_BYTES: usize = 400;

/// Operation sequences (begins, completions, releases, abandons, lease extensions, clock
/// moves and jumps, sweeps, deletes, reopens, power cuts now or at a later sync, durable
/// or torn) decoded from the bytes ([`Step::sequence_from_bytes`]), run against a store on
/// the simulated faulty disk and compared with the reference model after every step.
///
/// [`Step::sequence_from_bytes`]: crate::testing::Step::sequence_from_bytes
pub fn op_sequence(data: &[u8]) {
    let steps = crate::testing::Step::sequence_from_bytes(&data[..data.len().min(MAX_OP_BYTES)]);
    let mut harness = match crate::testing::Harness::new() {
        Ok(harness) => harness,
        Err(divergence) => panic!("a fresh store on the simulated disk: {divergence}"),
    };
    if let Err(divergence) = harness.run(&steps) {
        panic!("{divergence} (steps: {steps:?})");
    }
}

/// Hand-written step sequences for the `op_sequence` corpus (see
/// [`Step::sequence_from_bytes`](crate::testing::Step::sequence_from_bytes) for the layout).
fn op_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Tags: 0 begin(scope, key, request, retention, lease), 4 complete(claim, response),
    // 6 release(claim), 7 abandon(claim, by_drop), 8 extend(claim, lease), 9 advance(x500 ms),
    // 10 jump back(x100 ms), 11 sweep, 12 delete(scope, key), 13 reopen, 14 crash(seed),
    // 15 crash at sync(k, seed).
    vec![
        (
            "claim_complete_replay",
            vec![0, 0, 0, 0, 0, 2, 4, 0, 1, 0, 0, 0, 0, 0, 2],
        ),
        (
            "conflict",
            vec![0, 0, 0, 0, 0, 2, 4, 0, 1, 0, 0, 0, 1, 0, 2],
        ),
        (
            "crash_then_replay",
            vec![0, 1, 2, 0, 0, 2, 4, 0, 3, 14, 1, 0, 1, 2, 0, 0, 2],
        ),
        (
            "crash_mid_complete",
            vec![0, 0, 1, 0, 0, 2, 15, 1, 3, 4, 0, 1, 0, 0, 1, 0, 0, 2],
        ),
        (
            "abandon_take_over",
            vec![0, 1, 0, 0, 0, 0, 7, 0, 1, 0, 1, 0, 0, 0, 2, 4, 0, 0],
        ),
        (
            "expire_and_sweep",
            vec![0, 0, 2, 0, 1, 2, 4, 0, 2, 9, 10, 11, 0, 0, 2, 0, 1, 2],
        ),
        (
            "release_reopen",
            vec![0, 1, 1, 1, 2, 1, 6, 0, 13, 0, 1, 1, 1, 2, 1, 8, 0, 2],
        ),
        (
            "jump_back",
            vec![
                0, 0, 0, 0, 1, 2, 4, 0, 0, 9, 4, 10, 30, 0, 0, 0, 0, 1, 2, 12, 0, 0,
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// record_decode

/// The record codec on arbitrary bytes: decoding never panics; whatever decodes re-encodes
/// to bytes that decode to the same record, re-encoding is a fixed point no longer than the
/// input (the encoder writes every integer in its shortest form), and no strict prefix or
/// extension of a decodable input decodes.
pub fn record_decode(data: &[u8]) {
    let Ok(record) = codec::decode(data) else {
        return;
    };
    assert!(record.attempt >= 1, "decoded a record with attempt 0");
    let encoded = codec::encode(&record).expect("a decoded record must re-encode");
    // Format 1 (still read) lacks the one-byte detached flag format 2 writes.
    let grown = usize::from(data.first() == Some(&1) && record.in_flight().is_some());
    assert!(
        encoded.len() <= data.len() + grown,
        "re-encoding grew the record from {} to {} bytes",
        data.len(),
        encoded.len()
    );
    let again = codec::decode(&encoded).expect("a re-encoded record must decode");
    assert_eq!(again, record, "the round trip changed the record");
    let twice = codec::encode(&again).expect("a decoded record must re-encode");
    assert_eq!(twice, encoded, "re-encoding is not a fixed point");

    // A record is self-delimiting: cutting it short or adding a byte is corruption, never
    // another record.
    for cut in [data.len() - 1, data.len() / 2, 1, 0] {
        assert!(
            codec::decode(&data[..cut]).is_err(),
            "a {cut}-byte prefix of a {}-byte record decoded",
            data.len()
        );
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        codec::decode(&longer).is_err(),
        "a record with a trailing byte decoded"
    );
}

// ---------------------------------------------------------------------------------------
// key_parse

/// The byte that separates the strings of a `key_parse` input. It never occurs in UTF-8.
pub const KEY_SEPARATOR: u8 = 0xff;

/// At most this many accepted scopes, and twice as many accepted keys, of one input are
/// combined into (scope, key) pairs, and four times as many splits of one concatenation.
const MAX_PIECES: usize = 8;

/// Key and scope validation under both key policies, and the storage-key framing.
///
/// Input: byte 0 is the set of UUID versions allowed (bit `i` allows version `i + 1`; 0
/// allows all), bytes 1–2 the opaque policy's `max_len` (little-endian; 0 means the default,
/// otherwise taken modulo the limit into 1 ..= [`MAX_KEY_LEN_LIMIT`]); the rest is strings
/// separated by [`KEY_SEPARATOR`], each made UTF-8 lossily.
///
/// Every string is checked as a scope, as an opaque key and as a UUID key against an
/// independent statement of the rules (accepted exactly when the rules say so, refused with
/// the error the rules name). The first accepted scopes and stored keys are paired, and the
/// first pair's concatenation is split at its first character boundaries into more pairs
/// (pairs that naive concatenation would merge); every pair is framed, and distinct pairs
/// must give distinct storage keys that split back into the pair and lie in their own
/// scope's range and no other's.
pub fn key_parse(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let versions = match byte(0) {
        0 => UuidVersions::ALL,
        bits => {
            let list: Vec<u8> = (1..=8u8).filter(|v| bits & (1 << (v - 1)) != 0).collect();
            UuidVersions::only(&list).expect("a non-empty list of versions 1..=8")
        }
    };
    let max_len = match u16::from_le_bytes([byte(1), byte(2)]) {
        0 => DEFAULT_MAX_KEY_LEN,
        n => 1 + (usize::from(n) - 1) % MAX_KEY_LEN_LIMIT,
    };
    let opaque = KeyPolicy::Opaque { max_len };
    let uuid = KeyPolicy::Uuid(versions);

    let pieces: Vec<Cow<'_, str>> = data
        .get(3..)
        .unwrap_or(&[])
        .split(|b| *b == KEY_SEPARATOR)
        .map(String::from_utf8_lossy)
        .collect();

    let mut scopes: Vec<&str> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for piece in &pieces {
        let piece: &str = piece;

        let expected = text_rule(piece, MAX_SCOPE_LEN);
        assert_eq!(validate_scope(piece), expected, "scope {piece:?}");
        if expected.is_ok() && scopes.len() < MAX_PIECES {
            scopes.push(piece);
        }

        let got = opaque.validate(piece);
        match text_rule(piece, max_len) {
            Ok(()) => {
                let stored = got
                    .unwrap_or_else(|e| panic!("opaque(max_len {max_len}) refused {piece:?}: {e}"));
                assert_eq!(stored, piece, "an opaque key is stored as given");
                if keys.len() < 2 * MAX_PIECES {
                    keys.push(stored.into_owned());
                }
            }
            Err(want) => assert_eq!(
                got.err(),
                Some(want),
                "opaque(max_len {max_len}) on {piece:?}"
            ),
        }

        let got = uuid.validate(piece);
        match uuid_rule(piece, versions) {
            UuidRule::Accept(lower) => {
                let stored = got.unwrap_or_else(|e| panic!("{versions:?} refused {piece:?}: {e}"));
                assert_eq!(stored, lower, "a UUID key is stored in lower case");
                let parsed = uuid::Uuid::try_parse(&stored).expect("an accepted UUID parses");
                assert_eq!(parsed.hyphenated().to_string(), stored);
                assert!(versions.contains(parsed.get_version_num() as u8));
                assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
                assert!(
                    matches!(uuid.validate(&stored), Ok(Cow::Borrowed(s)) if s == stored),
                    "the stored form of a UUID key is accepted as it is"
                );
                assert!(
                    KeyPolicy::Opaque { max_len: 36 }.validate(&stored).is_ok(),
                    "a UUID key is a valid opaque key"
                );
                if keys.len() < 2 * MAX_PIECES {
                    keys.push(stored.into_owned());
                }
            }
            refusal => {
                let err = got.err();
                let fits = match (&refusal, &err) {
                    (UuidRule::Empty, Some(KeyError::Empty))
                    | (UuidRule::NotAUuid, Some(KeyError::NotAUuid { .. }))
                    | (UuidRule::Variant, Some(KeyError::UuidVariant)) => true,
                    (UuidRule::Version(want), Some(KeyError::UuidVersion { version, .. })) => {
                        want == version
                    }
                    _ => false,
                };
                assert!(
                    fits,
                    "{versions:?} on {piece:?}: expected {refusal:?}, got {err:?}"
                );
            }
        }
    }

    check_framing(&scopes, &keys);
}

/// The scope and key rules, written out independently of `key.rs`: non-empty, at most
/// `max` bytes, no C0 or C1 control character and no DEL (the first one is reported).
fn text_rule(text: &str, max: usize) -> Result<(), KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if text.len() > max {
        return Err(KeyError::TooLong {
            len: text.len(),
            max,
        });
    }
    for (index, c) in text.char_indices() {
        let code = u32::from(c);
        if code < 0x20 || (0x7f..=0x9f).contains(&code) {
            return Err(KeyError::ControlCharacter { index, code });
        }
    }
    Ok(())
}

/// What the UUID policy must do with a key.
#[derive(Debug)]
enum UuidRule {
    Accept(String),
    Empty,
    NotAUuid,
    Variant,
    Version(u8),
}

/// The UUID rules: 8-4-4-4-12 hexadecimal digits of either case; the version digit (the
/// 15th character) in 1..=8 and allowed; the variant digit (the 20th) one of 8, 9, a, b.
fn uuid_rule(key: &str, versions: UuidVersions) -> UuidRule {
    let b = key.as_bytes();
    if b.is_empty() {
        return UuidRule::Empty;
    }
    if b.len() != 36 {
        return UuidRule::NotAUuid;
    }
    let shape_ok = b.iter().enumerate().all(|(i, c)| {
        if [8, 13, 18, 23].contains(&i) {
            *c == b'-'
        } else {
            c.is_ascii_hexdigit()
        }
    });
    if !shape_ok {
        return UuidRule::NotAUuid;
    }
    let hex = |c: u8| char::from(c).to_digit(16).unwrap_or(0);
    let version = hex(b[14]) as u8;
    if !(1..=8).contains(&version) {
        return UuidRule::Version(version);
    }
    if !(8..=11).contains(&hex(b[19])) {
        return UuidRule::Variant;
    }
    if !versions.contains(version) {
        return UuidRule::Version(version);
    }
    UuidRule::Accept(key.to_ascii_lowercase())
}

/// Frames every (scope, key) pair, plus every split of the first pair's concatenation into
/// a valid scope and a non-empty key (pairs that naive concatenation would merge).
fn check_framing(scopes: &[&str], keys: &[String]) {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for scope in scopes {
        for key in keys {
            pairs.push((scope, key));
        }
    }
    let joined = match (scopes.first(), keys.first()) {
        (Some(scope), Some(key)) => format!("{scope}{key}"),
        _ => String::new(),
    };
    for (at, _) in joined.char_indices().skip(1).take(4 * MAX_PIECES) {
        if at > MAX_SCOPE_LEN {
            break;
        }
        let (s, k) = joined.split_at(at);
        if validate_scope(s).is_ok() {
            pairs.push((s, k));
        }
    }

    let mut seen: HashMap<Vec<u8>, (&str, &str)> = HashMap::with_capacity(pairs.len());
    for &(scope, key) in &pairs {
        let framed = storage_key(scope, key);
        assert_eq!(
            split_storage_key(&framed),
            Some((scope, key)),
            "the storage key of ({scope:?}, {key:?}) does not split back"
        );
        assert!(
            framed.starts_with(&scope_prefix(scope)),
            "the storage key of ({scope:?}, {key:?}) is outside its scope's range"
        );
        if let Some(&(s, k)) = seen.get(&framed) {
            assert!(
                (s, k) == (scope, key),
                "({s:?}, {k:?}) and ({scope:?}, {key:?}) frame to the same storage key"
            );
        }
        seen.insert(framed, (scope, key));
    }
    // A scope's range holds only its own keys: sweeping or scanning one scope never
    // touches another.
    for other in scopes {
        let prefix = scope_prefix(other);
        for (framed, (scope, key)) in &seen {
            assert!(
                scope == other || !framed.starts_with(&prefix),
                "({scope:?}, {key:?}) lies in the range of scope {other:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// canonical_json

/// Canonical JSON and JSON fingerprints on arbitrary bytes.
///
/// Never panics. For accepted input: the canonical form is strict JSON and canonicalizing
/// it gives the same bytes; the input is strict RFC 8259 JSON (checked by an independent
/// parser here);
/// re-emitting it with every object's members reversed, or rotated and with whitespace
/// between all tokens, gives the same canonical form and the same fingerprint. Input the
/// independent parser accepts is refused only for a reason the module documents (a
/// duplicate member, an exponent out of range, a lone surrogate), and every error's offset
/// lies within the input.
pub fn canonical_json_check(data: &[u8]) {
    let strict = StrictParser::parse(data);
    let canonical = match canonical_json(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} past the end of {} bytes",
                e.offset,
                data.len()
            );
            if strict.is_ok() {
                assert!(
                    matches!(
                        e.kind,
                        JsonErrorKind::DuplicateKey(_)
                            | JsonErrorKind::NumberOutOfRange
                            | JsonErrorKind::LoneSurrogate
                    ),
                    "valid JSON refused: {e}"
                );
            }
            assert!(
                Fingerprint::builder().json_body(data).is_err(),
                "a JSON field accepted what canonical_json refused"
            );
            return;
        }
    };
    let tree = match strict {
        Ok(tree) => tree,
        Err(StrictError::Syntax(at)) => {
            panic!("canonical_json accepted non-JSON (a syntax error at byte {at})")
        }
        Err(StrictError::TooDeep) => {
            panic!("canonical_json accepted nesting deeper than {MAX_DEPTH}")
        }
    };

    let again =
        canonical_json(&canonical).unwrap_or_else(|e| panic!("the canonical form is refused: {e}"));
    assert!(again == canonical, "canonicalizing is not idempotent");
    assert!(
        StrictParser::parse(&canonical).is_ok(),
        "the canonical form is not strict JSON"
    );

    let fingerprint = |json: &[u8]| {
        Fingerprint::builder()
            .json_body(json)
            .unwrap_or_else(|e| panic!("{e}"))
            .finish()
    };
    let expected = fingerprint(data);
    assert_eq!(
        fingerprint(&canonical),
        expected,
        "fingerprint of the canonical form"
    );

    let mut reversed = Vec::new();
    emit(&tree, Order::Reversed, &mut Gaps::none(), &mut reversed);
    assert!(
        canonical_json(&reversed).as_deref() == Ok(&canonical[..]),
        "reversing object members changed the canonical form"
    );
    assert_eq!(fingerprint(&reversed), expected, "reversed members");

    let mut spaced = Vec::new();
    let mut gaps = Gaps::from(data);
    gaps.put(&mut spaced);
    emit(&tree, Order::Rotated, &mut gaps, &mut spaced);
    gaps.put(&mut spaced);
    assert!(
        canonical_json(&spaced).as_deref() == Ok(&canonical[..]),
        "whitespace or member rotation changed the canonical form"
    );
    assert_eq!(
        fingerprint(&spaced),
        expected,
        "whitespace and rotated members"
    );
}

/// A JSON value as the strict parser saw it: scalars as their exact source bytes.
#[derive(Debug)]
enum Node<'a> {
    Scalar(&'a [u8]),
    Array(Vec<Node<'a>>),
    Object(Vec<(&'a [u8], Node<'a>)>),
}

#[derive(Debug)]
enum StrictError {
    Syntax(usize),
    TooDeep,
}

/// An RFC 8259 parser written independently of `canonical_json`, keeping source bytes.
struct StrictParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> StrictParser<'a> {
    fn parse(s: &'a [u8]) -> Result<Node<'a>, StrictError> {
        let mut p = StrictParser { s, pos: 0 };
        p.ws();
        let node = p.value(0)?;
        p.ws();
        if p.pos != s.len() {
            return Err(StrictError::Syntax(p.pos));
        }
        Ok(node)
    }

    fn fail<T>(&self) -> Result<T, StrictError> {
        Err(StrictError::Syntax(self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, StrictError> {
        let start = self.pos;
        match self.peek() {
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(StrictError::TooDeep);
                }
                self.pos += 1;
                self.ws();
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Node::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b']') {
                        return Ok(Node::Array(items));
                    }
                    if !self.eat(b',') {
                        return self.fail();
                    }
                }
            }
            Some(b'{') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(StrictError::TooDeep);
                }
                self.pos += 1;
                self.ws();
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Ok(Node::Object(members));
                }
                loop {
                    self.ws();
                    let name = self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return self.fail();
                    }
                    self.ws();
                    members.push((name, self.value(depth + 1)?));
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(Node::Object(members));
                    }
                    if !self.eat(b',') {
                        return self.fail();
                    }
                }
            }
            Some(b'"') => Ok(Node::Scalar(self.string()?)),
            Some(b'-' | b'0'..=b'9') => {
                self.eat(b'-');
                if !self.eat(b'0') {
                    if !matches!(self.peek(), Some(b'1'..=b'9')) {
                        return self.fail();
                    }
                    self.digits();
                }
                if self.eat(b'.') && self.digits() == 0 {
                    return self.fail();
                }
                if self.eat(b'e') || self.eat(b'E') {
                    if !self.eat(b'+') {
                        self.eat(b'-');
                    }
                    if self.digits() == 0 {
                        return self.fail();
                    }
                }
                Ok(Node::Scalar(&self.s[start..self.pos]))
            }
            _ => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.s[self.pos..].starts_with(word) {
                        self.pos += word.len();
                        return Ok(Node::Scalar(word));
                    }
                }
                self.fail()
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A string literal, quotes included. Each run of raw bytes between escapes must be
    /// UTF-8 on its own.
    fn string(&mut self) -> Result<&'a [u8], StrictError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return self.fail();
        }
        let mut run = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return self.fail();
            };
            if (b == b'"' || b == b'\\') && std::str::from_utf8(&self.s[run..self.pos]).is_err() {
                return self.fail();
            }
            self.pos += 1;
            match b {
                b'"' => return Ok(&self.s[start..self.pos]),
                b'\\' => {
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1;
                        }
                        Some(b'u') => {
                            let hex = self.s.get(self.pos + 1..self.pos + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.fail();
                            }
                            self.pos += 5;
                        }
                        _ => return self.fail(),
                    }
                    run = self.pos;
                }
                0x00..=0x1f => return self.fail(),
                _ => {}
            }
        }
    }
}

/// The order the re-emitter writes object members in.
#[derive(Clone, Copy)]
enum Order {
    Reversed,
    Rotated,
}

/// Whitespace to put between tokens, chosen by cycling through the input's bytes.
struct Gaps<'a> {
    choices: &'a [u8],
    next: usize,
}

impl<'a> Gaps<'a> {
    fn none() -> Gaps<'static> {
        Gaps {
            choices: &[],
            next: 0,
        }
    }

    fn from(choices: &'a [u8]) -> Gaps<'a> {
        Gaps { choices, next: 0 }
    }

    fn put(&mut self, out: &mut Vec<u8>) {
        const WHITESPACE: [&[u8]; 6] = [b"", b" ", b"\n", b"\t", b"\r\n", b"  \t \r"];
        if self.choices.is_empty() {
            return;
        }
        let pick = self.choices[self.next % self.choices.len()];
        self.next += 1;
        out.extend_from_slice(WHITESPACE[usize::from(pick) % WHITESPACE.len()]);
    }
}

fn emit(node: &Node<'_>, order: Order, gaps: &mut Gaps<'_>, out: &mut Vec<u8>) {
    match node {
        Node::Scalar(bytes) => out.extend_from_slice(bytes),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                gaps.put(out);
                if i > 0 {
                    out.push(b',');
                    gaps.put(out);
                }
                emit(item, order, gaps, out);
            }
            gaps.put(out);
            out.push(b']');
        }
        Node::Object(members) => {
            let mut members: Vec<&(&[u8], Node<'_>)> = members.iter().collect();
            match order {
                Order::Reversed => members.reverse(),
                Order::Rotated => {
                    if !members.is_empty() {
                        members.rotate_left(1);
                    }
                }
            }
            out.push(b'{');
            for (i, (name, value)) in members.into_iter().enumerate() {
                gaps.put(out);
                if i > 0 {
                    out.push(b',');
                    gaps.put(out);
                }
                out.extend_from_slice(name);
                gaps.put(out);
                out.push(b':');
                gaps.put(out);
                emit(value, order, gaps, out);
            }
            gaps.put(out);
            out.push(b'}');
        }
    }
}

// ---------------------------------------------------------------------------------------
// journal_frame

/// The journal id the `journal_frame` check gives the journal it recovers; seeds whose
/// frames carry it are followed by recovery.
pub const FUZZ_JOURNAL_ID: u128 = 0x1de3_db00_f022_0000_0000_0000_0000_0001;

/// The journal's frame codec on arbitrary bytes, and recovery over them.
///
/// The bytes are read four ways, none of which may panic or read out of bounds:
/// - as one frame: a header that parses re-encodes (with the payload behind it) to the
///   same 48 bytes; the checksum verifies exactly when re-encoding reproduces all 64; a
///   verified frame re-encodes identically, padding aside;
/// - as a payload: changes that decode re-encode to the same bytes (and their keys and
///   records go through the storage-key and record decoders);
/// - as a journal header page: one that parses re-encodes identically;
/// - as the frame area of a journal (with header id [`FUZZ_JOURNAL_ID`]): recovery either
///   returns frames in increasing LSN order and a head inside the area on a frame boundary,
///   or a typed corruption error (never an I/O error, which would mean a read past the
///   end); the same again after every frame's checksum is recomputed, so that mutated
///   frames get past the checksum into the payload decoder and the lost-frame probe.
pub fn journal_frame(data: &[u8]) {
    check_frame(data);
    check_payload(data);
    if let Ok(header) = frame::parse_file_header(data)
        && header.format == JOURNAL_FORMAT
    {
        let page = frame::encode_file_header(header.journal_id, header.capacity);
        assert_eq!(
            page[..60],
            data[..60],
            "a journal header does not re-encode identically"
        );
    }
    check_recovery(data);
    check_recovery(&resealed(data));
}

fn check_frame(data: &[u8]) {
    let Some(header) = frame::parse_header(data) else {
        return;
    };
    let len = header.payload_len as usize;
    let Some(payload) = HEADER_LEN
        .checked_add(len)
        .and_then(|end| data.get(HEADER_LEN..end))
    else {
        return;
    };
    let mut out = Vec::new();
    frame::encode_frame(
        header.kind,
        header.journal_id,
        header.lsn,
        payload,
        &mut out,
    );
    assert_eq!(out.len() as u64, frame::frame_size(len), "frame size");
    assert_eq!(out.len() % FRAME_ALIGN as usize, 0, "frame alignment");
    assert_eq!(out[..48], data[..48], "a frame header does not re-encode");
    let verified = header.verifies(&data[..HEADER_LEN], payload);
    assert_eq!(
        verified,
        out[..HEADER_LEN] == data[..HEADER_LEN],
        "the checksum verdict disagrees with re-encoding"
    );
    if verified {
        assert_eq!(out[HEADER_LEN..HEADER_LEN + len], *payload);
        assert!(out[HEADER_LEN + len..].iter().all(|b| *b == 0), "padding");
    }
    check_payload(payload);
}

fn check_payload(payload: &[u8]) {
    let Ok(changes) = frame::decode_changes(payload) else {
        return;
    };
    let mut out = Vec::new();
    frame::encode_changes(
        changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        &mut out,
    );
    assert!(out == payload, "a payload does not re-encode identically");
    for (key, value) in &changes {
        let _ = split_storage_key(key);
        if let Some(value) = value {
            record_decode(value);
        }
    }
}

fn check_recovery(area: &[u8]) {
    let io = InMemoryBackend::new();
    let header_page = frame::encode_file_header(FUZZ_JOURNAL_ID, MIN_CAPACITY);
    let allocated = FILE_HEADER_LEN + area.len() as u64;
    io.set_len(allocated).expect("memory");
    io.write(0, &header_page).expect("memory");
    io.write(FILE_HEADER_LEN, area).expect("memory");
    let header = Journal::read_header(&io).expect("the journal's own header");
    match Journal::recover(&io, &header, FILE_HEADER_LEN, 0) {
        Ok(recovered) => {
            let head = recovered.head;
            assert!(
                (FILE_HEADER_LEN..MIN_CAPACITY).contains(&head) && head.is_multiple_of(FRAME_ALIGN),
                "recovery resumes at {head}, not a frame position"
            );
            assert!(
                head <= allocated.max(FILE_HEADER_LEN),
                "recovery resumes at {head}, past the {allocated} bytes there are"
            );
            let mut last = 0;
            for (lsn, _) in &recovered.frames {
                assert!(*lsn > last, "recovered frames out of LSN order");
                last = *lsn;
            }
            assert!(
                last <= recovered.last_lsn,
                "last LSN behind a recovered frame"
            );
        }
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("recovery of a journal image failed with a non-corruption error: {e}"),
    }
}

/// `area` with every parseable frame's checksum recomputed, last frame first, so that the
/// checksum of a frame covers the final bytes of any frame header resealed inside it.
fn resealed(area: &[u8]) -> Vec<u8> {
    let mut image = area.to_vec();
    let align = FRAME_ALIGN as usize;
    let mut at = image.len() / align * align;
    loop {
        if let Some(header) = image.get(at..).and_then(frame::parse_header) {
            let end = (at + HEADER_LEN).checked_add(header.payload_len as usize);
            if let Some(end) = end.filter(|end| *end <= image.len()) {
                let mut out = Vec::new();
                frame::encode_frame(
                    header.kind,
                    header.journal_id,
                    header.lsn,
                    &image[at + HEADER_LEN..end],
                    &mut out,
                );
                image[at..at + HEADER_LEN].copy_from_slice(&out[..HEADER_LEN]);
            }
        }
        if at == 0 {
            return image;
        }
        at -= align;
    }
}

// ---------------------------------------------------------------------------------------
// seeds

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
    for (name, bytes) in record_seeds() {
        add("record_decode", &name, bytes);
    }
    for (name, bytes) in key_seeds() {
        add("key_parse", &name, bytes);
    }
    for (name, text) in JSON_SEEDS {
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
    for (name, bytes) in journal_seeds() {
        add("journal_frame", &name, bytes);
    }
    for (name, bytes) in op_seeds() {
        add("op_sequence", name, bytes);
    }
    seeds
}

fn sample_records() -> Vec<(&'static str, Record)> {
    let fp = Fingerprint::of(b"POST /orders {\"item\":\"book\"}");
    let t = Timestamp::from_millis;
    vec![
        (
            "completed",
            Record::builder(fp, t(1_700_000_000_000))
                .expires_at(Some(t(1_700_086_400_000)))
                .completed(t(1_700_000_000_250), br#"{"order_id":17}"#.to_vec()),
        ),
        (
            "completed_empty_response",
            Record::builder(fp, t(0)).completed(t(0), Vec::new()),
        ),
        (
            "completed_extremes",
            Record::builder(fp, t(u64::MAX))
                .expires_at(Some(t(u64::MAX)))
                .completed(t(u64::MAX), vec![0xff; 300])
                .with_attempt(u32::MAX),
        ),
        (
            "completed_recovered",
            Record::builder(fp, t(5))
                .expires_at(Some(t(86_400_005)))
                .completed(t(9), b"ok".to_vec())
                .with_attempt(3),
        ),
        (
            "in_flight",
            Record::builder(fp, t(1_700_000_000_000))
                .expires_at(Some(t(1_700_086_400_000)))
                .in_flight(
                    ClaimId::from_u128(0x0123_4567_89ab_cdef_0000_0000_0000_0001),
                    t(1_700_000_030_000),
                ),
        ),
        (
            "in_flight_owner",
            Record::builder(fp, t(10))
                .in_flight(ClaimId::from_u128(u128::MAX), t(15))
                .with_owner(Some(b"host-a:4242:1700000000".to_vec())),
        ),
        (
            "in_flight_zero_lease",
            Record::builder(Fingerprint::from_bytes([0; 32]), t(0))
                .expires_at(Some(t(0)))
                .in_flight(ClaimId::from_u128(0), t(0))
                .with_owner(Some(Vec::new())),
        ),
        (
            "abandoned",
            Record::builder(fp, t(100))
                .expires_at(Some(t(200)))
                .in_flight(ClaimId::from_u128(7), t(150))
                .with_abandoned_at(Some(t(120)))
                .with_attempt(2),
        ),
    ]
}

fn record_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, record) in sample_records() {
        let bytes = codec::encode(&record).expect("sample records encode");
        out.push((format!("{name}.bin"), bytes.clone()));
        if name == "completed" || name == "in_flight_owner" {
            out.push((
                format!("{name}_truncated.bin"),
                bytes[..bytes.len() - 3].to_vec(),
            ));
            let mut trailing = bytes.clone();
            trailing.push(0);
            out.push((format!("{name}_trailing_byte.bin"), trailing));
            let mut future = bytes.clone();
            future[0] = 3;
            out.push((format!("{name}_future_format.bin"), future));
            let mut flipped = bytes.clone();
            flipped[40] ^= 0xff;
            out.push((format!("{name}_garbled.bin"), flipped));
        }
    }
    // attempt 0 is refused on decoding; the encoder writes whatever it is given
    let zero = Record {
        fingerprint: Fingerprint::of(b"x"),
        created_at: Timestamp::from_millis(1),
        expires_at: None,
        attempt: 0,
        state: RecordState::Completed(Completed {
            completed_at: Timestamp::from_millis(2),
            response: b"r".to_vec(),
        }),
    };
    out.push((
        "attempt_zero.bin".to_owned(),
        codec::encode(&zero).expect("encodes"),
    ));
    // an integer written longer than it needs to be (5 as a 2-byte varint)
    let small = Record {
        created_at: Timestamp::from_millis(5),
        attempt: 1,
        ..zero.clone()
    };
    let mut long = codec::encode(&small).expect("encodes");
    assert_eq!(
        long[33], 5,
        "created_at follows the format byte and fingerprint"
    );
    long.splice(33..34, [251, 5, 0]);
    out.push(("non_minimal_varint.bin".to_owned(), long));
    // a response length claiming far more than the input holds
    let mut huge = vec![1u8];
    huge.extend_from_slice(&[0u8; 32]);
    huge.extend_from_slice(&[
        0, 0, 1, 1, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ]);
    out.push(("huge_length.bin".to_owned(), huge));
    out.push(("empty.bin".to_owned(), Vec::new()));
    out.push(("format_byte_only.bin".to_owned(), vec![1]));
    out
}

fn key_input(versions: u8, max_len: u16, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![versions];
    out.extend_from_slice(&max_len.to_le_bytes());
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            out.push(KEY_SEPARATOR);
        }
        out.extend_from_slice(piece);
    }
    out
}

fn key_seeds() -> Vec<(String, Vec<u8>)> {
    let all = 0u8;
    let v4 = 1 << 3;
    let v4_v7 = (1 << 3) | (1 << 6);
    let mut out = vec![
        (
            "opaque_key.key",
            key_input(all, 0, &[b"tenant-7", b"order-2f7c"]),
        ),
        (
            "concatenation_colliders.key",
            key_input(all, 0, &[b"a:b", b"c", b"a", b"b:c", b"ab", b"bc"]),
        ),
        ("empty_pieces.key", key_input(all, 0, &[b"", b"", b"k"])),
        ("empty_input.key", Vec::new()),
        ("header_only.key", key_input(v4, 36, &[])),
        (
            "max_len_4.key",
            key_input(
                all,
                4,
                &[
                    b"abcd",
                    b"abcde",
                    "\u{e9}\u{e9}".as_bytes(),
                    "\u{e9}\u{e9}\u{e9}".as_bytes(),
                ],
            ),
        ),
        (
            "max_len_limit.key",
            key_input(all, 4096, &[b"scope", &[b'k'; 300]]),
        ),
        (
            "scope_255.key",
            key_input(all, 0, &[&[b's'; 255], &[b's'; 256], b"key"]),
        ),
        (
            "key_255_256.key",
            key_input(all, 255, &[b"scope", &[b'x'; 255], &[b'x'; 256]]),
        ),
        ("nul.key", key_input(all, 0, &[b"scope", b"a\0b"])),
        (
            "del.key",
            key_input(all, 0, &[b"scope", "\u{e9}\u{7f}".as_bytes()]),
        ),
        (
            "c1_control.key",
            key_input(all, 0, &[b"scope", "next\u{85}line".as_bytes()]),
        ),
        (
            "tab_newline.key",
            key_input(all, 0, &[b"sco\tpe", b"key\n"]),
        ),
        (
            "unicode.key",
            key_input(
                all,
                0,
                &[
                    "\u{43a}\u{43b}\u{44e}\u{447}".as_bytes(),
                    "\u{1F511}-\u{6f22}\u{5b57}".as_bytes(),
                    "\u{200b}\u{202e}".as_bytes(),
                ],
            ),
        ),
        (
            "invalid_utf8.key",
            key_input(all, 0, &[b"scope", b"\xc3\x28", b"\xed\xa0\x80"]),
        ),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_owned(), b))
    .collect::<Vec<_>>();
    // one UUID of each version, in lower and upper case, under "v4 only", "v4 and v7", all
    let mut uuids: Vec<Vec<u8>> = Vec::new();
    for version in 1..=8u8 {
        let text = format!("7f1c0b9e-2a4d-{version:x}c8e-9b1a-3e5f6a7b8c9d");
        uuids.push(text.clone().into_bytes());
        uuids.push(text.to_ascii_uppercase().into_bytes());
    }
    for (name, versions) in [
        ("uuids_v4_only.key", v4),
        ("uuids_v4_v7.key", v4_v7),
        ("uuids_all.key", all),
    ] {
        let mut pieces: Vec<&[u8]> = vec![b"tenant"];
        pieces.extend(uuids.iter().map(Vec::as_slice));
        out.push((name.to_owned(), key_input(versions, 0, &pieces)));
    }
    let bad_uuids: [(&str, &[u8]); 10] = [
        ("uuid_nil.key", b"00000000-0000-0000-0000-000000000000"),
        ("uuid_max.key", b"ffffffff-ffff-ffff-ffff-ffffffffffff"),
        (
            "uuid_version_0.key",
            b"7f1c0b9e-2a4d-0c8e-9b1a-3e5f6a7b8c9d",
        ),
        (
            "uuid_version_9.key",
            b"7f1c0b9e-2a4d-9c8e-9b1a-3e5f6a7b8c9d",
        ),
        (
            "uuid_ncs_variant.key",
            b"7f1c0b9e-2a4d-4c8e-1b1a-3e5f6a7b8c9d",
        ),
        (
            "uuid_microsoft_variant.key",
            b"7f1c0b9e-2a4d-4c8e-cb1a-3e5f6a7b8c9d",
        ),
        ("uuid_no_hyphens.key", b"7f1c0b9e2a4d4c8e9b1a3e5f6a7b8c9d"),
        ("uuid_braces.key", b"{7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9}"),
        (
            "uuid_urn.key",
            b"urn:uuid:7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d",
        ),
        ("uuid_non_hex.key", b"7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9g"),
    ];
    for (name, uuid) in bad_uuids {
        out.push((name.to_owned(), key_input(all, 0, &[b"tenant", uuid])));
    }
    out.push((
        "uuid_misplaced_hyphen.key".to_owned(),
        key_input(
            v4,
            0,
            &[
                b"t",
                b"7f1c0b9e2-a4d-4c8e-9b1a-3e5f6a7b8c9d",
                b"7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d-",
            ],
        ),
    ));
    out
}

const JSON_SEEDS: &[(&str, &str)] = &[
    (
        "object_nested.json",
        r#"{"order":{"items":[{"sku":"b-1","qty":2},{"sku":"a-9","qty":1}],"note":null},"customer":"u1","paid":true}"#,
    ),
    (
        "object_spaced.json",
        "{ \"b\" : 1 ,\n\t\"a\" : [ true , false , null ] ,\r\n \"c\" : { } }\n",
    ),
    (
        "object_many_keys.json",
        r#"{"z":1,"y":2,"x":3,"w":4,"v":5,"u":6,"t":7,"s":8,"aa":9,"a":10,"":11,"A":12}"#,
    ),
    (
        "unicode.json",
        "{\"emoji\":\"\u{1F600}\",\"escaped\":\"\\ud83d\\ude00\",\"\u{e9}\":\"\\u00e9\",\"cjk\":\"\u{6f22}\u{5b57}\",\"rtl\":\"\u{5e9}\u{5dc}\u{5d5}\u{5dd}\"}",
    ),
    (
        "escapes.json",
        r#"["\"\\\/\b\f\n\r\t","\u0000\u001f\u007f","\u0041\u00DF","a\u2028b"]"#,
    ),
    ("escaped_keys.json", r#"{"\u0061":1,"b\n":2,"\"":3}"#),
    (
        "numbers.json",
        "[0,-0,1,-1,12,-12,1.0,1.50,15e-1,1E+2,1e2,0.001,-0.0,0e5,2.5E-3,100.0]",
    ),
    (
        "numbers_big.json",
        "[123456789012345678901234567890,123456789012345678901234567890.5,0.10000000000000000001,-9223372036854775809]",
    ),
    (
        "numbers_exponent_limits.json",
        "[1e1000000000000,1e-1000000000000,9.99e999999999999]",
    ),
    (
        "numbers_exponent_normalised.json",
        "[12e1000000000000,0.01e-1000000000000,10e999999999999,-0.010e-999999999998]",
    ),
    ("scalar_string.json", "\"just a string\""),
    ("scalar_true.json", " true "),
    ("scalar_null.json", "null"),
    ("scalar_integer.json", "42"),
    ("empty_containers.json", "[{},[],{\"a\":[]},[{}]]"),
    (
        "array_of_objects.json",
        r#"[{"b":1,"a":2},{"a":2,"b":1},{"c":{"e":5,"d":4}}]"#,
    ),
    ("duplicate_key.json", r#"{"a":1,"a":2}"#),
    ("duplicate_key_escaped.json", r#"{"a":1,"\u0061":2}"#),
    ("trailing_comma.json", r#"{"a":1,}"#),
    ("leading_zero.json", "[01]"),
    ("bare_fraction.json", "[1.]"),
    ("lone_surrogate.json", r#""\ud800""#),
    ("reversed_surrogates.json", r#""\udc00\ud800""#),
    ("control_in_string.json", "\"a\nb\""),
    ("bad_escape.json", r#""\x41""#),
    ("truncated_object.json", r#"{"a":[1,2"#),
    ("trailing_garbage.json", "{} {}"),
    ("byte_order_mark.json", "\u{feff}{}"),
    ("nan.json", "[NaN,Infinity]"),
    ("comment.json", "{/* no */\"a\":1}"),
    ("single_quotes.json", "{'a':1}"),
    ("empty.json", ""),
    ("whitespace_only.json", " \n\t "),
];

fn journal_payload(changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_changes(
        changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        &mut out,
    );
    out
}

fn journal_seeds() -> Vec<(String, Vec<u8>)> {
    let records = sample_records();
    let record = |i: usize| codec::encode(&records[i % records.len()].1).expect("encodes");
    let batch_a = journal_payload(&[
        (storage_key("shop", "order-1"), Some(record(0))),
        (storage_key("shop", "order-2"), Some(record(4))),
        (storage_key("billing", "inv-9"), None),
    ]);
    let batch_b = journal_payload(&[(storage_key("shop", "order-2"), Some(record(1)))]);
    let batch_c = journal_payload(&[
        (
            storage_key("t", "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d"),
            Some(record(7)),
        ),
        (Vec::new(), Some(Vec::new())),
    ]);
    let empty_batch = journal_payload(&[]);
    let id = FUZZ_JOURNAL_ID;
    let frame_of = |kind: FrameKind, journal: u128, lsn: u64, payload: &[u8]| {
        let mut out = Vec::new();
        frame::encode_frame(kind, journal, lsn, payload, &mut out);
        out
    };
    let one = frame_of(FrameKind::Batch, id, 1, &batch_a);
    let mut out: Vec<(String, Vec<u8>)> = vec![("frame_batch.bin".into(), one.clone())];
    out.push((
        "frame_empty_batch.bin".into(),
        frame_of(FrameKind::Batch, id, 1, &empty_batch),
    ));
    out.push((
        "frame_wrap.bin".into(),
        frame_of(FrameKind::Wrap, id, 1, &[]),
    ));
    out.push((
        "frame_other_journal.bin".into(),
        frame_of(FrameKind::Batch, 99, 1, &batch_b),
    ));
    let three = [
        frame_of(FrameKind::Batch, id, 1, &batch_a),
        frame_of(FrameKind::Batch, id, 2, &batch_b),
        frame_of(FrameKind::Batch, id, 3, &batch_c),
    ]
    .concat();
    out.push(("ring_three_frames.bin".into(), three.clone()));
    out.push((
        "ring_wrap_then_stale.bin".into(),
        [
            frame_of(FrameKind::Batch, id, 5, &batch_b),
            frame_of(FrameKind::Wrap, id, 6, &[]),
            frame_of(FrameKind::Batch, id, 4, &batch_c),
        ]
        .concat(),
    ));
    out.push((
        "ring_lsn_gap_backwards.bin".into(),
        [
            frame_of(FrameKind::Batch, id, 10, &batch_b),
            frame_of(FrameKind::Batch, id, 7, &batch_c),
        ]
        .concat(),
    ));
    let mut damaged_middle = three.clone();
    let second = one.len() + HEADER_LEN + 2;
    damaged_middle[second] ^= 0x40;
    out.push(("ring_damaged_middle.bin".into(), damaged_middle));
    let mut damaged_first = three.clone();
    damaged_first[HEADER_LEN + 1] ^= 1;
    out.push(("ring_damaged_first.bin".into(), damaged_first));
    out.push((
        "frame_truncated.bin".into(),
        one[..HEADER_LEN + batch_a.len() - 1].to_vec(),
    ));
    out.push(("frame_header_only.bin".into(), one[..HEADER_LEN].to_vec()));
    let mut bad_kind = one.clone();
    bad_kind[4] = 3;
    out.push(("frame_unknown_kind.bin".into(), bad_kind));
    let mut bad_length = one.clone();
    bad_length[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    out.push(("frame_huge_length.bin".into(), bad_length));
    out.push(("payload_batch.bin".into(), batch_a.clone()));
    out.push((
        "payload_truncated.bin".into(),
        batch_a[..batch_a.len() - 1].to_vec(),
    ));
    out.push((
        "payload_huge_count.bin".into(),
        vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0],
    ));
    let mut bad_tag = batch_b.clone();
    bad_tag[4 + 2 + storage_key("shop", "order-2").len()] = 9;
    out.push(("payload_unknown_tag.bin".into(), bad_tag));
    let mut file_header = frame::encode_file_header(id, MIN_CAPACITY);
    file_header.truncate(64);
    out.push(("file_header.bin".into(), file_header.clone()));
    let mut future = frame::encode_file_header(id, MIN_CAPACITY);
    future[16] = 2;
    future.truncate(64);
    out.push(("file_header_damaged.bin".into(), future));
    out.push(("empty.bin".into(), Vec::new()));
    out
}
