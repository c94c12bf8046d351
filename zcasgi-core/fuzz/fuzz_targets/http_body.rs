//! cargo-fuzz target `http_body`: see `zcasgi_core_fuzz::http_body` (fuzz/src/http_body.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::http_body::run(input));
