//! cargo-fuzz target `engineio`: see `zcasgi_core_fuzz::engineio` (fuzz/src/engineio.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::engineio::run(input));
