//! cargo-fuzz target `canonical_json`: the checks are `idemdb::fuzz_checks::canonical_json_check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemdb::fuzz_checks::canonical_json_check(data));
