//! The kinds of listening socket — TCP and Unix stream — behind one type, and accepting from
//! them.
//!
//! A backend registers [`Listener::socket`] with its event model and calls
//! [`Listener::accept`] when it is readable; what it gets is an [`Accepted`] socket, already
//! non-blocking, close-on-exec and configured ([`crate::io::configure`]), with the addresses
//! the application sees. Every socket call of a connection then goes through a
//! [`socket2::Socket`], whatever its kind, so no backend has a code path per kind.
//!
//! ASGI addresses: a TCP connection has `client = (host, port)` and `server = (host, port)`; a
//! Unix one has no client address (`None`, as the spec and uvicorn say: the peer of a Unix
//! socket has no host or port) and `server = (path, None)`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use zcasgi_core::backend::{self, LocalAddr};

/// A listening socket of either kind, non-blocking.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// A Unix stream socket (no `TCP_NODELAY`, no client address).
    unix: bool,
    /// The local address of every accepted socket, when the listener has one fixed address
    /// (any Unix listener, a TCP listener bound to one address): `getsockname` is then needed
    /// only for TCP listeners bound to a wildcard address.
    local: Option<LocalAddr>,
}

/// A connection just accepted, with the addresses the application sees.
#[derive(Debug)]
pub struct Accepted {
    /// The socket: non-blocking, close-on-exec, configured.
    pub socket: Socket,
    /// The peer's address; `None` for a Unix socket.
    pub client: Option<SocketAddr>,
    /// The local address.
    pub server: Option<LocalAddr>,
    /// For a connection another worker handed over ([`crate::handoff`]): the bytes it read
    /// from it, which the driver starts with.
    pub handed: Option<bytes::BytesMut>,
    /// For a connection another worker handed over that reached it over TLS (the socket is
    /// then one end of that worker's relay, [`crate::relay`]): what TLS established.
    pub tls: Option<Arc<zcasgi_core::backend::TlsInfo>>,
}

impl Listener {
    /// Takes a listening socket handed to a backend, making it non-blocking.
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn new(listener: backend::Listener) -> io::Result<Self> {
        let (socket, unix) = match listener {
            backend::Listener::Tcp(l) => (Socket::from(OwnedFd::from(l)), false),
            backend::Listener::Unix(l) => (Socket::from(OwnedFd::from(l)), true),
        };
        socket.set_nonblocking(true)?;
        let local = socket.local_addr().ok().and_then(|addr| {
            if unix {
                unix_path(&addr)
            } else {
                addr.as_socket().filter(|a| !a.ip().is_unspecified()).map(LocalAddr::Inet)
            }
        });
        Ok(Self { socket, unix, local })
    }

    /// Another descriptor of the same listening socket (one per reactor thread).
    ///
    /// # Errors
    /// If the descriptor cannot be duplicated.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { socket: self.socket.try_clone()?, unix: self.unix, local: self.local.clone() })
    }

    /// The socket, to register with an event loop.
    #[must_use]
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Whether this is a Unix stream listener.
    #[must_use]
    pub fn is_unix(&self) -> bool {
        self.unix
    }

    /// Accepts one connection; `WouldBlock` when none is waiting.
    ///
    /// # Errors
    /// What `accept4(2)` returns, to be classified by [`crate::accept::AcceptError`].
    pub fn accept(&self) -> io::Result<Accepted> {
        let (socket, peer) = self.socket.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
        let server = if self.unix {
            self.local.clone()
        } else {
            crate::io::configure(SockRef::from(&socket));
            self.local.clone().or_else(|| {
                socket.local_addr().ok().and_then(|a| a.as_socket()).map(LocalAddr::Inet)
            })
        };
        Ok(Accepted { socket, client: peer.as_socket(), server, handed: None, tls: None })
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The path of a Unix socket address; `None` for an unnamed or abstract one.
fn unix_path(addr: &SockAddr) -> Option<LocalAddr> {
    addr.as_pathname().map(|p| LocalAddr::Unix(Arc::<Path>::from(p)))
}

/// Takes an inherited listening socket (`--fd`, systemd socket activation) as the kind it is.
///
/// # Errors
/// `InvalidInput` if the descriptor is not a listening stream socket of a kind served (TCP
/// over IPv4 or IPv6, Unix); the error of `getsockopt` if it is not a socket at all.
pub fn adopt(fd: OwnedFd) -> io::Result<backend::Listener> {
    let socket = Socket::from(fd);
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    if socket.r#type()? != Type::STREAM {
        return Err(invalid("not a stream socket"));
    }
    if !socket.is_listener()? {
        return Err(invalid("not a listening socket (listen(2) was not called)"));
    }
    match socket.domain()? {
        Domain::UNIX => Ok(backend::Listener::Unix(OwnedFd::from(socket).into())),
        Domain::IPV4 | Domain::IPV6 => Ok(backend::Listener::Tcp(OwnedFd::from(socket).into())),
        _ => Err(invalid("not a TCP or Unix socket")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    #[test]
    fn unix_connections_have_the_path_as_server_and_no_client() {
        let dir = std::env::temp_dir().join(format!("zcasgi-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = Listener::new(UnixListener::bind(&path).unwrap().into()).unwrap();
        assert!(l.is_unix());
        let mut client = UnixStream::connect(&path).unwrap();
        let accepted = l.accept().unwrap();
        assert_eq!(accepted.client, None);
        assert_eq!(accepted.server, Some(LocalAddr::Unix(Arc::from(path.as_path()))));
        client.write_all(b"x").unwrap();
        let mut got = [0; 1];
        let mut server = std::os::unix::net::UnixStream::from(OwnedFd::from(accepted.socket));
        server.set_nonblocking(false).unwrap();
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_connections_have_both_addresses() {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let l = Listener::new(std.into()).unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = l.accept().unwrap();
        assert_eq!(accepted.client, Some(client.local_addr().unwrap()));
        assert_eq!(accepted.server, Some(LocalAddr::Inet(addr)));
    }

    #[test]
    fn adopt_takes_listening_sockets_of_either_kind_and_refuses_the_rest() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(adopt(tcp.into()).unwrap(), backend::Listener::Tcp(_)));
        let (a, _b) = UnixStream::pair().unwrap();
        let err = adopt(a.into()).unwrap_err();
        assert!(err.to_string().contains("not a listening socket"), "{err}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(adopt(udp.into()).unwrap_err().to_string().contains("not a stream socket"));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(adopt(file.into()).is_err());
    }
}
