//! cargo-fuzz target `op_sequence`: the checks are `idemdb::fuzz_checks::op_sequence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemdb::fuzz_checks::op_sequence(data));
