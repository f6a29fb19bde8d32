//! Every kind of bad input and bad file gets its own typed error, loses nothing, and never
//! panics.

mod common;

use std::time::Duration;

use common::{TestStore, execute, fp, replay};
use idemdb::{
    BeginOptions, Error, Fingerprint, KeyError, KeyPolicy, MAX_OWNER_LEN, Store, UuidVersions,
};

#[test]
fn keys_that_break_the_opaque_policy() {
    let t = TestStore::new();
    let cases: Vec<(String, KeyError)> = vec![
        (String::new(), KeyError::Empty),
        ("k".repeat(256), KeyError::TooLong { len: 256, max: 255 }),
        ("é".repeat(128), KeyError::TooLong { len: 256, max: 255 }),
        (
            "a\0b".into(),
            KeyError::ControlCharacter { index: 1, code: 0 },
        ),
        (
            "line\nbreak".into(),
            KeyError::ControlCharacter { index: 4, code: 10 },
        ),
        (
            "tab\t".into(),
            KeyError::ControlCharacter { index: 3, code: 9 },
        ),
        (
            "c1\u{85}".into(),
            KeyError::ControlCharacter {
                index: 2,
                code: 0x85,
            },
        ),
    ];
    for (key, rule) in cases {
        match t.store.begin("s", &key, fp("a")) {
            Err(Error::InvalidKey(e)) => assert_eq!(e, rule, "{key:?}"),
            other => panic!("{key:?}: {other:?}"),
        }
        assert!(matches!(t.store.get("s", &key), Err(Error::InvalidKey(_))));
        assert!(matches!(
            t.store.delete("s", &key),
            Err(Error::InvalidKey(_))
        ));
    }
    // at the limit is fine, and the message names the rule
    execute(
        t.store
            .begin("s", &"k".repeat(255), fp("a"))
            .expect("255 bytes"),
    )
    .complete(b"")
    .expect("complete");
    let message = t
        .store
        .begin("s", &"k".repeat(300), fp("a"))
        .expect_err("too long")
        .to_string();
    assert!(
        message.contains("300 bytes long; the limit is 255 bytes"),
        "{message}"
    );
    assert_eq!(
        t.store.count_by_state().expect("count").live(),
        1,
        "nothing else stored"
    );
}

#[test]
fn keys_that_break_the_uuid_policy() {
    let t = TestStore::with(|b| {
        b.key_policy(KeyPolicy::Uuid(UuidVersions::only(&[3, 4]).expect("set")))
    });
    let v4 = "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d";
    execute(t.store.begin("s", v4, fp("a")).expect("v4"))
        .complete(b"ok")
        .expect("complete");
    // upper case is the same UUID, so the same key
    assert_eq!(
        replay(
            t.store
                .begin("s", &v4.to_uppercase(), fp("a"))
                .expect("begin")
        ),
        b"ok"
    );
    let bad = [
        ("", "empty"),
        ("not-a-uuid", "form"),
        ("7f1c0b9e2a4d4c8e9b1a3e5f6a7b8c9d", "form"),
        ("urn:uuid:7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d", "form"),
        ("7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9z", "form"),
        ("7f1c0b9e-2a4d-7c8e-9b1a-3e5f6a7b8c9d", "version"),
        ("00000000-0000-0000-0000-000000000000", "version"),
        ("7f1c0b9e-2a4d-4c8e-cb1a-3e5f6a7b8c9d", "variant"),
    ];
    for (key, why) in bad {
        match (t.store.begin("s", key, fp("a")), why) {
            (Err(Error::InvalidKey(KeyError::Empty)), "empty")
            | (Err(Error::InvalidKey(KeyError::NotAUuid { .. })), "form")
            | (Err(Error::InvalidKey(KeyError::UuidVersion { .. })), "version")
            | (Err(Error::InvalidKey(KeyError::UuidVariant)), "variant") => {}
            (other, _) => panic!("{key:?} ({why}): {other:?}"),
        }
    }
}

#[test]
fn scopes_that_break_the_rules() {
    let t = TestStore::new();
    for (scope, rule) in [
        (String::new(), KeyError::Empty),
        ("s".repeat(256), KeyError::TooLong { len: 256, max: 255 }),
        (
            "a\u{1b}".into(),
            KeyError::ControlCharacter {
                index: 1,
                code: 0x1b,
            },
        ),
    ] {
        match t.store.begin(&scope, "k", fp("a")) {
            Err(Error::InvalidScope(e)) => assert_eq!(e, rule),
            other => panic!("{scope:?}: {other:?}"),
        }
        assert!(matches!(
            t.store.scan(Some(&scope)),
            Err(Error::InvalidScope(_))
        ));
    }
    execute(
        t.store
            .begin(&"s".repeat(255), "k", fp("a"))
            .expect("255-byte scope"),
    )
    .complete(b"")
    .expect("complete");
}

#[test]
fn responses_at_and_over_the_limit() {
    let t = TestStore::with(|b| b.max_response_size(1000));
    execute(t.store.begin("s", "at", fp("a")).expect("begin"))
        .complete(vec![7u8; 1000])
        .expect("exactly at the limit");
    let claim = execute(t.store.begin("s", "over", fp("a")).expect("begin"));
    let err = claim.complete(vec![7u8; 1001]).expect_err("over the limit");
    assert!(matches!(
        err.error,
        Error::ResponseTooLarge {
            size: 1001,
            limit: 1000
        }
    ));
    // the claim comes back: complete it with what fits
    let claim = err.claim.expect("claim returned");
    claim
        .complete(b"truncated")
        .expect("complete after trimming");
    assert_eq!(
        replay(t.store.begin("s", "over", fp("a")).expect("begin")),
        b"truncated"
    );
}

#[test]
fn an_oversized_response_in_a_batch_fails_alone() {
    let clock = idemdb::ManualClock::new(common::T0);
    let (store, gate) = common::gated_store(&clock);
    let claims: Vec<_> = (0..5)
        .map(|i| execute(store.begin("s", &format!("k{i}"), fp("a")).expect("begin")))
        .collect();
    gate.close();
    std::thread::scope(|s| {
        let blocker = s.spawn(|| {
            execute(store.begin("s", "blocker", fp("b")).expect("begin"))
                .detach()
                .expect("detach")
        });
        gate.wait_for_blocked_sync();
        let handles: Vec<_> = claims
            .into_iter()
            .enumerate()
            .map(|(i, claim)| {
                s.spawn(move || {
                    let size = if i == 2 { 2 * 1024 * 1024 } else { 10 };
                    claim
                        .complete(vec![1u8; size])
                        .map(|_| ())
                        .map_err(|e| e.error)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        gate.open();
        blocker.join().expect("blocker");
        for (i, h) in handles.into_iter().enumerate() {
            let result = h.join().expect("thread");
            if i == 2 {
                assert!(
                    matches!(result, Err(Error::ResponseTooLarge { .. })),
                    "{result:?}"
                );
            } else {
                result.expect("valid completions in the same batch succeed");
            }
        }
    });
    for i in [0, 1, 3, 4] {
        assert_eq!(
            replay(store.begin("s", &format!("k{i}"), fp("a")).expect("begin")),
            vec![1u8; 10]
        );
    }
}

#[test]
fn oversized_owner_tags_and_leases_are_refused() {
    let t = TestStore::new();
    let opts = BeginOptions::new().owner(vec![0u8; MAX_OWNER_LEN + 1]);
    assert!(matches!(
        t.store.begin_with("s", "k", fp("a"), &opts),
        Err(Error::OwnerTooLarge { .. })
    ));
    let opts = BeginOptions::new().lease(Duration::from_secs(400 * 24 * 3600));
    assert!(matches!(
        t.store.begin_with("s", "k", fp("a"), &opts),
        Err(Error::InvalidLease { .. })
    ));
    assert!(t.store.get("s", "k").expect("get").is_none());
}

#[test]
fn invalid_json_in_a_fingerprint_names_the_field() {
    match Fingerprint::builder().json_body(b"{\"a\": 1,}") {
        Err(Error::InvalidJson { field, source }) => {
            assert_eq!(field, "body");
            assert_eq!(source.offset, 8);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_configuration_is_refused_before_touching_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("never.idemdb");
    let attempts = [
        Store::builder().default_retention(Duration::from_millis(500)),
        Store::builder().max_retention(Duration::from_secs(10)),
        Store::builder().key_policy(KeyPolicy::Opaque { max_len: 0 }),
        Store::builder().key_policy(KeyPolicy::Opaque { max_len: 5000 }),
        Store::builder().max_response_size(65 * 1024 * 1024),
        Store::builder().sweep_interval(Some(Duration::ZERO)),
        Store::builder().sweep_batch(0),
        Store::builder().max_batch(0),
    ];
    for builder in attempts {
        assert!(matches!(
            builder.open(&path),
            Err(Error::InvalidConfig { .. })
        ));
    }
    assert!(!path.exists());
}

fn store_file_with_records() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.idemdb");
    let store = Store::open(&path).expect("open");
    for i in 0..200 {
        execute(store.begin("s", &format!("k{i}"), fp("a")).expect("begin"))
            .complete(vec![i as u8; 300])
            .expect("complete");
    }
    store.close().expect("close");
    (dir, path)
}

#[test]
fn files_that_are_not_stores() {
    let dir = tempfile::tempdir().expect("dir");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"these are not the records you are looking for\n").expect("write");
    assert!(matches!(Store::open(&text), Err(Error::NotAStore { .. })));
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"x").expect("write");
    assert!(matches!(Store::open(&tiny), Err(Error::NotAStore { .. })));

    let other = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&other).expect("redb");
        let w = db.begin_write().expect("write");
        w.open_table(redb::TableDefinition::<&str, u64>::new("inventory"))
            .expect("table")
            .insert("apples", 3)
            .expect("insert");
        w.commit().expect("commit");
    }
    match Store::open(&other) {
        Err(Error::NotAStore { reason, .. }) => assert!(reason.contains("inventory"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let empty = dir.path().join("empty.idemdb");
    std::fs::write(&empty, b"").expect("write");
    assert!(matches!(Store::open(&empty), Err(Error::EmptyFile { .. })));
    assert_eq!(
        std::fs::metadata(&empty).expect("meta").len(),
        0,
        "not turned into a store"
    );

    assert!(matches!(
        Store::open(dir.path()),
        Err(Error::NotAFile { .. })
    ));

    let missing = dir.path().join("missing.idemdb");
    assert!(matches!(
        Store::builder().create_if_missing(false).open(&missing),
        Err(Error::Missing { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn truncated_stores_are_corrupt_never_new() {
    let (dir, path) = store_file_with_records();
    let bytes = std::fs::read(&path).expect("read");
    for cut in [5, 100, 4096, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path().join(format!("cut-{cut}"));
        std::fs::write(&p, &bytes[..cut]).expect("write");
        match Store::open(&p) {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn damaged_stores_give_typed_errors_and_never_panic() {
    let (dir, path) = store_file_with_records();
    let bytes = std::fs::read(&path).expect("read");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut typed = 0;
    for round in 0..120 {
        let mut damaged = bytes.clone();
        for _ in 0..(1 + round % 8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % damaged.len() as u64) as usize;
            damaged[at] ^= (seed >> 40) as u8 | 1;
        }
        let p = dir.path().join(format!("damaged-{round}"));
        std::fs::write(&p, &damaged).expect("write");
        // With pages verified on open: damage is refused up front (without, it is found
        // where it is read; see tests/damage.rs).
        match Store::builder()
            .sweep_interval(None)
            .verify_on_open(true)
            .open(&p)
        {
            Err(Error::Corrupt { .. } | Error::NotAStore { .. }) => typed += 1,
            Err(other) => panic!("round {round}: untyped error {other:?}"),
            // damage in unused space: everything must still be there, intact
            Ok(store) => {
                for i in 0..200 {
                    match store.get("s", &format!("k{i}")) {
                        Ok(Some(r)) => assert_eq!(r.response(), Some(&vec![i as u8; 300][..])),
                        Err(Error::Corrupt { .. }) => {}
                        other => panic!("round {round}: k{i} {other:?}"),
                    }
                }
            }
        }
        std::fs::remove_file(&p).expect("remove");
    }
    assert!(typed > 60, "most damage is detected: {typed}");
}

#[test]
fn a_store_of_a_newer_format_is_refused() {
    let (_dir, path) = store_file_with_records();
    {
        let db = redb::Database::create(&path).expect("redb");
        let w = db.begin_write().expect("write");
        w.open_table(redb::TableDefinition::<&str, &[u8]>::new("idemdb_meta"))
            .expect("meta")
            .insert("format", &99u32.to_le_bytes()[..])
            .expect("insert");
        w.commit().expect("commit");
    }
    match Store::open(&path) {
        Err(Error::NewerFormat {
            found: 99,
            supported: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
