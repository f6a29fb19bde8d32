//! Model-based testing (docs/reliability.md, scenarios 24 and, over crashes, 1–5): random
//! sequences of begin / complete / release / extend / abandon, clock moves and jumps, sweeps,
//! deletes, clean reopens and power cuts (now, or at a random later sync; durable or torn)
//! over two scopes and three keys, run against a real store on a simulated disk and compared
//! with the pure state machine over a map after every step.
//!
//! `IDEMDB_SEED` replays a run; `IDEMDB_MODEL_CASES` sets how many sequences (the soak
//! command raises it).
#![cfg(feature = "testing")]

mod common;

use idemdb::StoreBuilder;
use idemdb::testing::{Harness, HarnessStats, Step};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

fn step() -> impl Strategy<Value = Step> {
    let index = 0u8..6;
    prop_oneof![
        8 => (0u8..2, 0u8..3, 0u8..2, 0u8..4, 0u8..3).prop_map(|(scope, key, request, retention, lease)| {
            Step::Begin { scope, key, request, retention, lease }
        }),
        5 => (index.clone(), 0u8..4).prop_map(|(claim, response)| Step::Complete { claim, response }),
        2 => index.clone().prop_map(|claim| Step::Release { claim }),
        2 => (index.clone(), any::<bool>()).prop_map(|(claim, by_drop)| Step::Abandon { claim, by_drop }),
        2 => (index, 0u8..3).prop_map(|(claim, lease)| Step::Extend { claim, lease }),
        4 => prop_oneof![0u32..2_000, 50_000u32..200_000, Just(86_400_000u32)].prop_map(|ms| Step::Advance { ms }),
        1 => prop_oneof![0u32..2_000, Just(120_000u32)].prop_map(|ms| Step::JumpBack { ms }),
        2 => Just(Step::Sweep),
        1 => (0u8..2, 0u8..3).prop_map(|(scope, key)| Step::Delete { scope, key }),
        1 => Just(Step::Reopen),
        1 => proptest::option::of(any::<u64>()).prop_map(|torn| Step::Crash { torn }),
        1 => (1u8..10, proptest::option::of(any::<u64>())).prop_map(|(k, torn)| Step::CrashAtSync { k, torn }),
    ]
}

fn add(total: &mut HarnessStats, s: HarnessStats) {
    total.steps += s.steps;
    total.crashes += s.crashes;
    total.torn += s.torn;
    total.reopens += s.reopens;
    total.cut_short += s.cut_short;
    total.lost += s.lost;
}

fn run_model(name: &str, configure: fn(StoreBuilder) -> StoreBuilder) {
    let seed = common::seed();
    let cases = common::env_number("IDEMDB_MODEL_CASES", 160) as u32;
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let total = std::cell::RefCell::new(HarnessStats::default());
    let result = runner.run(&vec(step(), 1..60), |steps| {
        let mut harness =
            Harness::with(configure).map_err(|d| TestCaseError::fail(d.to_string()))?;
        let outcome = harness.run(&steps);
        add(&mut total.borrow_mut(), harness.stats());
        outcome.map_err(|d| TestCaseError::fail(d.to_string()))
    });
    let total = total.into_inner();
    eprintln!(
        "model ({name}): seed {seed}, {cases} sequences, {} steps, {} crashes ({} torn), {} reopens, \
         {} operations cut short by a crash, {} acknowledged operations lost",
        total.steps, total.crashes, total.torn, total.reopens, total.cut_short, total.lost
    );
    if let Err(e) = result {
        panic!("seed {seed} (replay with IDEMDB_SEED={seed}): {e}");
    }
    // `run` ends every sequence with a crash of its own; the sequences must add more.
    assert!(
        total.crashes > u64::from(cases),
        "the sequences never crashed the store themselves"
    );
}

#[test]
fn sequences_with_crashes_agree_with_the_model() {
    run_model("one-phase commit", |b| b);
    run_model("two-phase commit", |b| b.two_phase_commit(true));
}

#[test]
fn a_completed_key_survives_a_torn_crash_and_replays() {
    let mut h = Harness::new().expect("harness");
    let begin = |request| Step::Begin {
        scope: 0,
        key: 0,
        request,
        retention: 0,
        lease: 2,
    };
    let steps = [
        begin(0),
        Step::Complete {
            claim: 0,
            response: 1,
        },
        Step::Crash { torn: Some(11) },
        begin(0),
        begin(1),
    ];
    h.run(&steps).expect("agrees with the model");
    assert_eq!(h.stats().crashes, 2);
}
