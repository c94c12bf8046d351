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
//! One hand-off is one message ([`send`]): a version byte, then every byte read from the
//! connection (a request head and what followed it, at most
//! [`zcasgi_core::driver::max_handoff_bytes`]), with the connection's descriptor attached
//! (`SCM_RIGHTS`). A message is delivered whole or not at all, so many senders can share one
//! inbox. The sender then closes its own descriptor without shutting the socket down: the
//! connection lives on in the owner, which receives it ([`Receiver::recv`]) and starts a driver
//! with those bytes ([`zcasgi_core::driver::Driver::on_handed_in`]).
//!
//! Sends never block: when the owner's inbox is full, [`send`] fails with `WouldBlock` and the
//! driver retries later (see `zcasgi_core::driver`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;
use socket2::{Domain, SockRef, Socket};
use zcasgi_core::backend::LocalAddr;

use crate::io::send_vectored;
use crate::listener::Accepted;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The first byte of every hand-off message: the format's version.
const VERSION: u8 = 1;

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

/// Sends the connection `conn` and `bytes`, what was read from it, to the inbox whose sending
/// end is `inbox`, without blocking.
///
/// # Errors
/// `WouldBlock` when the inbox is full; any other error of `sendmsg` (`EMSGSIZE` for more
/// bytes than the inbox's buffer holds).
pub fn send(inbox: BorrowedFd<'_>, conn: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    let iov = [IoSlice::new(&[VERSION]), IoSlice::new(bytes)];
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
    /// [`zcasgi_core::driver::max_handoff_bytes`]).
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self { buf: vec![0; max_bytes + 2] }
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
        let why = if msg.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
            || len >= self.buf.len()
        {
            Some("a message larger than a hand-off")
        } else if self.buf[0] != VERSION {
            Some("a message of an unknown version")
        } else if !is_stream(fd.as_fd()) {
            Some("a descriptor that is not a stream socket")
        } else {
            None
        };
        if let Some(why) = why {
            refuse(fd);
            return Ok(Received::Dropped(why));
        }
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        let bytes = BytesMut::from(&self.buf[1..len]);
        Ok(Received::Conn(accepted(socket, bytes)))
    }
}

/// A connection handed over, with the addresses the application sees (as
/// [`crate::Listener::accept`] gives them).
fn accepted(socket: Socket, bytes: BytesMut) -> Accepted {
    let local = socket.local_addr().ok();
    let (client, server) = if socket.domain().is_ok_and(|d| d == Domain::UNIX) {
        let path = local.as_ref().and_then(|a| a.as_pathname().map(std::sync::Arc::from));
        (None, path.map(LocalAddr::Unix))
    } else {
        crate::io::configure(SockRef::from(&socket));
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        (peer, local.and_then(|a| a.as_socket()).map(LocalAddr::Inet))
    };
    Accepted { socket, client, server, handed: Some(bytes) }
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
        send(sending.as_fd(), server.as_fd(), b"GET / HTTP/1.1\r\n\r\n").unwrap();
        // The sender closes its descriptor: the connection lives on in the receiver.
        drop(server);
        let mut receiver = Receiver::new(1024);
        let Received::Conn(handed) = receiver.recv(receiving.as_fd()).unwrap() else {
            panic!("no connection")
        };
        assert_eq!(&handed.handed.unwrap()[..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(handed.client, Some(peer));
        assert_eq!(handed.server, Some(LocalAddr::Inet(client.peer_addr().unwrap())));
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
        send(sending.as_fd(), server.as_fd(), b"GET").unwrap();
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
            match send(sending.as_fd(), server.as_fd(), &big) {
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
        send(sending.as_fd(), server.as_fd(), &[b'x'; 100]).unwrap();
        drop(server);
        let mut receiver = Receiver::new(10);
        let dropped = receiver.recv(receiving.as_fd()).unwrap();
        assert!(matches!(dropped, Received::Dropped("a message larger than a hand-off")));
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
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
