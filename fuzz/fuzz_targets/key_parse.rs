//! cargo-fuzz target `key_parse`: the checks are `idemdb::fuzz_checks::key_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemdb::fuzz_checks::key_parse(data));
