//! Handing connections between the worker processes of one server: the inboxes, and the
//! `sendmsg`/`recvmsg` calls that move a socket and the bytes read from it.
//!
//! # Theory of operation
//!
//! Every worker index has an inbox: a `SOCK_SEQPACKET` Unix socket pair made by the supervisor
//! before it forks ([`inbox_pair`]) and kept across respawns, so that a connection handed to a
//! worker being replaced waits in the socket buffer for its successor. Worker `i` receives on
//! the receiving end of inbox `i`; every worker sends on the sending end of the owner's inbox.
//!
//! One hand-off is one message ([`send`]): a version byte, the connection's [`Origin`] (the
//! addresses and TLS facts its scope shows, at most [`MAX_ORIGIN`] bytes), then every byte read
//! from the connection (a request head and what followed it, at most
//! [`zcasgi_core::driver::max_handoff_bytes`]), with the connection's descriptor attached
//! (`SCM_RIGHTS`). A message is delivered whole or not at all, so many senders can share one
//! inbox. The sender then closes its own descriptor without shutting the socket down: the
//! connection lives on in the owner, which receives it ([`Receiver::recv`]) and starts a driver
//! with those bytes ([`zcasgi_core::driver::Driver::on_handed_in`]).
//!
//! The descriptor is the client's own socket, or, for a connection over TLS, one end of a
//! socket pair whose other end the sender relays to and from its TLS stream
//! ([`crate::relay`]). The receiver cannot tell the peer's address or the TLS facts from such
//! a socket, so the [`Origin`] travels with every hand-off: the owner builds the scope the
//! accepting worker would have built, and hands the connection on with it again if a later
//! request names a third worker.
//!
//! Sends never block: when the owner's inbox is full, [`send`] fails with `WouldBlock` and the
//! driver retries later (see `zcasgi_core::driver`).

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use socket2::{Domain, SockRef, Socket};
use zcasgi_core::backend::{LocalAddr, TlsInfo};
use zcasgi_core::driver::Driver;

use crate::io::send_vectored;
use crate::listener::Accepted;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The first byte of every hand-off message: the format's version.
const VERSION: u8 = 2;

/// Most bytes an encoded [`Origin`] may take (a client certificate chain larger than this
/// cannot be handed over: the request is answered 503).
pub const MAX_ORIGIN: usize = 64 * 1024;

/// What the application sees of a connection besides its bytes: its addresses and what TLS
/// established. It travels with every hand-off (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The peer's address (ASGI `client`).
    pub client: Option<SocketAddr>,
    /// The local address (ASGI `server`).
    pub server: Option<LocalAddr>,
    /// What TLS established, for a connection over TLS.
    pub tls: Option<Arc<TlsInfo>>,
}

impl Origin {
    /// The origin of the connection `driver` serves.
    #[must_use]
    pub fn of(driver: &Driver) -> Self {
        Self {
            client: driver.client(),
            server: driver.server().cloned(),
            tls: driver.tls().cloned(),
        }
    }

    /// Appends the encoding of this origin to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        encode_inet(out, self.client.as_ref());
        match &self.server {
            Some(LocalAddr::Unix(path)) => {
                out.put_u8(b'u');
                put_blob(out, path.as_os_str().as_bytes());
            }
            Some(LocalAddr::Inet(addr)) => encode_inet(out, Some(addr)),
            None => encode_inet(out, None),
        }
        let Some(tls) = &self.tls else {
            out.put_u8(0);
            return;
        };
        out.put_u8(1);
        out.put_u16(tls.version);
        out.put_u16(tls.cipher_suite);
        match &tls.server_cert {
            Some(cert) => {
                out.put_u8(1);
                put_blob(out, cert);
            }
            None => out.put_u8(0),
        }
        out.put_u32(u32::try_from(tls.client_cert_chain.len()).unwrap_or(u32::MAX));
        for cert in &tls.client_cert_chain {
            put_blob(out, cert);
        }
    }

    /// Decodes an origin from the front of `buf`, advancing it; `None` if it is malformed.
    fn decode(buf: &mut &[u8]) -> Option<Self> {
        let client = decode_inet(buf).ok()?;
        let server = if buf.first() == Some(&b'u') {
            buf.advance(1);
            let path = Path::new(OsStr::from_bytes(take_blob(buf)?));
            Some(LocalAddr::Unix(Arc::from(path)))
        } else {
            decode_inet(buf).ok()?.map(LocalAddr::Inet)
        };
        let tls = match take_u8(buf)? {
            0 => None,
            1 => {
                let version = take(buf, 2).map(|mut b| b.get_u16())?;
                let cipher_suite = take(buf, 2).map(|mut b| b.get_u16())?;
                let server_cert = match take_u8(buf)? {
                    0 => None,
                    1 => Some(take_blob(buf)?.to_vec()),
                    _ => return None,
                };
                let count = take(buf, 4).map(|mut b| b.get_u32())?;
                let client_cert_chain = (0..count)
                    .map(|_| take_blob(buf).map(<[u8]>::to_vec))
                    .collect::<Option<Vec<_>>>()?;
                Some(Arc::new(TlsInfo { version, cipher_suite, server_cert, client_cert_chain }))
            }
            _ => return None,
        };
        Some(Self { client, server, tls })
    }
}

/// Appends an IP address and port (`4` or `6` and the address, or `0` for none).
fn encode_inet(out: &mut Vec<u8>, addr: Option<&SocketAddr>) {
    match addr {
        None => out.put_u8(0),
        Some(SocketAddr::V4(a)) => {
            out.put_u8(4);
            out.put_slice(&a.ip().octets());
            out.put_u16(a.port());
        }
        Some(SocketAddr::V6(a)) => {
            out.put_u8(6);
            out.put_slice(&a.ip().octets());
            out.put_u16(a.port());
            out.put_u32(a.flowinfo());
            out.put_u32(a.scope_id());
        }
    }
}

/// Bytes that are not an encoded [`Origin`].
struct Malformed;

/// Decodes what [`encode_inet`] wrote.
fn decode_inet(buf: &mut &[u8]) -> Result<Option<SocketAddr>, Malformed> {
    Ok(match take_u8(buf).ok_or(Malformed)? {
        0 => None,
        4 => {
            let mut b = take(buf, 6).ok_or(Malformed)?;
            let ip = Ipv4Addr::from(b.get_u32());
            Some(SocketAddr::new(IpAddr::V4(ip), b.get_u16()))
        }
        6 => {
            let mut b = take(buf, 26).ok_or(Malformed)?;
            let ip = Ipv6Addr::from(b.get_u128());
            let (port, flowinfo, scope) = (b.get_u16(), b.get_u32(), b.get_u32());
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope)))
        }
        _ => return Err(Malformed),
    })
}

/// Appends a length (32 bits) and the bytes.
fn put_blob(out: &mut Vec<u8>, blob: &[u8]) {
    out.put_u32(u32::try_from(blob.len()).unwrap_or(u32::MAX));
    out.put_slice(blob);
}

/// Takes what [`put_blob`] wrote.
fn take_blob<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take(buf, 4)?.get_u32();
    take(buf, usize::try_from(len).ok()?)
}

fn take_u8(buf: &mut &[u8]) -> Option<u8> {
    take(buf, 1).map(|b| b[0])
}

/// Splits `n` bytes off the front of `buf`; `None` if it has fewer.
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    (buf.len() >= n).then(|| {
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        head
    })
}

/// The send buffer asked for on an inbox's sending end (the kernel may cap it at
/// `net.core.wmem_max`): the room for hand-offs waiting for a busy or respawning worker.
pub const INBOX_SEND_BUFFER: usize = 4 * 1024 * 1024;

/// Makes an inbox: its receiving end and its sending end, both close-on-exec.
///
/// # Errors
/// If the socket pair cannot be made.
pub fn inbox_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (receiving, sending) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // Best effort: a smaller buffer only means earlier retries.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&sending, INBOX_SEND_BUFFER);
    Ok((receiving, sending))
}

/// Checks that `fd` is an end of an inbox (a `SOCK_SEQPACKET` socket).
///
/// # Errors
/// `InvalidInput` if it is another kind of socket; the error of `getsockopt` if it is none.
pub fn check_inbox(fd: BorrowedFd<'_>) -> io::Result<()> {
    if rustix::net::sockopt::socket_type(fd)? == SocketType::SEQPACKET {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not a SOCK_SEQPACKET socket"))
    }
}

/// Sends the connection `conn`, its `origin` and `bytes`, what was read from it, to the inbox
/// whose sending end is `inbox`, without blocking.
///
/// # Errors
/// `WouldBlock` when the inbox is full; `InvalidInput` for an origin larger than
/// [`MAX_ORIGIN`]; any other error of `sendmsg` (`EMSGSIZE` for more bytes than the inbox's
/// buffer holds).
pub fn send(
    inbox: BorrowedFd<'_>,
    conn: BorrowedFd<'_>,
    origin: &Origin,
    bytes: &[u8],
) -> io::Result<()> {
    let mut head = vec![VERSION];
    origin.encode(&mut head);
    if head.len() - 1 > MAX_ORIGIN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the connection's certificates are too large to hand over",
        ));
    }
    let iov = [IoSlice::new(&head), IoSlice::new(bytes)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [conn];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match rustix::net::sendmsg(inbox, &iov, &mut control, flags) {
            // A sequenced packet goes whole or not at all.
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one [`Receiver::recv`] gave.
#[derive(Debug)]
pub enum Received {
    /// A connection another worker handed over, with the bytes it read from it
    /// ([`Accepted::handed`]).
    Conn(Accepted),
    /// A message that carried no usable connection, and why; its socket, if any, was answered
    /// 503 and closed.
    Dropped(&'static str),
}

/// Receives hand-offs from an inbox into a buffer of its own.
#[derive(Debug)]
pub struct Receiver {
    /// Room for the largest message and one byte more, to detect a longer one.
    buf: Vec<u8>,
}

impl Receiver {
    /// A receiver for messages of at most `max_bytes` read bytes (see
    /// [`zcasgi_core::driver::max_handoff_bytes`]) and an origin of at most [`MAX_ORIGIN`].
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self { buf: vec![0; 1 + MAX_ORIGIN + max_bytes + 1] }
    }

    /// Receives one hand-off from the receiving end `inbox`, without blocking.
    ///
    /// # Errors
    /// `WouldBlock` when the inbox is empty; any other error of `recvmsg`.
    pub fn recv(&mut self, inbox: BorrowedFd<'_>) -> io::Result<Received> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
        let msg = loop {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            match rustix::net::recvmsg(inbox, &mut iov, &mut control, flags) {
                Ok(msg) => break msg,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let len = msg.bytes;
        if msg.bytes == 0 && fds.is_empty() {
            // Only a peer that closed its end sends nothing; the supervisor keeps both open.
            return Ok(Received::Dropped("an empty message"));
        }
        let mut fds = fds.into_iter();
        let (Some(fd), None) = (fds.next(), fds.next()) else {
            return Ok(Received::Dropped("a message without exactly one descriptor"));
        };
        let mut rest = &self.buf[1..len.min(self.buf.len())];
        let checked = if msg.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
            || len >= self.buf.len()
        {
            Err("a message larger than a hand-off")
        } else if self.buf[0] != VERSION {
            Err("a message of an unknown version")
        } else if !is_stream(fd.as_fd()) {
            Err("a descriptor that is not a stream socket")
        } else {
            Origin::decode(&mut rest).ok_or("a message with a malformed origin")
        };
        let origin = match checked {
            Ok(origin) => origin,
            Err(why) => {
                refuse(fd);
                return Ok(Received::Dropped(why));
            }
        };
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        if socket.domain().is_ok_and(|d| d != Domain::UNIX) {
            crate::io::configure(SockRef::from(&socket));
        }
        let Origin { client, server, tls } = origin;
        let handed = Some(BytesMut::from(rest));
        Ok(Received::Conn(Accepted { socket, client, server, handed, tls }))
    }
}

/// Whether `fd` is a stream socket.
fn is_stream(fd: BorrowedFd<'_>) -> bool {
    rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM)
}

/// Answers a connection that arrived broken with 503 (best effort: one non-blocking write)
/// and closes it.
fn refuse(fd: OwnedFd) {
    if is_stream(fd.as_fd()) {
        let answer =
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let socket = Socket::from(fd);
        let _ = socket.set_nonblocking(true);
        let _ = send_vectored(SockRef::from(&socket), &[IoSlice::new(answer)]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::*;

    /// A connected pair of TCP sockets: (client, server side).
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    #[test]
    fn a_connection_and_its_bytes_reach_the_inbox() {
        let (receiving, sending) = inbox_pair().unwrap();
        check_inbox(receiving.as_fd()).unwrap();
        check_inbox(sending.as_fd()).unwrap();
        let (mut client, server) = tcp_pair();
        let peer = server.peer_addr().unwrap();
        let origin = Origin {
            client: Some(peer),
            server: Some(LocalAddr::Inet(client.peer_addr().unwrap())),
            tls: None,
        };
        send(sending.as_fd(), server.as_fd(), &origin, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        // The sender closes its descriptor: the connection lives on in the receiver.
        drop(server);
        let mut receiver = Receiver::new(1024);
        let Received::Conn(handed) = receiver.recv(receiving.as_fd()).unwrap() else {
            panic!("no connection")
        };
        assert_eq!(&handed.handed.unwrap()[..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(handed.client, Some(peer));
        assert_eq!(handed.server, Some(LocalAddr::Inet(client.peer_addr().unwrap())));
        assert_eq!(handed.tls, None);
        let mut stream = TcpStream::from(OwnedFd::from(handed.socket));
        stream.set_nonblocking(false).unwrap();
        stream.write_all(b"answer").unwrap();
        let mut got = [0; 6];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"answer");
        let empty = receiver.recv(receiving.as_fd()).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_unix_connection_is_handed_over_too() {
        let (receiving, sending) = inbox_pair().unwrap();
        let (mut client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        send(sending.as_fd(), server.as_fd(), &Origin::default(), b"GET").unwrap();
        drop(server);
        let Received::Conn(handed) = Receiver::new(16).recv(receiving.as_fd()).unwrap() else {
            panic!("no connection")
        };
        assert_eq!((handed.client, handed.server), (None, None), "an unnamed Unix socket");
        let mut stream = std::os::unix::net::UnixStream::from(OwnedFd::from(handed.socket));
        stream.set_nonblocking(false).unwrap();
        stream.write_all(b"ok").unwrap();
        let mut got = [0; 2];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }

    #[test]
    fn a_full_inbox_would_block() {
        let (_receiving, sending) = inbox_pair().unwrap();
        let (_client, server) = tcp_pair();
        let big = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        let err = loop {
            match send(sending.as_fd(), server.as_fd(), &Origin::default(), &big) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "the inbox never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(sent > 0);
    }

    #[test]
    fn an_oversized_message_is_answered_503_and_dropped() {
        let (receiving, sending) = inbox_pair().unwrap();
        let (mut client, server) = tcp_pair();
        send(sending.as_fd(), server.as_fd(), &Origin::default(), &vec![b'x'; MAX_ORIGIN + 100])
            .unwrap();
        drop(server);
        let mut receiver = Receiver::new(10);
        let dropped = receiver.recv(receiving.as_fd()).unwrap();
        assert!(matches!(dropped, Received::Dropped("a message larger than a hand-off")));
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    }

    /// The origin of a relayed TLS connection: an IPv6 client, a Unix listener, a client
    /// certificate chain.
    fn tls_origin() -> Origin {
        let client = "[fe80::1%2]:4433".parse::<SocketAddr>().unwrap();
        Origin {
            client: Some(client),
            server: Some(LocalAddr::Unix(Arc::from(Path::new("/run/app/zcasgi.sock")))),
            tls: Some(Arc::new(TlsInfo {
                version: 0x0304,
                cipher_suite: 0x1301,
                server_cert: Some(vec![1, 2, 3]),
                client_cert_chain: vec![vec![4; 300], vec![], vec![5]],
            })),
        }
    }

    #[test]
    fn an_origin_survives_the_encoding() {
        let v4 = Origin {
            client: Some("10.0.0.7:51000".parse().unwrap()),
            server: Some(LocalAddr::Inet("127.0.0.1:8443".parse().unwrap())),
            tls: Some(Arc::new(TlsInfo::default())),
        };
        for origin in [Origin::default(), tls_origin(), v4] {
            let mut encoded = Vec::new();
            origin.encode(&mut encoded);
            encoded.extend_from_slice(b"rest");
            let mut rest = &encoded[..];
            assert_eq!(Origin::decode(&mut rest), Some(origin));
            assert_eq!(rest, b"rest");
        }
    }

    #[test]
    fn a_malformed_origin_is_refused() {
        let mut encoded = Vec::new();
        tls_origin().encode(&mut encoded);
        for cut in 0..encoded.len() {
            assert_eq!(Origin::decode(&mut &encoded[..cut]), None, "cut at {cut}");
        }
        for bad in [&[9][..], &[0, 0, 2], &[4, 1]] {
            assert_eq!(Origin::decode(&mut &bad[..]), None, "{bad:?}");
        }
    }

    #[test]
    fn the_origin_of_a_relayed_tls_connection_reaches_the_inbox() {
        let (receiving, sending) = inbox_pair().unwrap();
        let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        send(sending.as_fd(), theirs.as_fd(), &tls_origin(), b"GET").unwrap();
        let Received::Conn(handed) = Receiver::new(16).recv(receiving.as_fd()).unwrap() else {
            panic!("no connection")
        };
        let Origin { client, server, tls } = tls_origin();
        assert_eq!((handed.client, handed.server, handed.tls), (client, server, tls));
        assert_eq!(&handed.handed.unwrap()[..], b"GET");
    }

    #[test]
    fn an_origin_too_large_is_not_sent() {
        let (_receiving, sending) = inbox_pair().unwrap();
        let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let chain = vec![vec![0; MAX_ORIGIN]];
        let tls = Some(Arc::new(TlsInfo { client_cert_chain: chain, ..TlsInfo::default() }));
        let origin = Origin { tls, ..Origin::default() };
        let err = send(sending.as_fd(), theirs.as_fd(), &origin, b"GET").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_message_without_a_descriptor_is_dropped() {
        let (receiving, sending) = inbox_pair().unwrap();
        rustix::net::send(&sending, &[VERSION, b'x'], SendFlags::empty()).unwrap();
        let got = Receiver::new(10).recv(receiving.as_fd()).unwrap();
        assert!(matches!(got, Received::Dropped("a message without exactly one descriptor")));
    }

    #[test]
    fn only_seqpacket_sockets_are_inboxes() {
        let (a, _b) = tcp_pair();
        assert_eq!(check_inbox(a.as_fd()).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
