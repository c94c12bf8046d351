//! A valid WebSocket upgrade request, waiting for the application to accept or deny it.
//!
//! # Theory of operation
//!
//! ```text
//!   Awaiting ──accept──► 101 written; the open protocol::Connection takes over
//!      │ ──close──► 403        (the driver's rejection)
//!      │ ──abort──► 500        (the driver's rejection)
//!      └─respond──► Denying ──respond_body(.., more: false) / abort──► Denied
//! ```
//!
//! While the application decides, frames a client sends ahead of the 101 (allowed once it has
//! sent the request, RFC 6455 §4.1) wait in a bounded buffer and are fed to the connection after
//! the accept; a client that closes meanwhile is remembered, so that the accepted connection
//! starts at its end of stream. A denial (ASGI `websocket.http.response.*`) is an HTTP response
//! written by a [`ResponseWriter`]; what the client sends during it is discarded, and the
//! connection closes after it.

use bytes::{Bytes, BytesMut};

use crate::deflate::{self, DeflateParams};
use crate::handshake::{self, Upgrade};
use crate::http::{DefaultHeaders, ResponseWriter};
use crate::outq::OutQueue;
use crate::protocol::{Connection, ProtocolConfig};

/// Most bytes buffered from a client that sends frames before the application accepted it.
const MAX_EARLY_DATA: usize = 64 * 1024;

/// An upgrade waiting for the application's answer, or being denied.
#[derive(Debug)]
pub(super) struct PendingUpgrade {
    upgrade: Upgrade,
    /// Frames received before the answer.
    early: BytesMut,
    /// The client closed its side before the answer.
    eof: bool,
    /// The denial response, once started.
    denial: Option<ResponseWriter>,
}

/// An accepted upgrade: the open connection and what the client sent before the 101.
#[derive(Debug)]
pub(super) struct Accepted {
    /// The WebSocket, open.
    pub(super) conn: Connection,
    /// Bytes received before the accept, to feed to `conn`.
    pub(super) early: BytesMut,
    /// The client already closed its side of the stream.
    pub(super) eof: bool,
}

impl PendingUpgrade {
    /// Waits for the answer to `upgrade`; `early` is what was received after the request head.
    pub(super) fn new(upgrade: Upgrade, early: BytesMut) -> Self {
        Self { upgrade, early, eof: false, denial: None }
    }

    /// Whether the application has not answered yet.
    pub(super) fn is_awaiting(&self) -> bool {
        self.denial.is_none()
    }

    /// Whether the denial response has been completely written.
    pub(super) fn is_denied(&self) -> bool {
        self.denial.as_ref().is_some_and(ResponseWriter::is_finished)
    }

    /// Takes received bytes: kept for the connection while awaiting, discarded during a denial.
    pub(super) fn receive(&mut self, input: &mut BytesMut) {
        if self.is_awaiting() {
            super::absorb(&mut self.early, input);
        } else {
            input.clear();
        }
    }

    /// Whether reading from the socket is useful now.
    pub(super) fn wants_read(&self) -> bool {
        !self.is_awaiting() || (!self.eof && self.early.len() < MAX_EARLY_DATA)
    }

    /// The client closed its side while the application decides.
    pub(super) fn on_eof(&mut self) {
        self.eof = true;
    }

    /// Accepts: writes the `101 Switching Protocols`, with the server's `defaults` and the application's
    /// `subprotocol` and `headers` into `out`, negotiating permessage-deflate (RFC 7692) if `cfg`
    /// enables it.
    pub(super) fn accept(
        self,
        cfg: &ProtocolConfig,
        subprotocol: Option<&str>,
        headers: &[(Vec<u8>, Vec<u8>)],
        out: &mut OutQueue,
        defaults: DefaultHeaders<'_>,
    ) -> Accepted {
        // RFC 7692 §5: accept the first permessage-deflate offer we can honour, if enabled.
        let deflate = if cfg.per_message_deflate {
            deflate::negotiate(&self.upgrade.extensions)
        } else {
            None
        };
        let extensions = deflate.as_ref().map(DeflateParams::to_header);
        let mut head = Vec::with_capacity(256);
        handshake::write_accept(
            &mut head,
            &self.upgrade,
            subprotocol,
            extensions.as_deref(),
            headers,
            defaults,
        );
        out.push_bytes(Bytes::from(head), 0);
        let conn = match deflate {
            Some(params) => Connection::with_deflate(cfg.clone(), params),
            None => Connection::new(cfg.clone()),
        };
        Accepted { conn, early: self.early, eof: self.eof }
    }

    /// Starts the denial response (ASGI `websocket.http.response.start`), with the server's `defaults`; ignored
    /// once one has started. The connection closes after it, whatever its headers say.
    pub(super) fn deny(
        &mut self,
        out: &mut OutQueue,
        status: u16,
        headers: &[(Vec<u8>, Vec<u8>)],
        defaults: DefaultHeaders<'_>,
    ) {
        if self.denial.is_none() {
            self.denial =
                Some(ResponseWriter::start(out, status, headers, false, false, 1, defaults));
        }
    }

    /// Writes a piece of the denial body, all of whose bytes count against the application's
    /// send buffer. Returns how many of them were not queued (no denial started, or a body after
    /// the end): the caller releases them at once.
    #[must_use]
    pub(super) fn deny_body(&mut self, out: &mut OutQueue, body: Bytes, more: bool) -> usize {
        match &mut self.denial {
            Some(w) => w.body(out, body, more),
            None => body.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PendingUpgrade {
        let upgrade = Upgrade {
            accept_key: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
            subprotocols: vec![],
            extensions: vec!["permessage-deflate".into()],
        };
        PendingUpgrade::new(upgrade, BytesMut::from(&b"early"[..]))
    }

    #[test]
    fn accept_keeps_early_bytes_and_eof() {
        let mut p = pending();
        p.receive(&mut BytesMut::from(&b" frames"[..]));
        p.on_eof();
        assert!(!p.wants_read());
        let mut out = OutQueue::new();
        let cfg = ProtocolConfig { per_message_deflate: true, ..ProtocolConfig::default() };
        let a = p.accept(&cfg, None, &[], &mut out, DefaultHeaders::dated(std::time::UNIX_EPOCH));
        assert_eq!(&a.early[..], b"early frames");
        assert!(a.eof && a.conn.is_deflate());
        assert!(!out.is_empty());
    }

    #[test]
    fn denial_discards_input_and_ends_with_its_body() {
        let mut p = pending();
        let mut out = OutQueue::new();
        assert_eq!(p.deny_body(&mut out, Bytes::from_static(b"x"), false), 1, "not started");
        p.deny(&mut out, 401, &[], DefaultHeaders::dated(std::time::UNIX_EPOCH));
        assert!(!p.is_awaiting() && p.wants_read());
        let mut input = BytesMut::from(&b"ignored"[..]);
        p.receive(&mut input);
        assert!(input.is_empty());
        assert_eq!(p.deny_body(&mut out, Bytes::from_static(b"no"), false), 0);
        assert!(p.is_denied());
    }
}
