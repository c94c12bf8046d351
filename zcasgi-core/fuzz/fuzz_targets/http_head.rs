//! cargo-fuzz target `http_head`: see `zcasgi_core_fuzz::http_head` (fuzz/src/http_head.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::http_head::run(input));
