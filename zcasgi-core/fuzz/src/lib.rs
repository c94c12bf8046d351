//! The bodies of the fuzz targets, one module per target.
//!
//! Each module has a `run(input: &[u8])` that panics when the code under test breaks one of
//! the invariants the module documents. The cargo-fuzz targets (`fuzz_targets/*.rs`) call it
//! with what libFuzzer generates; `zcasgi-core/tests/fuzz_corpus.rs` includes this file with
//! `#[path]` and calls it with every committed seed (`fuzz/seeds/<target>/`), so an ordinary
//! `cargo test` on stable re-checks the corpora. [`TARGETS`] lists them by name.
//!
//! Structured inputs are read with `arbitrary` from the raw bytes, so a seed file is what
//! libFuzzer saved, whatever the target.

pub mod common;
pub mod decode;
pub mod deflate;
pub mod driver;
pub mod endpoint;
pub mod engineio;
pub mod handshake;
pub mod http_body;
pub mod http_head;

/// A target's body: panics when the input makes the code under test break an invariant.
pub type Body = fn(&[u8]);

/// Every target: its name (the binary and seed directory) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("decode", decode::run),
    ("http_head", http_head::run),
    ("http_body", http_body::run),
    ("handshake", handshake::run),
    ("deflate", deflate::run),
    ("driver", driver::run),
    ("engineio", engineio::run),
    ("endpoint", endpoint::run),
];
