//! HTTP/1.1 message framing for the ASGI `http` scope (RFC 9112), sans I/O.
//!
//! The request head is parsed by [`crate::handshake::parse_request`] (one parser serves both
//! scopes); this module decides how the body is framed ([`RequestFraming`]), decodes it
//! ([`BodyDecoder`]: `Content-Length` or chunked), and frames the response
//! ([`ResponseWriter`]: `Content-Length`, chunked, or delimited by closing the connection), with
//! keep-alive decided by [`keep_alive`]. An [`Exchange`] puts these together into one request and
//! its response, and decides whether the connection serves another one. Every response head the
//! core writes, WebSocket ones included, is written by the helpers of [`response`], which add the
//! default `date` and `server` headers.

mod exchange;
pub mod response;

pub use exchange::Exchange;
pub use response::{DefaultHeaders, ResponseWriter, WallClock};

use bytes::{Buf, Bytes, BytesMut};

use crate::handshake::Request;

/// Why a request cannot be served (each maps to a status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// `Content-Length` is not a number, or several disagree.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling, RFC 9112 §6.1).
    #[error("both Content-Length and Transfer-Encoding")]
    AmbiguousLength,
    /// A transfer coding other than a final `chunked`.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// A malformed chunk size line or chunk terminator.
    #[error("malformed chunked body")]
    MalformedChunk,
    /// The body is larger than the configured limit.
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    /// An `Expect` value other than `100-continue`.
    #[error("unsupported Expect")]
    UnsupportedExpectation,
}

impl HttpError {
    /// The status to answer with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::BodyTooLarge(_) => 413,
            Self::UnsupportedTransferEncoding => 501,
            Self::UnsupportedExpectation => 417,
            Self::InvalidContentLength | Self::AmbiguousLength | Self::MalformedChunk => 400,
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Works out the body framing of `req` and checks it against `max_body`.
///
/// # Errors
/// [`HttpError`] for ambiguous or unsupported framing, or a declared length over `max_body`.
pub fn request_framing(req: &Request, max_body: u64) -> Result<RequestFraming, HttpError> {
    let te: Vec<&[u8]> = req.header_tokens(b"transfer-encoding").collect();
    let mut lengths = req.headers.iter().filter(|(n, _)| n == b"content-length");
    if !te.is_empty() {
        if lengths.next().is_some() {
            return Err(HttpError::AmbiguousLength);
        }
        // RFC 9112 §6.3: chunked must be the final coding; we support no others.
        if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        return Ok(RequestFraming::Chunked);
    }
    let mut length = None;
    for (_, v) in lengths {
        for part in v.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 18 {
                return Err(HttpError::InvalidContentLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(HttpError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::InvalidContentLength);
            }
            length = Some(n);
        }
    }
    let length = length.unwrap_or(0);
    if length > max_body {
        return Err(HttpError::BodyTooLarge(max_body));
    }
    Ok(RequestFraming::Length(length))
}

/// Whether the request asks for `100 Continue` before sending its body.
///
/// # Errors
/// [`HttpError::UnsupportedExpectation`] for any other expectation (417).
pub fn expects_continue(req: &Request) -> Result<bool, HttpError> {
    match req.header(b"expect") {
        None => Ok(false),
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"100-continue") => Ok(req.http_minor >= 1),
        Some(_) => Err(HttpError::UnsupportedExpectation),
    }
}

/// Whether the connection may stay open after this request (RFC 9112 §9.3).
#[must_use]
pub fn keep_alive(req: &Request) -> bool {
    let mut close = false;
    let mut keep = false;
    for t in req.header_tokens(b"connection") {
        close |= t.eq_ignore_ascii_case(b"close");
        keep |= t.eq_ignore_ascii_case(b"keep-alive");
    }
    if req.http_minor >= 1 {
        !close
    } else {
        keep && !close
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
    Done,
}

/// Decodes a request body, taking bytes out of the connection's buffer.
#[derive(Debug)]
pub struct BodyDecoder {
    framing: RequestFraming,
    remaining: u64,
    chunk: ChunkState,
    received: u64,
    max_body: u64,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

impl BodyDecoder {
    /// A decoder for a body framed as `framing`, failing past `max_body` bytes.
    #[must_use]
    pub fn new(framing: RequestFraming, max_body: u64) -> Self {
        let remaining = match framing {
            RequestFraming::Length(n) => n,
            RequestFraming::Chunked => 0,
        };
        Self { framing, remaining, chunk: ChunkState::Size, received: 0, max_body }
    }

    /// Whether the whole body has been decoded.
    #[must_use]
    pub fn is_done(&self) -> bool {
        match self.framing {
            RequestFraming::Length(_) => self.remaining == 0,
            RequestFraming::Chunked => self.chunk == ChunkState::Done,
        }
    }

    /// Takes the next piece of body out of `buf`: `Ok(None)` when `buf` holds none yet.
    /// Bytes after the end of the body are left in `buf` (a pipelined request).
    ///
    /// # Errors
    /// [`HttpError`] for a malformed chunked body or one over the limit.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        match self.framing {
            RequestFraming::Length(_) => {
                if self.remaining == 0 || buf.is_empty() {
                    return Ok(None);
                }
                let n = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                Ok(Some(buf.split_to(n).freeze()))
            }
            RequestFraming::Chunked => self.decode_chunked(buf),
        }
    }

    fn decode_chunked(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        loop {
            match self.chunk {
                ChunkState::Done => return Ok(None),
                ChunkState::Size => {
                    // RFC 9112 §7.1: chunk-size = 1*HEXDIG (httparse would read none as 0).
                    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                        return Err(HttpError::MalformedChunk);
                    }
                    // httparse takes a bare LF in a chunk extension as part of it, and would
                    // wait for a CRLF past the data.
                    line_end(buf)?;
                    let (line_len, size) = match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete(parsed)) => parsed,
                        // As in `line_end`: MAX_LINE + 1 bytes may be a line and its CR.
                        Ok(httparse::Status::Partial) if buf.len() > MAX_LINE + 1 => {
                            return Err(HttpError::MalformedChunk)
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(httparse::InvalidChunkSize) => return Err(HttpError::MalformedChunk),
                    };
                    if self.received.saturating_add(size) > self.max_body {
                        return Err(HttpError::BodyTooLarge(self.max_body));
                    }
                    buf.advance(line_len);
                    self.chunk =
                        if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.received += n as u64;
                    let rest = left - n as u64;
                    self.chunk =
                        if rest == 0 { ChunkState::DataEnd } else { ChunkState::Data(rest) };
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    // Fail on the first wrong byte: a lone LF must not wait for a second one.
                    match &buf[..buf.len().min(2)] {
                        b"\r\n" => {
                            buf.advance(2);
                            self.chunk = ChunkState::Size;
                        }
                        b"" | b"\r" => return Ok(None),
                        _ => return Err(HttpError::MalformedChunk),
                    }
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf)? else { return Ok(None) };
                    if line.is_empty() {
                        self.chunk = ChunkState::Done;
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// The length of the first line in `buf`, without its CRLF: `Ok(None)` while no LF has come.
///
/// # Errors
/// [`HttpError::MalformedChunk`] for a line that does not end with CRLF, or holds a CR
/// elsewhere (RFC 9112 §2.2, §7.1), or that is longer than [`MAX_LINE`].
fn line_end(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && window[lf - 1] == b'\r' && !window[..lf - 1].contains(&b'\r') => {
            Ok(Some(lf - 1))
        }
        Some(_) => Err(HttpError::MalformedChunk),
        // The window is full without a LF: longer than MAX_LINE. (MAX_LINE + 1 bytes may be a
        // whole line and its CR, waiting for the LF.)
        None if buf.len() > MAX_LINE + 1 => Err(HttpError::MalformedChunk),
        None => Ok(None),
    }
}

/// Takes one CRLF-terminated line (without the CRLF) from the front of `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
    let Some(len) = line_end(buf)? else { return Ok(None) };
    let line = buf.split_to(len).freeze();
    buf.advance(2);
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{parse_request, HandshakeConfig};

    fn req(text: &str) -> Request {
        parse_request(text.as_bytes(), &HandshakeConfig::default()).unwrap().unwrap().0
    }

    #[test]
    fn framing_rules() {
        let r = req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(request_framing(&r, 10), Ok(RequestFraming::Length(5)));
        assert_eq!(request_framing(&r, 4), Err(HttpError::BodyTooLarge(4)));
        let r = req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(request_framing(&r, 10), Ok(RequestFraming::Chunked));
        let r = req(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(request_framing(&r, 10), Err(HttpError::AmbiguousLength));
        let r = req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(request_framing(&r, 10), Err(HttpError::UnsupportedTransferEncoding));
        for bad in ["abc", "-1", "1, 2", ""] {
            let r = req(&format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n"));
            assert_eq!(request_framing(&r, 10), Err(HttpError::InvalidContentLength), "{bad}");
        }
        let r = req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(request_framing(&r, 10), Ok(RequestFraming::Length(3)));
        assert_eq!(
            request_framing(&req("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0),
            Ok(RequestFraming::Length(0))
        );
        assert_eq!(HttpError::BodyTooLarge(1).status(), 413);
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(keep_alive(&req("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
        assert!(!keep_alive(&req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
        assert!(!keep_alive(&req("GET / HTTP/1.0\r\n\r\n")));
        assert!(keep_alive(&req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")));
        assert!(expects_continue(&req(
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
        ))
        .unwrap());
        assert_eq!(
            expects_continue(&req("POST / HTTP/1.1\r\nHost: x\r\nExpect: x\r\n\r\n")),
            Err(HttpError::UnsupportedExpectation)
        );
    }

    #[test]
    fn chunked_decoding_any_split() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1";
        for step in 1..wire.len() {
            let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
            let mut buf = BytesMut::new();
            let mut body = Vec::new();
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(b) = d.decode(&mut buf).unwrap() {
                    body.extend_from_slice(&b);
                }
            }
            assert_eq!(body, b"Wikipedia", "step {step}");
            assert!(d.is_done());
            assert_eq!(&buf[..], b"GET / HTTP/1.1", "pipelined bytes are left");
        }
    }

    #[test]
    fn chunked_errors_and_limit() {
        for bad in [&b"zz\r\n"[..], b"\r\n", b" 1\r\n", b"1x\r\n", b"1\r\r"] {
            let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
            assert_eq!(
                d.decode(&mut BytesMut::from(bad)),
                Err(HttpError::MalformedChunk),
                "{bad:?}"
            );
        }
        let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
        let huge = &b"ffffffffffffffff\r\n"[..];
        assert_eq!(d.decode(&mut BytesMut::from(huge)), Err(HttpError::BodyTooLarge(100)));
        let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
        let mut long_ext = BytesMut::from(&b"1;"[..]);
        long_ext.extend_from_slice(&[b'x'; MAX_LINE]);
        assert_eq!(d.decode(&mut long_ext), Err(HttpError::MalformedChunk));
        let mut d = BodyDecoder::new(RequestFraming::Chunked, 3);
        assert_eq!(d.decode(&mut BytesMut::from(&b"4\r\n"[..])), Err(HttpError::BodyTooLarge(3)));
        let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
        assert_eq!(d.decode(&mut BytesMut::from(&b"1\r\naXX"[..])).unwrap().unwrap(), "a");
        assert_eq!(d.decode(&mut BytesMut::from(&b"XX"[..])), Err(HttpError::MalformedChunk));
    }

    /// RFC 9112 §7.1: every line of a chunked body ends with CRLF. A bare LF (or CR) is an
    /// error as soon as it is seen, wherever it is: a decoder that waits for a CRLF instead
    /// keeps the connection forever.
    #[test]
    fn chunked_bare_lf_or_cr_is_malformed() {
        for bad in [
            &b"5;ext\n"[..],
            b"5;ext\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n",
            b"5\r\nhello\rX",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nTrailer: x\n",
            b"5\r\nhello\r\n0\r\nTrailer: a\rb\r\n\r\n",
        ] {
            let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
            let mut buf = BytesMut::from(bad);
            let result = loop {
                match d.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    other => break other,
                }
            };
            assert_eq!(result, Err(HttpError::MalformedChunk), "{bad:?}");
        }
    }

    /// The `http_body` fuzz target's whole-vs-split rule at the line limit: a line of exactly
    /// `MAX_LINE` bytes was accepted when its CRLF came with it, and refused when a read ended
    /// after its CR.
    #[test]
    fn line_limit_does_not_depend_on_how_bytes_arrive() {
        for (len, ok) in [(MAX_LINE, true), (MAX_LINE + 1, false)] {
            let mut wire = b"1;".to_vec();
            wire.resize(len, b'x');
            wire.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
            for cut in [len, len + 1, wire.len()] {
                let mut d = BodyDecoder::new(RequestFraming::Chunked, 100);
                let mut buf = BytesMut::new();
                let mut result = Ok(None);
                for piece in [&wire[..cut], &wire[cut..]] {
                    buf.extend_from_slice(piece);
                    result = d.decode(&mut buf);
                    if !matches!(result, Ok(None)) {
                        break;
                    }
                }
                let expected = if ok {
                    Ok(Some(Bytes::from_static(b"a")))
                } else {
                    Err(HttpError::MalformedChunk)
                };
                assert_eq!(result, expected, "line of {len} bytes, cut at {cut}");
            }
        }
    }

    #[test]
    fn length_decoding_leaves_pipelined_bytes() {
        let mut d = BodyDecoder::new(RequestFraming::Length(3), 10);
        let mut buf = BytesMut::from(&b"abcGET"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), "abc");
        assert!(d.is_done());
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"GET");
    }
}
