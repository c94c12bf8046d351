//! cargo-fuzz target `driver`: see `zcasgi_core_fuzz::driver` (fuzz/src/driver.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| zcasgi_core_fuzz::driver::run(input));
