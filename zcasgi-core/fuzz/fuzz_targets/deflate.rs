//! cargo-fuzz target `deflate`: see `zcasgi_core_fuzz::deflate` (fuzz/src/deflate.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::deflate::run(input));
