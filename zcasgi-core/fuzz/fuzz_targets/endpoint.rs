//! cargo-fuzz target `endpoint`: see `zcasgi_core_fuzz::endpoint` (fuzz/src/endpoint.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::endpoint::run(input));
