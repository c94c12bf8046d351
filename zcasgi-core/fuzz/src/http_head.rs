//! Fuzz the request head parser (`handshake::parse_request`) and what reads a parsed head:
//! the upgrade rules (`handshake::validate_upgrade`) and the HTTP framing rules
//! (`http::request_framing`, `expects_continue`, `keep_alive`), with arbitrary bytes.
//!
//! The first input byte picks the limits and a cut point; the rest is the head. Besides "never
//! panics", it checks:
//! - an error maps to 400, 414 or 431, and appending bytes never turns it into a request;
//! - a complete head is within the limits (plus the `host` an absolute-form target may add),
//!   has lower-case header names and a path without
//!   `?`, parses the same from its own bytes (what follows it does not matter), no proper
//!   prefix of it is complete, and written out again it parses to the same request;
//! - an incomplete head is within `max_head_bytes`;
//! - an accepted upgrade is a `GET` of HTTP/1.1 with one 16-byte key and version 13, and its
//!   `101` response is a well-formed head carrying the accept key;
//! - a body framing by length is within the body limit, a chunked one has exactly one
//!   transfer coding and no `Content-Length`.

use std::time::UNIX_EPOCH;

use zcasgi_core::handshake::{
    accept_key, parse_request, validate_upgrade, write_accept, HandshakeConfig, Request,
};
use zcasgi_core::http::{
    expects_continue, keep_alive, request_framing, DefaultHeaders, RequestFraming,
};
use zcasgi_core::HandshakeError;

use super::common::{parse_response, values};

const CONFIGS: [HandshakeConfig; 4] = [
    HandshakeConfig { max_headers: 100, max_head_bytes: 16 * 1024, max_request_line: 8 * 1024 },
    HandshakeConfig { max_headers: 4, max_head_bytes: 256, max_request_line: 64 },
    HandshakeConfig { max_headers: 100, max_head_bytes: 64, max_request_line: 32 },
    HandshakeConfig { max_headers: 1, max_head_bytes: 16 * 1024, max_request_line: 8 * 1024 },
];

/// Body limits tried on each parsed head.
const MAX_BODIES: [u64; 3] = [0, 100, u64::MAX];

/// The target.
pub fn run(input: &[u8]) {
    let Some((&control, data)) = input.split_first() else { return };
    let cfg = CONFIGS[usize::from(control & 3)];
    match parse_request(data, &cfg) {
        Err(e) => {
            assert!(matches!(e.status(), 400 | 414 | 431), "{e:?}");
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\n");
            assert!(parse_request(&more, &cfg).is_err(), "appended bytes fixed {e:?}");
        }
        Ok(None) => assert!(data.len() <= cfg.max_head_bytes),
        Ok(Some((req, n))) => {
            assert!(n <= data.len() && n <= cfg.max_head_bytes, "head length {n}");
            // An absolute-form target's authority may add a `host` header to those sent.
            assert!(req.headers.len() <= cfg.max_headers + 1);
            assert!(!req.raw_path.contains(&b'?'));
            for (name, _) in &req.headers {
                assert!(!name.iter().any(u8::is_ascii_uppercase), "{name:?}");
            }
            assert_eq!(parse_request(&data[..n], &cfg), Ok(Some((req.clone(), n))));
            let cut = n * usize::from(control >> 2) / 64;
            assert_eq!(parse_request(&data[..cut], &cfg), Ok(None), "prefix of {n} bytes: {cut}");
            check_round_trip(&req);
            let _ = req.path();
            check_upgrade(&req);
            check_framing(&req);
        }
    }
}

/// Writes `req` out again and parses it.
fn check_round_trip(req: &Request) {
    let mut wire = Vec::new();
    wire.extend_from_slice(req.method.as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(&req.raw_path);
    // "/a?" and "/a" parse the same; an empty path came from a target "?...".
    if !req.query_string.is_empty() || req.raw_path.is_empty() {
        wire.push(b'?');
        wire.extend_from_slice(&req.query_string);
    }
    wire.extend_from_slice(format!(" HTTP/1.{}\r\n", req.http_minor).as_bytes());
    for (name, value) in &req.headers {
        wire.extend_from_slice(name);
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let cfg = HandshakeConfig {
        max_headers: req.headers.len().max(1),
        max_head_bytes: wire.len(),
        max_request_line: wire.len(),
    };
    let again = parse_request(&wire, &cfg);
    assert_eq!(again, Ok(Some((req.clone(), wire.len()))), "{:?}", String::from_utf8_lossy(&wire));
}

fn check_upgrade(req: &Request) {
    match validate_upgrade(req) {
        Ok(upgrade) => {
            assert_eq!(req.method, "GET");
            assert!(req.http_minor >= 1);
            assert!(req.is_websocket_upgrade());
            let keys: Vec<_> =
                req.headers.iter().filter(|(n, _)| n == b"sec-websocket-key").collect();
            assert_eq!(keys.len(), 1);
            let key = keys[0].1.trim_ascii();
            assert_eq!(key.len(), 24, "a 16-byte key in base64");
            assert_eq!(upgrade.accept_key, accept_key(key));
            assert_eq!(upgrade.accept_key.len(), 28);
            assert_eq!(
                req.header(b"sec-websocket-version").map(<[u8]>::trim_ascii),
                Some(&b"13"[..])
            );
            for token in upgrade.subprotocols.iter().chain(&upgrade.extensions) {
                assert!(!token.is_empty() && !token.contains(','), "{token:?}");
            }
            let mut out = Vec::new();
            let subprotocol = upgrade.subprotocols.first().map(String::as_str);
            write_accept(
                &mut out,
                &upgrade,
                subprotocol,
                None,
                &[],
                DefaultHeaders::dated(UNIX_EPOCH),
            );
            let (status, headers, len) = parse_response(&out);
            assert_eq!((status, len), (101, out.len()));
            assert_eq!(values(&headers, "sec-websocket-accept"), [upgrade.accept_key.as_bytes()]);
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 426), "{e:?}");
            if req.method != "GET" {
                assert_eq!(e, HandshakeError::MethodNotAllowed(req.method.clone()));
            }
        }
    }
}

fn check_framing(req: &Request) {
    let _ = keep_alive(req);
    let _ = expects_continue(req);
    for max in MAX_BODIES {
        match request_framing(req, max) {
            Ok(RequestFraming::Length(n)) => assert!(n <= max),
            Ok(RequestFraming::Chunked) => {
                assert_eq!(req.header_tokens(b"transfer-encoding").count(), 1);
                assert!(req.header(b"content-length").is_none());
            }
            Err(e) => assert!(matches!(e.status(), 400 | 413 | 501), "{e:?}"),
        }
    }
}
