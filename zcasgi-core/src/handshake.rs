//! The opening handshake (RFC 6455 §4.2): parse the HTTP/1.1 upgrade request, validate it,
//! and write the `101 Switching Protocols` response.
//!
//! [`parse_request`] turns the request head into a [`Request`] (everything the ASGI scope
//! needs; plain HTTP requests are parsed by it too); [`validate_upgrade`] applies the WebSocket
//! rules to it; [`write_accept`] writes the 101 into a caller-supplied `Vec<u8>`. A rejection
//! (`HandshakeError::status`) is written by [`crate::http::response::write_reject`].

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::error::HandshakeError;
use crate::http::response::{push_default_headers, push_header, push_status_line, DefaultHeaders};

/// The GUID appended to the client's key (RFC 6455 §1.3).
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Limits applied while reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Maximum number of request headers.
    pub max_headers: usize,
    /// Maximum size of the request head (request line and headers), in bytes.
    pub max_head_bytes: usize,
    /// Maximum length of the request line, in bytes.
    pub max_request_line: usize,
}

impl Default for HandshakeConfig {
    /// The limits of [`ServerConfig::default`](crate::config::ServerConfig).
    fn default() -> Self {
        crate::config::ServerConfig::default().handshake()
    }
}

/// A parsed HTTP/1.1 request head: what the ASGI scope is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub http_minor: u8,
    /// The path of the request target (up to `?`), still percent-encoded; for an absolute-form
    /// target (`http://host/p?q`), its path (`/p`).
    pub raw_path: Vec<u8>,
    /// The request target after `?`, without it.
    pub query_string: Vec<u8>,
    /// Every header in order, names lower-cased, values as sent; an absolute-form target's
    /// authority replaces the `host` header (RFC 9112 §3.2.2).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Request {
    /// The first value of the header `name` (given in lower case).
    #[must_use]
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// Iterates over the comma-separated tokens of every `name` header, trimmed.
    pub fn header_tokens<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    /// Whether this request asks to upgrade to WebSocket (`Upgrade: websocket`).
    #[must_use]
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header_tokens(b"upgrade").any(|t| t.eq_ignore_ascii_case(b"websocket"))
    }

    /// The path, percent-decoded as UTF-8 (invalid UTF-8 replaced by U+FFFD, malformed escapes kept).
    #[must_use]
    pub fn path(&self) -> String {
        percent_decode(&self.raw_path)
    }
}

/// A request that passed [`validate_upgrade`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept_key: String,
    /// Subprotocols the client offered, in its order of preference.
    pub subprotocols: Vec<String>,
    /// The raw `Sec-WebSocket-Extensions` offers, one entry per comma-separated offer.
    pub extensions: Vec<String>,
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` until the whole head (up to the blank line) is in `buf`, then the request
/// and the length of its head. Header names are lower-cased. An HTTP/1.1 request must have
/// exactly one `Host` header (RFC 9112 §3.2); an absolute-form target gives its path, and its
/// authority as the `host` header (RFC 9112 §3.2.2).
///
/// # Errors
/// [`HandshakeError`] for a malformed head or one over the limits in `cfg`.
pub fn parse_request(
    buf: &[u8],
    cfg: &HandshakeConfig,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut storage = vec![httparse::EMPTY_HEADER; cfg.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let status = req.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders(cfg.max_headers),
        httparse::Error::HeaderName => HandshakeError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::Malformed("invalid header value"),
        httparse::Error::NewLine => HandshakeError::Malformed("invalid line ending"),
        httparse::Error::Status => HandshakeError::Malformed("invalid status"),
        httparse::Error::Token => HandshakeError::Malformed("invalid token"),
        httparse::Error::Version => HandshakeError::Malformed("invalid HTTP version"),
    })?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            let line_end = buf.iter().position(|&b| b == b'\n');
            if line_end.map_or(buf.len(), |n| n) > cfg.max_request_line {
                return Err(HandshakeError::RequestLineTooLong);
            }
            if buf.len() > cfg.max_head_bytes {
                return Err(HandshakeError::HeadersTooLarge(cfg.max_head_bytes));
            }
            return Ok(None);
        }
    };
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(head_len);
    if line_len > cfg.max_request_line {
        return Err(HandshakeError::RequestLineTooLong);
    }
    if head_len > cfg.max_head_bytes {
        return Err(HandshakeError::HeadersTooLarge(cfg.max_head_bytes));
    }
    let method = req.method.ok_or(HandshakeError::Malformed("missing method"))?.to_owned();
    let target = req.path.ok_or(HandshakeError::Malformed("missing request target"))?.as_bytes();
    let http_minor = req.version.ok_or(HandshakeError::Malformed("missing version"))?;
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.as_bytes().to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (HTTP/1.0 clients need not send it).
    match headers.iter().filter(|(n, _)| n == b"host").count() {
        0 if http_minor >= 1 => return Err(HandshakeError::MissingHost),
        0 | 1 => {}
        _ => return Err(HandshakeError::MultipleHosts),
    }
    let Target { authority, path, query } = split_target(&method, target)?;
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: the target's authority replaces the Host header.
        headers.retain(|(n, _)| n != b"host");
        headers.push((b"host".to_vec(), authority.to_vec()));
    }
    let (raw_path, query_string) = (path.to_vec(), query.to_vec());
    Ok(Some((Request { method, http_minor, raw_path, query_string, headers }, head_len)))
}

/// Splits a request target (RFC 9112 §3.2) into the authority of an absolute-form target (if
/// any), the path and the query (after `?`, without it): `/p?q` gives `/p` and `q`,
/// `http://host/p?q` gives `host`, `/p` and `q` (the path is `/` when the URI has none), and
/// `*` is accepted for OPTIONS.
///
/// # Errors
/// [`HandshakeError::InvalidTarget`] for anything else: another scheme or form, an empty host
/// (RFC 9110 §4.2.1), or userinfo (RFC 9110 §4.2.4: deprecated, and used to mislead).
fn split_target<'a>(method: &str, target: &'a [u8]) -> Result<Target<'a>, HandshakeError> {
    let (authority, rest) = if target.starts_with(b"/") || (target == b"*" && method == "OPTIONS") {
        (None, target)
    } else {
        let rest = [&b"http://"[..], b"https://"]
            .iter()
            .find_map(|scheme| {
                let head = target.get(..scheme.len())?;
                head.eq_ignore_ascii_case(scheme).then(|| &target[scheme.len()..])
            })
            .ok_or(HandshakeError::InvalidTarget)?;
        let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        if authority.is_empty() || authority.contains(&b'@') {
            return Err(HandshakeError::InvalidTarget);
        }
        (Some(authority), rest)
    };
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(q) => (&rest[..q], &rest[q + 1..]),
        None => (rest, &b""[..]),
    };
    Ok(Target { authority, path: if path.is_empty() { b"/" } else { path }, query })
}

/// The parts of a request target.
struct Target<'a> {
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
    /// The path (never empty).
    path: &'a [u8],
    /// What follows `?`, without it.
    query: &'a [u8],
}

/// Checks `req` against the WebSocket opening handshake rules (RFC 6455 §4.2.1).
///
/// # Errors
/// The first rule the request breaks.
pub fn validate_upgrade(req: &Request) -> Result<Upgrade, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed(req.method.clone()));
    }
    if req.http_minor < 1 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    if !req.is_websocket_upgrade()
        || !req.header_tokens(b"connection").any(|t| t.eq_ignore_ascii_case(b"upgrade"))
    {
        return Err(HandshakeError::NotUpgrade);
    }
    let key = req.header(b"sec-websocket-key").ok_or(HandshakeError::InvalidKey)?.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| HandshakeError::InvalidKey)?;
    if decoded.len() != 16
        || req.headers.iter().filter(|(n, _)| n == b"sec-websocket-key").count() != 1
    {
        return Err(HandshakeError::InvalidKey);
    }
    if req.header(b"sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let subprotocols = req
        .header_tokens(b"sec-websocket-protocol")
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    let extensions = req
        .header_tokens(b"sec-websocket-extensions")
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    Ok(Upgrade { accept_key: accept_key(key), subprotocols, extensions })
}

/// Computes `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
#[must_use]
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Writes the `101 Switching Protocols` response, with the server's `defaults`.
///
/// `extra_headers` come from the application (ASGI `websocket.accept` `headers`); headers that
/// the handshake itself controls are skipped if the application repeats them, and the
/// server's default headers are added unless it gave them.
pub fn write_accept(
    out: &mut Vec<u8>,
    upgrade: &Upgrade,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
    extra_headers: &[(Vec<u8>, Vec<u8>)],
    defaults: DefaultHeaders<'_>,
) {
    push_status_line(out, 101);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(upgrade.accept_key.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_default_headers(out, extra_headers, defaults);
    if let Some(p) = subprotocol {
        push_header(out, b"Sec-WebSocket-Protocol", p.as_bytes());
    }
    if let Some(e) = extensions {
        push_header(out, b"Sec-WebSocket-Extensions", e.as_bytes());
    }
    for (name, value) in extra_headers {
        let controlled = [
            &b"upgrade"[..],
            b"connection",
            b"sec-websocket-accept",
            b"sec-websocket-protocol",
            b"sec-websocket-extensions",
        ];
        if controlled.iter().any(|c| name.eq_ignore_ascii_case(c)) {
            continue;
        }
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// `raw` with its `%XX` escapes decoded, as UTF-8 (invalid sequences replaced, malformed
/// escapes kept), as Python's `urllib.parse.unquote` decodes a path.
fn percent_decode(raw: &[u8]) -> String {
    percent_encoding::percent_decode(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
        parse_request(buf, &HandshakeConfig::default())
    }

    #[test]
    fn rfc6455_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn parses_and_validates_rfc_request() {
        let (req, n) = parse(RFC_REQUEST).unwrap().unwrap();
        assert_eq!(n, RFC_REQUEST.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.raw_path, b"/chat");
        assert_eq!(req.query_string, b"room=1");
        assert_eq!(req.header(b"host"), Some(&b"server.example.com"[..]));
        assert_eq!(req.headers.len(), 7);
        assert!(req.headers.iter().any(|(n, _)| n == b"upgrade"));
        let up = validate_upgrade(&req).unwrap();
        assert_eq!(up.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.subprotocols, ["chat", "superchat"]);
        let mut out = Vec::new();
        write_accept(
            &mut out,
            &up,
            Some("chat"),
            None,
            &[(b"x-a".to_vec(), b"1".to_vec())],
            DefaultHeaders::dated(std::time::UNIX_EPOCH),
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.contains("x-a: 1\r\n"));
        assert!(text.contains("date: Thu, 01 Jan 1970 00:00:00 GMT\r\nserver: zcasgi\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn partial_heads_need_more() {
        for cut in 0..RFC_REQUEST.len() {
            assert_eq!(parse(&RFC_REQUEST[..cut]).unwrap(), None, "cut {cut}");
        }
    }

    fn with_header_replaced(name: &str, value: Option<&str>) -> Request {
        let text = std::str::from_utf8(RFC_REQUEST).unwrap();
        let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
        lines.retain(|l| {
            !l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase()))
        });
        if let Some(v) = value {
            lines.insert(1, format!("{name}: {v}"));
        }
        parse(lines.join("\r\n").as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn validation_failures() {
        let cases = [
            ("Upgrade", None, HandshakeError::NotUpgrade),
            ("Upgrade", Some("h2c"), HandshakeError::NotUpgrade),
            ("Connection", Some("keep-alive"), HandshakeError::NotUpgrade),
            ("Sec-WebSocket-Key", None, HandshakeError::InvalidKey),
            ("Sec-WebSocket-Key", Some("c2hvcnQ="), HandshakeError::InvalidKey),
            ("Sec-WebSocket-Key", Some("!!!"), HandshakeError::InvalidKey),
            ("Sec-WebSocket-Version", None, HandshakeError::UnsupportedVersion),
            ("Sec-WebSocket-Version", Some("8"), HandshakeError::UnsupportedVersion),
        ];
        for (name, value, err) in cases {
            let req = with_header_replaced(name, value);
            assert_eq!(validate_upgrade(&req), Err(err), "{name}: {value:?}");
        }
        // Tokens are case-insensitive and may be lists.
        let req = with_header_replaced("Connection", Some("keep-alive, UPGRADE"));
        assert!(validate_upgrade(&req).is_ok());
    }

    #[test]
    fn method_and_version() {
        let text = std::str::from_utf8(RFC_REQUEST).unwrap();
        let post = parse(text.replacen("GET", "POST", 1).as_bytes()).unwrap().unwrap().0;
        assert_eq!(validate_upgrade(&post), Err(HandshakeError::MethodNotAllowed("POST".into())));
        let old = parse(text.replacen("HTTP/1.1", "HTTP/1.0", 1).as_bytes()).unwrap().unwrap().0;
        assert_eq!(validate_upgrade(&old), Err(HandshakeError::UnsupportedHttpVersion));
    }

    #[test]
    fn limits() {
        let cfg = HandshakeConfig { max_headers: 3, max_head_bytes: 200, max_request_line: 50 };
        assert_eq!(parse_request(RFC_REQUEST, &cfg), Err(HandshakeError::TooManyHeaders(3)));
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(60));
        assert_eq!(
            parse_request(long_line.as_bytes(), &cfg),
            Err(HandshakeError::RequestLineTooLong)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "b".repeat(300));
        assert_eq!(parse_request(big.as_bytes(), &cfg), Err(HandshakeError::HeadersTooLarge(200)));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(parse(b"\x01\x02 / HTTP/1.1\r\n\r\n"), Err(HandshakeError::Malformed(_))));
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host header is a 400 (h11 too);
    /// HTTP/1.0 did not require it.
    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Err(HandshakeError::MissingHost));
        assert_eq!(HandshakeError::MissingHost.status(), 400);
        let two = b"GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n";
        assert_eq!(parse(two), Err(HandshakeError::MultipleHosts));
        assert_eq!(HandshakeError::MultipleHosts.status(), 400);
        let old = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().0;
        assert_eq!(old.header(b"host"), None);
        let text =
            std::str::from_utf8(RFC_REQUEST).unwrap().replace("Host: server.example.com\r\n", "");
        assert_eq!(parse(text.as_bytes()), Err(HandshakeError::MissingHost));
    }

    /// RFC 9112 §3.2.2: an absolute-form target is accepted; the application sees its path
    /// and query, and its authority replaces the Host header.
    #[test]
    fn absolute_form_target() {
        let req =
            parse(b"GET http://evil/x%20y?q=1 HTTP/1.1\r\nHost: good\r\n\r\n").unwrap().unwrap().0;
        assert_eq!(req.raw_path, b"/x%20y");
        assert_eq!(req.path(), "/x y");
        assert_eq!(req.query_string, b"q=1");
        assert_eq!(req.header(b"host"), Some(&b"evil"[..]));
        assert_eq!(req.headers.len(), 1);
        let req =
            parse(b"GET HTTPS://Evil:8443 HTTP/1.1\r\nHost: good\r\n\r\n").unwrap().unwrap().0;
        assert_eq!((req.raw_path.as_slice(), req.query_string.as_slice()), (&b"/"[..], &b""[..]));
        assert_eq!(req.header(b"host"), Some(&b"Evil:8443"[..]));
        let req = parse(b"GET http://evil?a HTTP/1.0\r\n\r\n").unwrap().unwrap().0;
        assert_eq!((req.raw_path.as_slice(), req.query_string.as_slice()), (&b"/"[..], &b"a"[..]));
        assert_eq!(req.header(b"host"), Some(&b"evil"[..]), "added for HTTP/1.0");
        let req = parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap().0;
        assert_eq!(req.raw_path, b"*");
        for bad in [
            &b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://user@evil/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET ftp://evil/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET evil/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err, HandshakeError::InvalidTarget, "{}", String::from_utf8_lossy(bad));
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn path_decoding() {
        let req =
            parse(b"GET /a%20b/%E2%82%AC%zz? HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap().0;
        assert_eq!(req.raw_path, b"/a%20b/%E2%82%AC%zz");
        assert_eq!(req.path(), "/a b/€%zz");
        assert_eq!(req.query_string, b"");
    }
}
