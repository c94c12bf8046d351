//! The backend test matrix of `zcasgi_transport::testing`, run against the mio backend: one
//! test per transport scenario, the same scenarios every backend runs; then again with no I/O
//! thread (`io_threads = 0`), its reactor turned from a thread of the test's as an event loop
//! would turn it.

zcasgi_transport::backend_matrix!(zcasgi_mio::MioBackend);

mod inline {
    zcasgi_transport::backend_matrix!(zcasgi_transport::testing::Inline(zcasgi_mio::MioBackend));
}
