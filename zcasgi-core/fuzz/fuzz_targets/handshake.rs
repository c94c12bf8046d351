//! cargo-fuzz target `handshake`: see `zcasgi_core_fuzz::handshake` (fuzz/src/handshake.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::handshake::run(input));
