//! Prints the memory held per idle WebSocket connection by the tokio backend (a measurement, not
//! a test): `cargo run --profile ci -p zcasgi-tokio --example tokio_idle_memory -- [connections]`.

fn main() {
    let n = std::env::args().nth(1).map_or(5000, |n| n.parse().expect("a number of connections"));
    zcasgi_transport::testing::print_idle_memory(&zcasgi_tokio::TokioBackend, n);
}
