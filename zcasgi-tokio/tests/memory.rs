//! Rough memory held per idle WebSocket connection (server and application side together).
//! Not a pass/fail test; run it with
//! `cargo test -p zcasgi-tokio --profile ci --test memory -- --ignored --nocapture`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zcasgi_core::backend::{Backend, ServerConfig};
use zcasgi_core::testing::EchoApp;
use zcasgi_tokio::TokioBackend;

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[ignore = "prints a measurement; run explicitly"]
fn idle_memory_per_connection() {
    const N: usize = 5000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = EchoApp::start();
    let cfg = ServerConfig { io_threads: 2, ..ServerConfig::default() };
    let server = TokioBackend.start(Arc::new(cfg), vec![listener], app.clone()).unwrap();
    let mut clients = Vec::with_capacity(N);
    let open = |clients: &mut Vec<TcpStream>, n: usize| {
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(
                b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(s.read(&mut b).unwrap(), 1);
                head.push(b[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101"));
            clients.push(s);
        }
    };
    // Warm up (thread stacks, first read buffers, allocator arenas).
    open(&mut clients, 200);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib();
    let start = Instant::now();
    open(&mut clients, N);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();
    assert_eq!(server.connection_count(), N + 200);
    println!(
        "{N} idle WebSockets: RSS +{} KiB, {} bytes per connection (opened in {:?})",
        after - before,
        (after - before) * 1024 / N,
        start.elapsed()
    );
    drop(clients);
    server.shutdown();
    assert!(server.join(Duration::from_secs(10)));
}
