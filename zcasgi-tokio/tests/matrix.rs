//! The backend test matrix of `zcasgi_transport::testing`, run against the tokio backend: one
//! test per transport scenario, the same scenarios every backend runs.

zcasgi_transport::backend_matrix!(zcasgi_tokio::TokioBackend);
