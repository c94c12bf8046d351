//! Writing HTTP/1.1 responses (RFC 9112 §4, §6).
//!
//! Every response head the core writes — an application's response or WebSocket denial
//! ([`ResponseWriter`]), the core's own rejections ([`write_reject`]) and the `101 Switching
//! Protocols` ([`crate::handshake::write_accept`]) — starts with [`push_status_line`] and
//! [`push_default_headers`], so each carries a reason phrase and the server's
//! [`DefaultHeaders`] (`date`, `server` and the configured extra headers, each as configured)
//! unless the application supplied a header of the same name.
//!
//! # Time
//!
//! The core reads no clock: the `date` of a response is a [`SystemTime`] passed in. The driver
//! derives it with a [`WallClock`], anchored when the connection is accepted (the backend passes
//! the monotonic and the wall-clock time of the accept) and advanced by the monotonic time every
//! driver call receives anyway. A step of the system clock during a connection's life (an NTP
//! correction) therefore shows in its dates only on the next connection, which for a header of
//! one-second resolution is the cheaper trade than a second clock argument on every call.
//!
//! The `date` value has one-second resolution, so each thread formats it at most once a second
//! and reuses the text for every response of that second.

use std::cell::Cell;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::outq::OutQueue;

/// The `server` header value the core sends unless the application sets its own.
pub const SERVER: &str = "zcasgi";

/// Latest time an IMF-fixdate can show (9999-12-31T23:59:59Z).
const LAST_DATE: Duration = Duration::from_secs(253_402_300_799);

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7).
const IMF_FIXDATE_LEN: usize = 29;

/// The headers the server adds to a response head it writes, unless the application's headers
/// have one of the same name: `date` (RFC 9110 §6.6.1), `server: zcasgi` (RFC 9110 §10.2.4)
/// and the configured extra headers (uvicorn's `--header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultHeaders<'a> {
    /// The wall-clock time of the response, for its `date` header; `None`: no `date` header.
    pub date: Option<SystemTime>,
    /// Whether to send `server: zcasgi`.
    pub server: bool,
    /// Further headers, `(name, value)`, in order; a `server` or `date` among them replaces the
    /// server's own.
    pub extra: &'a [(String, String)],
}

impl DefaultHeaders<'static> {
    /// The default configuration's headers: `date` at `date` and `server: zcasgi`.
    #[must_use]
    pub fn dated(date: SystemTime) -> Self {
        Self { date: Some(date), server: true, extra: &[] }
    }
}

/// The wall-clock time of one connection, derived from the monotonic time passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    wall: SystemTime,
}

impl WallClock {
    /// A clock that read `wall` at the monotonic instant `at`.
    #[must_use]
    pub fn new(at: Instant, wall: SystemTime) -> Self {
        Self { at, wall }
    }

    /// The wall-clock time at the monotonic instant `now` (never before the anchor).
    #[must_use]
    pub fn at(&self, now: Instant) -> SystemTime {
        self.wall + now.saturating_duration_since(self.at)
    }
}

/// The standard reason phrase of `status` (`"OK"`), empty for an unregistered status.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("")
}

/// Writes the status line `HTTP/1.1 <status> <reason>`, with the standard reason phrase (none
/// for an unregistered status, which RFC 9112 §4 allows).
pub fn push_status_line(out: &mut Vec<u8>, status: u16) {
    let reason = reason_phrase(status);
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
}

/// Writes the [`DefaultHeaders`] the application's `headers` do not have already.
pub fn push_default_headers(
    out: &mut Vec<u8>,
    headers: &[(Vec<u8>, Vec<u8>)],
    defaults: DefaultHeaders<'_>,
) {
    let given = |name: &[u8]| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let configured =
        |name: &[u8]| defaults.extra.iter().any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name));
    if let Some(date) = defaults.date {
        if !given(b"date") && !configured(b"date") {
            push_date(out, date);
        }
    }
    if defaults.server && !given(b"server") && !configured(b"server") {
        push_header(out, b"server", SERVER.as_bytes());
    }
    for (name, value) in defaults.extra {
        if !given(name.as_bytes()) {
            push_header(out, name.as_bytes(), value.as_bytes());
        }
    }
}

/// Writes `date: <IMF-fixdate>`, formatting it at most once a second per thread.
fn push_date(out: &mut Vec<u8>, date: SystemTime) {
    thread_local! {
        /// The second last formatted on this thread, and its text.
        static LAST: Cell<(u64, [u8; IMF_FIXDATE_LEN])> = const { Cell::new((u64::MAX, [0; IMF_FIXDATE_LEN])) };
    }
    // HttpDate panics outside 1970..=9999; a clock that far off still gets a valid header.
    let date = date.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST_DATE);
    let second = date.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    out.extend_from_slice(b"date: ");
    let (cached, text) = LAST.get();
    if cached == second {
        out.extend_from_slice(&text);
    } else {
        let formatted = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        out.extend_from_slice(formatted.as_bytes());
        if let Ok(text) = <[u8; IMF_FIXDATE_LEN]>::try_from(formatted.as_bytes()) {
            LAST.set((second, text));
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes one `name: value` header line; line breaks in the value become spaces (no response
/// splitting).
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    // Header values may not contain line breaks (response splitting).
    out.extend(value.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete HTTP/1.1 response head: status line, `defaults`, `headers`,
/// `Content-Length` if `content_length` is given, and the blank line. Ends with
/// `Connection: close`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(Vec<u8>, Vec<u8>)],
    content_length: Option<usize>,
    defaults: DefaultHeaders<'_>,
) {
    push_status_line(out, status);
    push_default_headers(out, headers, defaults);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"content-length")
        {
            continue;
        }
        push_header(out, name, value);
    }
    if let Some(n) = content_length {
        push_header(out, b"Content-Length", n.to_string().as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// Writes a whole rejection response of the core's own (400, 403, 408, 413, 426, 500, …) with
/// a plain-text body, after which the connection closes.
pub fn write_reject(out: &mut Vec<u8>, status: u16, message: &str, defaults: DefaultHeaders<'_>) {
    let mut headers = vec![(b"Content-Type".to_vec(), b"text/plain; charset=utf-8".to_vec())];
    if status == 426 {
        headers.push((b"Upgrade".to_vec(), b"websocket".to_vec()));
        headers.push((b"Sec-WebSocket-Version".to_vec(), b"13".to_vec()));
    }
    let body = format!("{message}\n");
    write_response_head(out, status, &headers, Some(body.len()), defaults);
    out.extend_from_slice(body.as_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    Length(u64),
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 without a length).
    Close,
}

/// Frames one response: head, then body pieces, written into an [`OutQueue`].
#[derive(Debug)]
pub struct ResponseWriter {
    framing: BodyFraming,
    /// No body on the wire (HEAD, 1xx, 204, 304).
    bodyless: bool,
    written: u64,
    finished: bool,
    keep_alive: bool,
}

impl ResponseWriter {
    /// Writes the head of a response with `status` and the application's `headers`.
    ///
    /// Adds `Content-Length`/`Transfer-Encoding` framing when the application gave none,
    /// `Connection: close` when the connection will not be kept alive, and the
    /// [default headers](push_default_headers) the application left out. `keep_alive` is what
    /// the request allows; `head` is true for a HEAD request; `http_minor` is the request's
    /// version; `defaults` carries the wall-clock time of the response.
    pub fn start(
        out: &mut OutQueue,
        status: u16,
        headers: &[(Vec<u8>, Vec<u8>)],
        keep_alive: bool,
        head: bool,
        http_minor: u8,
        defaults: DefaultHeaders<'_>,
    ) -> Self {
        let bodyless = head || status < 200 || status == 204 || status == 304;
        let mut length = None;
        let mut app_close = false;
        let mut buf = Vec::with_capacity(128 + headers.len() * 32);
        push_status_line(&mut buf, status);
        push_default_headers(&mut buf, headers, defaults);
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"content-length") {
                // RFC 9110 §8.6: 1*DIGIT. The first valid length frames the body; an invalid
                // one, or a second one, is dropped (the body is framed below without it).
                let digits = value.trim_ascii();
                if length.is_none() && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                    length = std::str::from_utf8(digits).ok().and_then(|v| v.parse::<u64>().ok());
                    if length.is_some() {
                        push_header(&mut buf, name, digits);
                    }
                }
                continue;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                continue; // framing is ours to decide
            } else if name.eq_ignore_ascii_case(b"connection") {
                app_close |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                continue;
            }
            push_header(&mut buf, name, value);
        }
        let framing = match length {
            Some(n) => BodyFraming::Length(n),
            None if bodyless => BodyFraming::Length(0),
            None if http_minor >= 1 => BodyFraming::Chunked,
            None => BodyFraming::Close,
        };
        let keep_alive = keep_alive && !app_close && framing != BodyFraming::Close;
        if framing == BodyFraming::Chunked {
            buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            buf.extend_from_slice(b"connection: close\r\n");
        } else if http_minor == 0 {
            buf.extend_from_slice(b"connection: keep-alive\r\n");
        }
        buf.extend_from_slice(b"\r\n");
        out.push_bytes(Bytes::from(buf), 0);
        Self { framing, bodyless, written: 0, finished: false, keep_alive }
    }

    /// Writes a piece of the body; `more` is false for the last one. Every byte of `body`
    /// counts against the application's send buffer and is reported back by the queue once
    /// written. Returns how many of them were not queued (a body after the end, or for HEAD),
    /// to release at once.
    #[must_use]
    pub fn body(&mut self, out: &mut OutQueue, body: Bytes, more: bool) -> usize {
        let len = body.len();
        let accounted = len;
        if self.finished {
            return accounted;
        }
        let mut unqueued = 0;
        if self.bodyless || len == 0 {
            unqueued = accounted;
            if !self.bodyless && !more && self.framing == BodyFraming::Chunked {
                out.push_bytes(Bytes::from_static(b"0\r\n\r\n"), 0);
            }
        } else {
            match self.framing {
                BodyFraming::Length(n) => {
                    // Never write past the declared length (it would corrupt the next response).
                    let allowed = n.saturating_sub(self.written).min(len as u64) as usize;
                    if allowed < len {
                        self.keep_alive = false;
                    }
                    if allowed == 0 {
                        unqueued = accounted;
                    } else {
                        out.push_bytes(body.slice(..allowed), accounted);
                    }
                }
                BodyFraming::Chunked => {
                    out.push_bytes(Bytes::from(format!("{len:x}\r\n")), 0);
                    out.push_bytes(body, accounted);
                    out.push_bytes(Bytes::from_static(b"\r\n"), 0);
                    if !more {
                        out.push_bytes(Bytes::from_static(b"0\r\n\r\n"), 0);
                    }
                }
                BodyFraming::Close => out.push_bytes(body, accounted),
            }
        }
        self.written += len as u64;
        if !more {
            self.finished = true;
            if let BodyFraming::Length(n) = self.framing {
                if !self.bodyless && self.written < n {
                    // Short body: the client would wait for the rest; close instead.
                    self.keep_alive = false;
                }
            }
        }
        unqueued
    }

    /// Whether the last body piece has been written.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the connection may serve another request after this response.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;

    /// 1994-11-06T08:49:37Z, RFC 9110's example date.
    fn date() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn dated() -> DefaultHeaders<'static> {
        DefaultHeaders::dated(date())
    }

    const DEFAULTS: &str = "date: Sun, 06 Nov 1994 08:49:37 GMT\r\nserver: zcasgi\r\n";

    fn written(out: &mut OutQueue) -> String {
        let mut s = [IoSlice::new(&[]); 64];
        let n = out.io_slices(&mut s);
        let v: Vec<u8> = s[..n].iter().flat_map(|s| s.iter().copied()).collect();
        out.advance(v.len());
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn status_lines_have_reasons() {
        for (status, line) in [
            (101, "HTTP/1.1 101 Switching Protocols\r\n"),
            (413, "HTTP/1.1 413 Payload Too Large\r\n"),
            (431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (501, "HTTP/1.1 501 Not Implemented\r\n"),
            (599, "HTTP/1.1 599 \r\n"),
        ] {
            let mut out = Vec::new();
            push_status_line(&mut out, status);
            assert_eq!(String::from_utf8(out).unwrap(), line);
        }
    }

    #[test]
    fn default_headers_unless_given() {
        let mut out = Vec::new();
        push_default_headers(&mut out, &[], dated());
        assert_eq!(String::from_utf8(out).unwrap(), DEFAULTS);
        let mut out = Vec::new();
        push_default_headers(&mut out, &[(b"Server".to_vec(), b"mine".to_vec())], dated());
        assert_eq!(String::from_utf8(out).unwrap(), "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        let mut out = Vec::new();
        push_default_headers(
            &mut out,
            &[(b"date".to_vec(), b"x".to_vec())],
            DefaultHeaders::dated(UNIX_EPOCH),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "server: zcasgi\r\n");
        let mut out = Vec::new();
        let far = UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 100);
        push_default_headers(&mut out, &[], DefaultHeaders::dated(far));
        assert!(String::from_utf8(out).unwrap().starts_with("date: Fri, 31 Dec 9999 23:59:59 GMT"));
    }

    #[test]
    fn configured_default_headers() {
        let extra = [
            ("x-frame-options".to_owned(), "DENY".to_owned()),
            ("Server".to_owned(), "edge".to_owned()),
        ];
        let mut out = Vec::new();
        let defaults = DefaultHeaders { date: None, server: true, extra: &extra };
        push_default_headers(
            &mut out,
            &[(b"X-Frame-Options".to_vec(), b"SAMEORIGIN".to_vec())],
            defaults,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: edge\r\n",
            "the application's header wins"
        );
        let mut out = Vec::new();
        let defaults = DefaultHeaders { date: None, server: false, extra: &[] };
        push_default_headers(&mut out, &[], defaults);
        assert!(out.is_empty());
    }

    #[test]
    fn dates_follow_the_second() {
        // Formatted once a second per thread: the text must still change with the second, and
        // the fraction of a second must not matter.
        let at = |secs: u64, nanos: u32| {
            let mut out = Vec::new();
            let defaults = DefaultHeaders {
                date: Some(UNIX_EPOCH + Duration::new(secs, nanos)),
                server: false,
                extra: &[],
            };
            push_default_headers(&mut out, &[], defaults);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(784_111_777, 0), "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        assert_eq!(at(784_111_777, 999_999_999), "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        assert_eq!(at(784_111_778, 0), "date: Sun, 06 Nov 1994 08:49:38 GMT\r\n");
        assert_eq!(at(784_111_777, 5), "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    }

    #[test]
    fn wall_clock_follows_the_monotonic_time() {
        let at = Instant::now();
        let clock = WallClock::new(at, date());
        assert_eq!(clock.at(at + Duration::from_secs(3)), date() + Duration::from_secs(3));
        assert_eq!(clock.at(at), date());
    }

    #[test]
    fn rejections() {
        let mut out = Vec::new();
        write_reject(&mut out, 426, "upgrade required", dated());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("HTTP/1.1 426 Upgrade Required\r\n{DEFAULTS}")));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("Content-Length: 17\r\n"));
        assert!(text.ends_with("\r\n\r\nupgrade required\n"));
        let mut out = Vec::new();
        let evil = [(b"x-evil".to_vec(), b"a\r\nb".to_vec())];
        write_response_head(&mut out, 403, &evil, Some(0), dated());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("x-evil: a  b\r\n"));
    }

    #[test]
    fn responses() {
        let mut out = OutQueue::new();
        let mut w = ResponseWriter::start(
            &mut out,
            200,
            &[(b"x".to_vec(), b"1".to_vec())],
            true,
            false,
            1,
            dated(),
        );
        assert_eq!(w.body(&mut out, Bytes::from_static(b"ab"), true), 0);
        assert_eq!(w.body(&mut out, Bytes::from_static(b""), false), 0);
        assert_eq!(
            written(&mut out),
            format!("HTTP/1.1 200 OK\r\n{DEFAULTS}x: 1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
        );
        assert!(w.is_finished() && w.keep_alive());

        let h = [(b"content-length".to_vec(), b"2".to_vec())];
        let mut w = ResponseWriter::start(&mut out, 200, &h, true, true, 1, dated());
        assert_eq!(w.body(&mut out, Bytes::from_static(b"ab"), false), 2);
        assert_eq!(
            written(&mut out),
            format!("HTTP/1.1 200 OK\r\n{DEFAULTS}content-length: 2\r\n\r\n"),
            "HEAD"
        );

        let mut w = ResponseWriter::start(&mut out, 200, &[], false, false, 0, dated());
        assert_eq!(w.body(&mut out, Bytes::from_static(b"old"), false), 0);
        assert_eq!(
            written(&mut out),
            format!("HTTP/1.1 200 OK\r\n{DEFAULTS}connection: close\r\n\r\nold")
        );
        assert!(!w.keep_alive());

        let mut w = ResponseWriter::start(&mut out, 200, &h, true, false, 1, dated());
        assert_eq!(w.body(&mut out, Bytes::from_static(b"abc"), false), 0);
        assert_eq!(
            written(&mut out),
            format!("HTTP/1.1 200 OK\r\n{DEFAULTS}content-length: 2\r\n\r\nab")
        );
        assert!(!w.keep_alive(), "overlong body: the connection is not reused");
    }

    #[test]
    fn application_content_length_is_strict_and_single() {
        // Found by the http_body fuzz target: "+3" parsed as a length and was sent as is, and
        // each of several lengths was sent while the last one framed the body.
        let mut out = OutQueue::new();
        let odd = [(b"content-length".to_vec(), b"+3".to_vec())];
        let mut w = ResponseWriter::start(&mut out, 200, &odd, true, false, 1, dated());
        let _ = w.body(&mut out, Bytes::from_static(b"abc"), false);
        assert_eq!(
            written(&mut out),
            format!("HTTP/1.1 200 OK\r\n{DEFAULTS}transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        );
        let two = [
            (b"Content-Length".to_vec(), b" 2 ".to_vec()),
            (b"content-length".to_vec(), b"3".to_vec()),
        ];
        let mut w = ResponseWriter::start(&mut out, 200, &two, true, false, 1, dated());
        let _ = w.body(&mut out, Bytes::from_static(b"abc"), false);
        assert_eq!(
            written(&mut out),
            format!("HTTP/1.1 200 OK\r\n{DEFAULTS}Content-Length: 2\r\n\r\nab")
        );
    }
}
