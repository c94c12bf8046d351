//! An accept error such as `EMFILE` is logged and retried; it does not end the accept loop.
//! (Its own test binary: it lowers the process's descriptor limit.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use zcasgi_core::backend::{Backend, ServerConfig};
use zcasgi_core::testing::{EchoApp, Seen};
use zcasgi_tokio::TokioBackend;

fn set_fd_limit(soft: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) }, 0);
    let old = lim.rlim_cur;
    lim.rlim_cur = soft;
    // SAFETY: `lim` is a valid rlimit; lowering the soft limit below the hard one is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) }, 0);
    old
}

#[test]
fn accept_survives_running_out_of_descriptors() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = EchoApp::start();
    let server =
        TokioBackend.start(Arc::new(ServerConfig::default()), vec![listener], app.clone()).unwrap();

    // The client's descriptor exists before the limit drops; connecting needs no new one.
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
    let old = set_fd_limit(libc::rlim_t::try_from(lowest_free).unwrap());
    client.connect(&addr.into()).unwrap();
    let logged = app.wait_for(Duration::from_secs(4), |seen| {
        seen.iter().any(|s| matches!(s, Seen::Log(m) if m.starts_with("accept failed")))
    });
    let served_meanwhile = server.connection_count();
    set_fd_limit(old);
    assert!(logged, "{:?}", app.seen());
    assert_eq!(served_meanwhile, 0);

    // With descriptors back, the waiting client is served.
    let mut stream: std::net::TcpStream = client.into();
    stream.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let logs = app
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Log(m) if m.starts_with("accept failed")))
        .count();
    assert_eq!(logs, 1, "one log per streak of errors");
    drop(stream);
    server.shutdown();
    assert!(server.join(Duration::from_secs(4)));
}
