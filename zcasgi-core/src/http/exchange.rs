//! One HTTP/1.1 request and its response on a connection that may carry more (RFC 9112 §9).
//!
//! # Theory of operation
//!
//! An [`Exchange`] starts from a parsed request head and whatever was read after it. It has two
//! halves that advance independently, because an ASGI application may answer before it has read
//! the whole body (or never read it):
//!
//! ```text
//!   request body:  Reading ──(last piece delivered)──► Read
//!   response:      NotStarted ──respond──► Started ──respond_body(more: false)──► Complete
//! ```
//!
//! - The request body is decoded out of the exchange's buffer one piece at a time by
//!   [`Exchange::next_body`]; the caller stops asking while the application's queue is full,
//!   which is how a slow application pauses the socket. Bytes after the end of the body (a
//!   pipelined request) stay in the buffer untouched until this exchange is over.
//! - The response is framed by a [`ResponseWriter`]: [`Exchange::respond`] writes its head,
//!   [`Exchange::respond_body`] its body, into the connection's [`OutQueue`].
//!
//! Once the response is complete, [`Exchange::into_next`] makes the keep-alive decision: the
//! connection serves another request only if the request allowed it (RFC 9112 §9.3), the whole
//! body was read (otherwise its rest would be taken for the next request head) and the response's
//! end is known to the client (it was framed by length or chunks and the application did not ask
//! to close). Then the buffered bytes are the start of the next request head; else the
//! connection closes once the response is written.

use bytes::{Bytes, BytesMut};

use super::{expects_continue, keep_alive, request_framing, BodyDecoder, HttpError};
use super::{DefaultHeaders, RequestFraming, ResponseWriter};
use crate::handshake::Request;
use crate::outq::OutQueue;

/// Most bytes buffered behind a request whose body has been read (a pipelined request waiting
/// for this response, or a client that keeps sending): reading pauses above it.
const MAX_PIPELINED: usize = 64 * 1024;

/// One HTTP request and its response.
#[derive(Debug)]
pub struct Exchange {
    decoder: BodyDecoder,
    /// Received bytes not yet decoded: the rest of the body, then pipelined requests.
    buf: BytesMut,
    /// The last piece of the body has been handed out.
    body_read: bool,
    response: Option<ResponseWriter>,
    /// What the request allows (and the server still wants): the connection may be reused.
    keep_alive: bool,
    head: bool,
    http_minor: u8,
}

impl Exchange {
    /// Starts serving `request`, whose head was followed by the bytes `rest`.
    ///
    /// Writes `100 Continue` into `out` when the client asked for it (RFC 9110 §10.1.1) and
    /// has a body to send.
    ///
    /// # Errors
    /// [`HttpError`] when the request's framing is invalid or unsupported, its declared body is
    /// over `max_body`, or it has an unsupported expectation; answer with its status.
    pub fn start(
        request: &Request,
        rest: BytesMut,
        max_body: u64,
        out: &mut OutQueue,
    ) -> Result<Self, HttpError> {
        let framing = request_framing(request, max_body)?;
        if expects_continue(request)? && framing != RequestFraming::Length(0) {
            out.push_bytes(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"), 0);
        }
        Ok(Self {
            decoder: BodyDecoder::new(framing, max_body),
            buf: rest,
            body_read: false,
            response: None,
            keep_alive: keep_alive(request),
            head: request.method == "HEAD",
            http_minor: request.http_minor,
        })
    }

    /// The buffer received bytes go into: the rest of the body, then pipelined requests.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next piece of the request body, with whether more follow: `Ok(None)` when the
    /// buffer holds none yet, or the last piece was already handed out.
    ///
    /// # Errors
    /// [`HttpError`] for a malformed chunked body or one over the limit.
    pub fn next_body(&mut self) -> Result<Option<(Bytes, bool)>, HttpError> {
        if self.body_read {
            return Ok(None);
        }
        let piece = match self.decoder.decode(&mut self.buf)? {
            Some(body) => (body, !self.decoder.is_done()),
            None if self.decoder.is_done() => (Bytes::new(), false),
            None => return Ok(None),
        };
        self.body_read = !piece.1;
        Ok(Some(piece))
    }

    /// Whether the whole request body has been received (it may still wait to be handed out).
    #[must_use]
    pub fn is_body_received(&self) -> bool {
        self.decoder.is_done()
    }

    /// Whether reading from the socket is useful now; `paused`: the application's queue is
    /// full.
    #[must_use]
    pub fn wants_read(&self, paused: bool) -> bool {
        if self.decoder.is_done() {
            // Keep reading (to notice a client that leaves), within a bound.
            self.buf.len() < MAX_PIPELINED
        } else {
            !paused
        }
    }

    /// Writes the response head (ASGI `http.response.start`), with the server's `defaults`; a second one is
    /// ignored.
    pub fn respond(
        &mut self,
        out: &mut OutQueue,
        status: u16,
        headers: &[(Vec<u8>, Vec<u8>)],
        defaults: DefaultHeaders<'_>,
    ) {
        if self.response.is_none() {
            self.response = Some(ResponseWriter::start(
                out,
                status,
                headers,
                self.keep_alive,
                self.head,
                self.http_minor,
                defaults,
            ));
        }
    }

    /// Writes a piece of the response body, all of whose bytes count against the application's
    /// send buffer. Returns how many of them were not queued (no response started, a body after
    /// the end, or for HEAD): the caller releases them at once.
    #[must_use]
    pub fn respond_body(&mut self, out: &mut OutQueue, body: Bytes, more: bool) -> usize {
        match &mut self.response {
            Some(w) => w.body(out, body, more),
            None => body.len(),
        }
    }

    /// Whether the response head has been written.
    #[must_use]
    pub fn is_response_started(&self) -> bool {
        self.response.is_some()
    }

    /// Whether the whole response has been written.
    #[must_use]
    pub fn is_response_complete(&self) -> bool {
        self.response.as_ref().is_some_and(ResponseWriter::is_finished)
    }

    /// Closes the connection after this response (the server shuts down).
    pub fn close_after_response(&mut self) {
        self.keep_alive = false;
    }

    /// Ends the exchange: the buffered start of the next request if the connection is kept
    /// alive, `None` if it must close once the response is written.
    #[must_use]
    pub fn into_next(self) -> Option<BytesMut> {
        let reuse = self.keep_alive
            && self.body_read
            && self.response.as_ref().is_some_and(|w| w.is_finished() && w.keep_alive());
        reuse.then_some(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{parse_request, HandshakeConfig};

    fn start(wire: &[u8]) -> (Exchange, OutQueue) {
        let (req, n) = parse_request(wire, &HandshakeConfig::default()).unwrap().unwrap();
        let mut out = OutQueue::new();
        let x = Exchange::start(&req, BytesMut::from(&wire[n..]), 100, &mut out).unwrap();
        (x, out)
    }

    #[test]
    fn reused_only_when_body_read_and_response_complete() {
        let (mut x, mut out) =
            start(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(x.next_body().unwrap(), Some((Bytes::from_static(b"ab"), false)));
        assert_eq!(x.next_body().unwrap(), None, "the pipelined request is not body");
        x.respond(&mut out, 204, &[], DefaultHeaders::dated(std::time::UNIX_EPOCH));
        assert!(x.is_response_started() && !x.is_response_complete());
        assert_eq!(x.respond_body(&mut out, Bytes::new(), false), 0);
        assert!(x.is_response_complete());
        assert_eq!(&x.into_next().unwrap()[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn unread_body_or_shutdown_closes() {
        let (mut x, mut out) = start(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab");
        assert_eq!(x.respond_body(&mut out, Bytes::from_static(b"x"), false), 1, "not started");
        x.respond(&mut out, 200, &[], DefaultHeaders::dated(std::time::UNIX_EPOCH));
        let _ = x.respond_body(&mut out, Bytes::new(), false);
        assert!(x.into_next().is_none(), "the body's rest would be read as a request");

        let (mut x, mut out) = start(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(x.next_body().unwrap().is_some());
        x.close_after_response();
        x.respond(&mut out, 200, &[], DefaultHeaders::dated(std::time::UNIX_EPOCH));
        let _ = x.respond_body(&mut out, Bytes::new(), false);
        assert!(x.into_next().is_none());
    }
}
