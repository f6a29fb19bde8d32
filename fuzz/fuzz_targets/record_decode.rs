//! cargo-fuzz target `record_decode`: the checks are `idemdb::fuzz_checks::record_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemdb::fuzz_checks::record_decode(data));
