//! cargo-fuzz target `decode`: see `zcasgi_core_fuzz::decode` (fuzz/src/decode.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::decode::run(input));
