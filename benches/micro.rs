//! Micro-benchmarks of idemdb's pieces, one criterion group each:
//!
//! - `fingerprint`: framed fields of small and large bodies, canonical JSON bodies;
//! - `codec`: encoding and decoding a stored record with a 200-byte response;
//! - `decision`: the writer's transition of a claim for each state a `begin` can find, and
//!   of a completion;
//! - `key`: key checks under the opaque and the UUID policy, and the scope check;
//! - `import_many`: loading 50,000 completed records with 200-byte responses per call,
//!   one group commit per batch (records per second), into a new store file and into one
//!   that keeps growing (there the folds into the database set the pace).
//!
//! ```sh
//! cargo bench --bench micro --features bench-internals
//! cargo bench --bench micro --features bench-internals -- decision   # one group
//! cargo bench --bench micro -- import_many                            # no feature needed
//! ```
//!
//! Everything goes through the public API except the codec and the decision, which are
//! crate-private and reached through the doc-hidden `idemdb::bench_internals` module
//! (feature `bench-internals`). Without the feature those two groups are left out and the
//! others run.

// Without `bench-internals` the codec and decision groups are left out, and the samples
// only they use are unused.
#![cfg_attr(not(feature = "bench-internals"), allow(dead_code, unused_imports))]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use idemdb::{
    ClaimId, Fingerprint, KeyPolicy, Record, RecoveryPolicy, Store, Timestamp, UuidVersions,
    canonical_json, validate_scope,
};

/// The benchmark's "now": 2026-01-01T00:00:00Z.
const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);
const RESPONSE_LEN: usize = 200;
/// The claim id of the in-flight records.
const HELD: ClaimId = ClaimId::from_u128(0x9c2e_0000_0000_0000_0000_0000_0000_0001);
const KEY: &str = "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d";

/// A JSON object of about `len` bytes: members in non-canonical order, with whitespace,
/// nested objects and arrays, as a client would send a request body.
fn json_body(len: usize) -> Vec<u8> {
    let mut out = String::from("{\n  \"currency\": \"EUR\",\n  \"amount\": 1000,\n  \"items\": [");
    let mut i = 0;
    while out.len() + 80 < len {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "\n    {{ \"sku\": \"item-{i:05}\", \"qty\": {}, \"price\": {}.5, \"tags\": [\"a\", \"b\"] }}",
            i % 7 + 1,
            i * 3
        ));
        i += 1;
    }
    out.push_str("\n  ],\n  \"customer\": { \"name\": \"Ada\", \"id\": 42 }\n}");
    out.into_bytes()
}

fn response() -> Vec<u8> {
    let mut r =
        br#"{"id":"ch_7f1c0b9e","status":"succeeded","amount":1000,"currency":"EUR","pad":""#
            .to_vec();
    r.resize(RESPONSE_LEN - 2, b'x');
    r.extend_from_slice(b"\"}");
    r
}

fn fp(body: &[u8]) -> Fingerprint {
    Fingerprint::builder()
        .method("POST")
        .path("/v1/charges")
        .body(body)
        .finish()
}

fn fingerprint(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint");
    for len in [64usize, 1024, 64 * 1024] {
        let body = vec![b'a'; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("fields", len), &body, |b, body| {
            b.iter(|| {
                Fingerprint::builder()
                    .method(black_box("POST"))
                    .path(black_box("/v1/charges"))
                    .body(black_box(body))
                    .finish()
            });
        });
    }
    for len in [256usize, 4096] {
        let body = json_body(len);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("canonical_json", body.len()),
            &body,
            |b, body| b.iter(|| canonical_json(black_box(body)).expect("valid JSON")),
        );
        group.bench_with_input(
            BenchmarkId::new("fields+json_body", body.len()),
            &body,
            |b, body| {
                b.iter(|| {
                    Fingerprint::builder()
                        .method("POST")
                        .path("/v1/orders")
                        .json_body(black_box(body))
                        .expect("valid JSON")
                        .finish()
                });
            },
        );
    }
    group.finish();
}

fn completed(at: Timestamp) -> Record {
    Record::builder(fp(KEY.as_bytes()), at)
        .expires_at(Some(Timestamp::from_millis(
            at.as_millis() + 24 * 3600 * 1000,
        )))
        .completed(at, response())
}

fn in_flight(at: Timestamp, lease_ms: u64) -> Record {
    Record::builder(fp(KEY.as_bytes()), at)
        .expires_at(Some(Timestamp::from_millis(
            at.as_millis() + 24 * 3600 * 1000,
        )))
        .in_flight(HELD, Timestamp::from_millis(at.as_millis() + lease_ms))
}

#[cfg(feature = "bench-internals")]
fn codec(c: &mut Criterion) {
    use idemdb::bench_internals::{decode_record, encode_record};
    let mut group = c.benchmark_group("codec");
    for (name, record) in [
        ("completed_200B", completed(NOW)),
        ("in_flight", in_flight(NOW, 60_000)),
    ] {
        let bytes = encode_record(&record).expect("encodes");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| encode_record(black_box(&record)).expect("encodes"));
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| decode_record(black_box(&bytes)).expect("decodes"));
        });
    }
    group.finish();
}

#[cfg(not(feature = "bench-internals"))]
fn codec(_: &mut Criterion) {}

#[cfg(feature = "bench-internals")]
fn decision(c: &mut Criterion) {
    use idemdb::bench_internals::{self as decision, ClaimSpec, Operation};
    let mut group = c.benchmark_group("decision");
    let same = fp(KEY.as_bytes());
    let other = fp(b"another request");
    let earlier = Timestamp::from_millis(NOW.as_millis() - 5_000);
    let long_ago = Timestamp::from_millis(NOW.as_millis() - 2 * 24 * 3600 * 1000);
    let cases: [(&str, Option<Record>, Fingerprint, RecoveryPolicy); 7] = [
        ("absent", None, same, RecoveryPolicy::TakeOver),
        (
            "expired",
            Some(completed(long_ago)),
            same,
            RecoveryPolicy::TakeOver,
        ),
        (
            "completed_replay",
            Some(completed(earlier)),
            same,
            RecoveryPolicy::TakeOver,
        ),
        (
            "conflict",
            Some(completed(earlier)),
            other,
            RecoveryPolicy::TakeOver,
        ),
        (
            "in_flight_live",
            Some(in_flight(earlier, 60_000)),
            same,
            RecoveryPolicy::TakeOver,
        ),
        (
            "lease_ended_takeover",
            Some(in_flight(earlier, 1_000)),
            same,
            RecoveryPolicy::TakeOver,
        ),
        (
            "lease_ended_strict",
            Some(in_flight(earlier, 1_000)),
            same,
            RecoveryPolicy::Strict,
        ),
    ];
    // The writer's full step: decide, build the new record (when executing), report the
    // outcome. The clone of the stored record is part of what the writer does with the one
    // it read. The claiming opening is the holder's: a live lease is in progress.
    let claimer = ClaimId::from_u128(HELD.as_u128() + 1);
    for (name, record, fingerprint, policy) in &cases {
        let claim = Operation::Claim(ClaimSpec::new(*fingerprint, claimer).recovery(*policy));
        group.bench_function(BenchmarkId::new("claim", name), |b| {
            b.iter(|| {
                decision::transition(black_box(record.clone()), black_box(claim.clone()), NOW)
            });
        });
    }
    let held = in_flight(earlier, 60_000);
    let complete = Operation::Complete {
        claim: HELD,
        response: response(),
    };
    group.bench_function("transition/complete_200B", |b| {
        b.iter(|| {
            decision::transition(
                Some(black_box(held.clone())),
                black_box(complete.clone()),
                NOW,
            )
        });
    });
    group.finish();
}

#[cfg(not(feature = "bench-internals"))]
fn decision(_: &mut Criterion) {}

fn key(c: &mut Criterion) {
    let mut group = c.benchmark_group("key");
    let opaque = KeyPolicy::default();
    let uuid = KeyPolicy::Uuid(UuidVersions::only(&[4, 7]).expect("valid versions"));
    let long = "k".repeat(255);
    let upper = KEY.to_ascii_uppercase();
    let cases: [(&str, &KeyPolicy, &str, bool); 7] = [
        ("opaque/uuid_text", &opaque, KEY, true),
        ("opaque/255_bytes", &opaque, &long, true),
        ("opaque/control_char", &opaque, "order\n42", false),
        ("uuid/v4_lower", &uuid, KEY, true),
        ("uuid/v4_upper", &uuid, &upper, true),
        ("uuid/not_a_uuid", &uuid, "order-4815", false),
        (
            "uuid/v1_not_allowed",
            &uuid,
            "7f1c0b9e-2a4d-1c8e-9b1a-3e5f6a7b8c9d",
            false,
        ),
    ];
    for (name, policy, key, valid) in cases {
        assert_eq!(policy.validate(key).is_ok(), valid, "{name}");
        group.bench_function(name, |b| b.iter(|| policy.validate(black_box(key)).is_ok()));
    }
    group.bench_function("scope", |b| {
        b.iter(|| validate_scope(black_box("tenant-42/payments")).is_ok());
    });
    group.finish();
}

/// Records per `import_many` call in the benchmark.
const IMPORT_BATCH: u64 = 50_000;

/// `IMPORT_BATCH` completed records with 200-byte responses, keys from `first` on.
fn import_records(first: u64, now: Timestamp) -> Vec<(&'static str, String, Record)> {
    let expires = Some(Timestamp::from_millis(now.as_millis() + 24 * 3600 * 1000));
    (first..first + IMPORT_BATCH)
        .map(|i| {
            let record = Record::builder(fp(&i.to_le_bytes()), now)
                .expires_at(expires)
                .completed(now, response());
            ("bench", format!("{i:016x}-7f1c0b9e-2a4d-4c8e"), record)
        })
        .collect()
}

/// `fresh_store`: one call into a new store file (the journal absorbs it; folding it into
/// the database follows in the background). `growing_store`: call after call into one
/// store, so the folds into the database are part of the rate.
fn import_many(c: &mut Criterion) {
    let mut group = c.benchmark_group("import_many");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(IMPORT_BATCH));
    let open = |dir: &tempfile::TempDir| {
        Store::builder()
            .sweep_interval(None)
            .open(dir.path().join("import.idemdb"))
            .expect("open the store")
    };
    group.bench_function("fresh_store", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store = open(&dir);
                let records = import_records(0, store.now());
                let start = Instant::now();
                let written = store.import_many(records, false).expect("import");
                spent += start.elapsed();
                assert_eq!(written, IMPORT_BATCH);
                store.close().expect("close the store");
            }
            spent
        });
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir);
    let mut next = 0u64;
    group.bench_function("growing_store", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // Fresh keys each time, built before the clock starts.
                let records = import_records(next, store.now());
                next += IMPORT_BATCH;
                let start = Instant::now();
                let written = store.import_many(records, false).expect("import");
                spent += start.elapsed();
                assert_eq!(written, IMPORT_BATCH);
            }
            spent
        });
    });
    group.finish();
    store.close().expect("close the store");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = fingerprint, codec, decision, key, import_many
}
criterion_main!(benches);
