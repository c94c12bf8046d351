//! Reading a request head: the first phase of a connection, and of each keep-alive request.
//!
//! # Theory of operation
//!
//! Received bytes accumulate in one buffer until [`handshake::parse_request`] finds the blank
//! line that ends the head; the request and the bytes after it (a body, early WebSocket frames
//! or a pipelined request) go to the next phase. A head over the limits fails at once, without
//! waiting for its end.
//!
//! The head must be complete by a deadline: `handshake_timeout` after the accept, or
//! `timeout_keep_alive` after the previous response. At the deadline, or when the client closes,
//! a connection on which no byte of a new request arrived is closed silently (an idle keep-alive
//! connection, or a client that never spoke: there is no request to answer), while a partial
//! head is answered `408 Request Timeout`.
//!
//! ```text
//!   Waiting ──bytes──► Partial ──blank line──► (request, rest)
//!      │                  │ over a limit ──► error (400/414/431)
//!      └─ deadline / EOF ─┴─► Idle (silent close) | Incomplete (408)
//! ```

use std::time::Instant;

use bytes::BytesMut;

use crate::error::HandshakeError;
use crate::handshake::{self, HandshakeConfig, Request};

/// What the deadline found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// Nothing of a request arrived: close without a response.
    Idle,
    /// A partial head: answer 408.
    Incomplete,
}

/// A complete request head.
#[derive(Debug)]
pub(super) struct Parsed {
    /// The request.
    pub(super) request: Request,
    /// Its bytes, as received.
    pub(super) head: BytesMut,
    /// The bytes received after it (a body, early WebSocket frames, a pipelined request).
    pub(super) rest: BytesMut,
}

impl Parsed {
    /// Every byte received: the head and the rest.
    pub(super) fn into_bytes(self) -> BytesMut {
        let mut bytes = self.head;
        // Contiguous (split from one buffer): no copy.
        bytes.unsplit(self.rest);
        bytes
    }
}

/// A request head being read.
#[derive(Debug)]
pub(super) struct RequestHead {
    buf: BytesMut,
    deadline: Instant,
}

impl RequestHead {
    /// Starts reading a head from the bytes already received, `buf`, due by `deadline`.
    pub(super) fn new(buf: BytesMut, deadline: Instant) -> Self {
        Self { buf, deadline }
    }

    /// The buffer received bytes go into.
    pub(super) fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Whether no byte of a request has arrived.
    pub(super) fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes a complete head out of the buffer: the request, its bytes, and the bytes received
    /// after it.
    ///
    /// # Errors
    /// [`HandshakeError`] for a malformed head or one over the limits in `cfg`.
    pub(super) fn parse(
        &mut self,
        cfg: &HandshakeConfig,
    ) -> Result<Option<Parsed>, HandshakeError> {
        let Some((request, head_len)) = handshake::parse_request(&self.buf, cfg)? else {
            return Ok(None);
        };
        let head = self.buf.split_to(head_len);
        Ok(Some(Parsed { request, head, rest: std::mem::take(&mut self.buf) }))
    }

    /// Checks the deadline at `now`: `Err(deadline)` while it is ahead.
    pub(super) fn expired(&self, now: Instant) -> Result<Expired, Instant> {
        if now < self.deadline {
            Err(self.deadline)
        } else if self.is_idle() {
            Ok(Expired::Idle)
        } else {
            Ok(Expired::Incomplete)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn head_then_rest() {
        let now = Instant::now();
        let mut h = RequestHead::new(BytesMut::from(&b"GET / HT"[..]), now);
        assert!(h.parse(&HandshakeConfig::default()).unwrap().is_none());
        h.buffer_mut().extend_from_slice(b"TP/1.1\r\nHost: x\r\n\r\nnext");
        let parsed = h.parse(&HandshakeConfig::default()).unwrap().unwrap();
        assert_eq!(parsed.request.method, "GET");
        assert_eq!(&parsed.rest[..], b"next");
        assert!(h.is_idle());
        assert_eq!(&parsed.into_bytes()[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\nnext");
    }

    #[test]
    fn deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut h = RequestHead::new(BytesMut::new(), later);
        assert_eq!(h.expired(now), Err(later));
        assert_eq!(h.expired(later), Ok(Expired::Idle));
        h.buffer_mut().extend_from_slice(b"GET");
        assert_eq!(h.expired(later), Ok(Expired::Incomplete));
    }
}
