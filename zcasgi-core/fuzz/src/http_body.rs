//! Fuzz HTTP/1.1 body framing (`zcasgi_core::http`): the request body decoder
//! (`BodyDecoder`, by length and chunked) and the response writer (`ResponseWriter`).
//!
//! The input is read with `arbitrary` as one of three cases:
//! - `Raw`: arbitrary bytes (after a run of one byte, up to 8 KiB: lines past the limit)
//!   through a decoder, whole and cut into arbitrary pieces: both give
//!   the same body, error, end and left-over bytes; a body by length is the first bytes of the
//!   input, a chunked body stays within the limit;
//! - `Encoded`: a well-formed chunked body (any chunk sizes, extensions, hex case, leading
//!   zeros, trailers) followed by other bytes, decoded in arbitrary pieces: the body is the
//!   chunks' data, the decoder ends exactly at the end of the body, and a limit one byte short
//!   fails with `BodyTooLarge`;
//! - `Response`: a response with arbitrary status, application headers and body pieces, framed
//!   by `ResponseWriter`: its head parses, framing headers appear at most once and agree with
//!   the bytes that follow (no body for HEAD, 1xx, 204 and 304; never more than a declared
//!   length; chunked framing decodes back to the body), and every accounted byte is either
//!   queued or reported as not queued.

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use zcasgi_core::http::{BodyDecoder, DefaultHeaders, HttpError, RequestFraming, ResponseWriter};
use zcasgi_core::outq::OutQueue;

use super::common::{
    check_default_headers, drain, parse_response, pieces, values, wall, MAX_HEADERS,
};

#[derive(Debug, Arbitrary)]
enum Input {
    Raw { chunked: bool, length: u16, max_body: u16, sizes: Vec<u8>, pad: Pad, wire: Vec<u8> },
    Encoded { chunks: Vec<Chunk>, trailers: Vec<(u8, u8)>, tail: Vec<u8>, sizes: Vec<u8> },
    Response(Response),
}

/// A run of one byte put before the raw bytes: lines longer than an input can hold.
#[derive(Debug, Arbitrary)]
struct Pad {
    byte: u8,
    len: u16,
}

#[derive(Debug, Arbitrary)]
struct Chunk {
    data: Vec<u8>,
    extension: Option<u8>,
    upper: bool,
    zeros: u8,
}

#[derive(Debug, Arbitrary)]
struct Response {
    status: u16,
    headers: Vec<Header>,
    keep_alive: bool,
    head: bool,
    http_10: bool,
    pieces: Vec<(u8, bool)>,
    wall: u64,
}

#[derive(Debug, Arbitrary)]
enum Header {
    ContentLength(u8),
    OddContentLength(u8),
    TransferEncoding,
    Connection(bool),
    Date,
    Other(u8),
}

/// What a decoder made of some input.
#[derive(Debug, PartialEq)]
struct Decoded {
    body: Vec<u8>,
    error: Option<HttpError>,
    done: bool,
    left: Vec<u8>,
}

fn decode(framing: RequestFraming, max_body: u64, input: &[&[u8]]) -> Decoded {
    let mut decoder = BodyDecoder::new(framing, max_body);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for piece in input {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(b)) => {
                    assert!(!b.is_empty(), "an empty piece of body");
                    body.extend_from_slice(&b);
                }
                Ok(None) => break,
                Err(error) => {
                    return Decoded { body, error: Some(error), done: false, left: vec![] }
                }
            }
        }
    }
    Decoded { body, error: None, done: decoder.is_done(), left: buf.to_vec() }
}

/// The target.
pub fn run(input: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(input)) else { return };
    match input {
        Input::Raw { chunked, length, max_body, sizes, pad, wire } => {
            let max_body = u64::from(max_body);
            let mut padded = vec![pad.byte; usize::from(pad.len % 8192)];
            padded.extend_from_slice(&wire);
            let wire = padded;
            let framing = if chunked {
                RequestFraming::Chunked
            } else {
                RequestFraming::Length(u64::from(length))
            };
            let whole = decode(framing, max_body, &[&wire]);
            let split = decode(framing, max_body, &pieces(&wire, &sizes));
            assert_eq!(whole, split, "{framing:?}");
            if chunked {
                assert!(whole.body.len() as u64 <= max_body);
            } else {
                let n = wire.len().min(usize::from(length));
                assert_eq!(whole.body, wire[..n]);
                assert_eq!(whole.left, wire[n..]);
                assert_eq!(whole.done, n == usize::from(length));
            }
        }
        Input::Encoded { chunks, trailers, tail, sizes } => {
            check_encoded(&chunks, &trailers, &tail, &sizes);
        }
        Input::Response(r) => check_response(&r),
    }
}

fn check_encoded(chunks: &[Chunk], trailers: &[(u8, u8)], tail: &[u8], sizes: &[u8]) {
    let mut wire = Vec::new();
    let mut body = Vec::new();
    for c in chunks.iter().filter(|c| !c.data.is_empty()) {
        let hex =
            if c.upper { format!("{:X}", c.data.len()) } else { format!("{:x}", c.data.len()) };
        let zeros = usize::from(c.zeros % 8).min(15 - hex.len());
        wire.extend(std::iter::repeat_n(b'0', zeros));
        wire.extend_from_slice(hex.as_bytes());
        if let Some(e) = c.extension {
            wire.extend_from_slice(format!(";ext{e}=\"{e}\"").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&c.data);
        wire.extend_from_slice(b"\r\n");
        body.extend_from_slice(&c.data);
    }
    wire.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        wire.extend_from_slice(format!("x-trailer-{name}: {value}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let end = wire.len();
    wire.extend_from_slice(tail);
    let total = body.len() as u64;
    let decoded = decode(RequestFraming::Chunked, total, &pieces(&wire, sizes));
    let expected = Decoded { body, error: None, done: true, left: wire[end..].to_vec() };
    assert_eq!(decoded, expected);
    if total > 0 {
        let short = decode(RequestFraming::Chunked, total - 1, &[&wire]);
        assert_eq!(short.error, Some(HttpError::BodyTooLarge(total - 1)));
    }
}

fn check_response(r: &Response) {
    let status = 100 + r.status % 500;
    let headers: Vec<(Vec<u8>, Vec<u8>)> = r
        .headers
        .iter()
        .take(MAX_HEADERS)
        .map(|h| match h {
            Header::ContentLength(n) => (b"Content-Length".to_vec(), n.to_string().into_bytes()),
            Header::OddContentLength(n) => {
                let odd = [" 7 ", "+3", "0x10", "", "1,1", "-0", "007", "99999999999999999999"];
                (b"content-length".to_vec(), odd[usize::from(n % 8)].as_bytes().to_vec())
            }
            Header::TransferEncoding => (b"Transfer-Encoding".to_vec(), b"gzip".to_vec()),
            Header::Connection(close) => {
                let v: &[u8] = if *close { b"close" } else { b"keep-alive" };
                (b"Connection".to_vec(), v.to_vec())
            }
            Header::Date => (b"Date".to_vec(), b"Thu, 01 Jan 1970 00:00:00 GMT".to_vec()),
            Header::Other(n) => (format!("x-h{n}").into_bytes(), vec![b'v'; usize::from(*n)]),
        })
        .collect();
    let http_minor = u8::from(!r.http_10);
    let mut out = OutQueue::new();
    let date = DefaultHeaders::dated(wall(r.wall));
    let mut writer =
        ResponseWriter::start(&mut out, status, &headers, r.keep_alive, r.head, http_minor, date);
    let mut body = Vec::new();
    let mut accounted = 0;
    let mut unqueued = 0;
    let mut finished = false;
    for (i, &(len, more)) in r.pieces.iter().enumerate() {
        let piece = Bytes::from(vec![b'a' + (i % 26) as u8; usize::from(len)]);
        if !finished {
            body.extend_from_slice(&piece);
        }
        accounted += piece.len();
        unqueued += writer.body(&mut out, piece, more);
        finished |= !more;
        assert_eq!(writer.is_finished(), finished);
    }
    let (wire, released) = drain(&mut out);
    assert_eq!(released + unqueued, accounted, "every accounted byte is released once");
    let (code, head, len) = parse_response(&wire);
    assert_eq!(code, status);
    let app_date = r.headers.iter().take(MAX_HEADERS).any(|h| matches!(h, Header::Date));
    check_default_headers(&head, if app_date { &["date"] } else { &[] });
    let rest = &wire[len..];
    let lengths = values(&head, "content-length");
    let codings = values(&head, "transfer-encoding");
    assert!(lengths.len() <= 1, "several Content-Length headers: {lengths:?}");
    assert!(codings.len() <= 1 && lengths.len() + codings.len() <= 1, "{head:?}");
    if !values(&head, "connection").iter().any(|v| v.eq_ignore_ascii_case(b"close")) {
        assert!(r.keep_alive, "keep-alive only if the request allows it");
    }
    let bodyless = r.head || status < 200 || status == 204 || status == 304;
    if let [length] = lengths[..] {
        assert!(!length.is_empty() && length.iter().all(u8::is_ascii_digit), "{length:?}");
        let n: usize = std::str::from_utf8(length).unwrap().parse().unwrap();
        if bodyless {
            assert!(rest.is_empty());
        } else {
            assert_eq!(rest, &body[..n.min(body.len())], "the body stops at its length");
            if finished && writer.keep_alive() {
                assert_eq!(body.len(), n, "reused after a body of the wrong length");
            }
        }
    } else if let [coding] = codings[..] {
        assert_eq!(coding, b"chunked");
        assert!(!bodyless && http_minor == 1);
        let decoded = decode(RequestFraming::Chunked, u64::MAX, &[rest]);
        let expected = Decoded { body, error: None, done: finished, left: vec![] };
        assert_eq!(decoded, expected);
    } else if bodyless {
        assert!(rest.is_empty());
    } else {
        assert_eq!(http_minor, 0, "a body without framing on HTTP/1.1");
        assert!(!writer.keep_alive(), "a body delimited by the close");
        assert_eq!(rest, &body[..]);
    }
}
