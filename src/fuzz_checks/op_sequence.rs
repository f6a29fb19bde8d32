//! The `op_sequence` target: operation sequences against the reference model.

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
pub(super) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
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

// Seeds.
