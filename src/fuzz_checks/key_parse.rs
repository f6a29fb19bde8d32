//! The `key_parse` target: key and scope rules, and the storage-key framing.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::KeyError;
use crate::key::{
    DEFAULT_MAX_KEY_LEN, KeyPolicy, MAX_KEY_LEN_LIMIT, MAX_SCOPE_LEN, UuidVersions, scope_prefix,
    split_storage_key, storage_key, validate_scope,
};

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

// Seeds.

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

pub(super) fn seeds() -> Vec<(String, Vec<u8>)> {
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
