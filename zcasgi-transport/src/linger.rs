//! The close sequence of a finished connection: half-close, linger, close.
//!
//! RFC 6455 §7.1.1: the server closes the TCP connection first. Closing a socket that still
//! has unread input makes the kernel send a reset, which can destroy the close frame or the
//! error response still in flight to the peer. So once the driver is finished, the backend
//! half-closes the socket ([`half_close`]), then reads and drops whatever the peer still sends
//! ([`crate::io::discard`]) until the peer's end of stream, a socket error, or [`LINGER`] —
//! whichever comes first — and only then closes it. A server shutdown does not cut the linger
//! short: the close frames of the shutdown are what it protects, and it is bounded anyway.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use socket2::SockRef;

/// How long a finished connection waits for the peer's end of stream after the half-close.
pub const LINGER: Duration = Duration::from_secs(1);

/// Half-closes the socket of a finished connection; returns until when to linger, or `None`
/// to close it at once (`input_done`: the peer's end of stream or a socket error was seen, or
/// the peer closed its WebSocket and all its input was read, so no reset can come of unread
/// input; or the half-close itself failed).
#[must_use]
pub fn half_close(socket: SockRef<'_>, input_done: bool, now: Instant) -> Option<Instant> {
    if input_done || socket.shutdown(Shutdown::Write).is_err() {
        return None;
    }
    Some(now + LINGER)
}
