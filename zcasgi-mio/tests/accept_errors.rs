//! Accept errors do not stop the server: out of file descriptors, it logs, backs off and goes
//! on once descriptors are free. Alone in its test binary because it lowers the process's
//! descriptor limit.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{masked_frame, read_frame, read_head, upgrade_request, TestServer, IO_TIMEOUT};
use socket2::{Domain, Socket, Type};
use zcasgi_core::testing::Seen;

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` writes one `rlimit` to the valid pointer it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, std::ptr::addr_of_mut!(lim)) }, 0);
    lim
}

fn set_nofile(lim: libc::rlimit) {
    // SAFETY: `setrlimit` reads one `rlimit` from the valid pointer it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, std::ptr::addr_of!(lim)) }, 0);
}

/// The lowest descriptor number not in use: with the limit set to it, no new one can be made.
fn lowest_free_fd() -> libc::rlim_t {
    // SAFETY: `dup` of standard input has no memory effects; the copy is closed at once.
    let fd = unsafe { libc::dup(0) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just returned by `dup` and is owned by nobody else.
    unsafe { libc::close(fd) };
    libc::rlim_t::try_from(fd).unwrap()
}

#[test]
fn emfile_is_logged_and_survived() {
    let t = TestServer::with_threads(1);
    // Client sockets exist before the limit drops; connecting needs no new descriptor.
    let sockets: Vec<Socket> =
        (0..3).map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap()).collect();
    let saved = nofile();
    set_nofile(libc::rlimit { rlim_cur: lowest_free_fd(), rlim_max: saved.rlim_max });
    let mut clients: Vec<TcpStream> = sockets
        .into_iter()
        .map(|s| {
            s.connect(&t.addr.into()).unwrap();
            s.into()
        })
        .collect();
    let logged = t.app.wait_for(IO_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Seen::Log(m) if m.contains("accept failed")))
    });
    set_nofile(saved);
    assert!(logged, "no accept error logged: {:?}", t.app.seen());
    // Descriptors are back: the waiting connections are served.
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        c.write_all(&upgrade_request("/")).unwrap();
        assert!(read_head(c).starts_with("HTTP/1.1 101"));
        let msg = format!("client {i}");
        c.write_all(&masked_frame(0x1, msg.as_bytes())).unwrap();
        assert_eq!(read_frame(c), (0x1, msg.into_bytes()));
    }
    t.assert_serving();
}
