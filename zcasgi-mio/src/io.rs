//! Socket calls the reactor needs beyond `std::io`: reads into uninitialised buffer space and
//! vectored writes that never raise `SIGPIPE`.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use mio::net::TcpStream;
use socket2::SockRef;

/// `send` flags: a write to a peer that has gone returns `EPIPE` instead of killing the
/// process, even where the embedding program (Python, a C host) did not ignore `SIGPIPE`.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd"
))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd"
)))]
const SEND_FLAGS: libc::c_int = 0;

/// Reads once into the spare capacity of `buf` (which must have some); returns the bytes read.
pub(crate) fn recv_into(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    debug_assert!(buf.capacity() > buf.len(), "reading into a full buffer looks like EOF");
    let n = SockRef::from(stream).recv(buf.spare_capacity_mut())?;
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity, and `n` is at most
    // its length, so the first `len + n` bytes of the buffer are initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes `bufs` with one `sendmsg`; returns the bytes written.
pub(crate) fn send_vectored(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    SockRef::from(stream).send_vectored_with_flags(bufs, SEND_FLAGS)
}
