//! A measurement, not a test: the memory held per idle WebSocket connection.

use std::time::Instant;

use zcasgi_core::backend::{Backend, ServerConfig};

use super::{wait_until, TestServer};

/// The process's resident set size, in KiB (Linux).
fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens `n` idle WebSockets to `backend` (two I/O threads, the echo application) and prints
/// the growth of the resident set per connection, server and application side together
/// (clients included: they live in the same process).
pub fn print_idle_memory(backend: &dyn Backend, n: usize) {
    const WARM_UP: usize = 200;
    let t = TestServer::start(backend, ServerConfig { io_threads: 2, ..ServerConfig::default() });
    // Warm up: thread stacks, first read buffers, allocator arenas.
    let mut clients: Vec<_> = (0..WARM_UP).map(|_| t.raw_ws()).collect();
    let before = rss_kib();
    let start = Instant::now();
    clients.extend((0..n).map(|_| t.raw_ws()));
    let opened = start.elapsed();
    wait_until("every connection", || t.server.connection_count() == n + WARM_UP);
    let after = rss_kib();
    println!(
        "{}: {n} idle WebSockets: RSS +{} KiB, {} bytes per connection (opened in {opened:?})",
        backend.name(),
        after.saturating_sub(before),
        after.saturating_sub(before) * 1024 / n.max(1),
    );
    drop(clients);
    t.wait_idle();
}
