//! cargo-fuzz target `journal_frame`: the checks are `idemdb::fuzz_checks::journal_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemdb::fuzz_checks::journal_frame(data));
