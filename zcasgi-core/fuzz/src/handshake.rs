//! Fuzz the WebSocket opening handshake (`zcasgi_core::handshake`, RFC 6455 §4.2) with
//! structured upgrade requests: the header lines that matter (`Upgrade`, `Connection`,
//! `Sec-WebSocket-Key`, `Sec-WebSocket-Version`, `Sec-WebSocket-Protocol`), valid, invalid,
//! repeated or missing, among other headers, with any method and version.
//!
//! It checks:
//! - the request parses, and `validate_upgrade` accepts it exactly when the RFC's rules hold:
//!   `GET`, HTTP/1.1, an `upgrade` token `websocket`, a `connection` token `upgrade`, one key
//!   of 16 bytes in base64, version 13; otherwise the error maps to 400 or 426;
//! - the accept key is that of the key sent, and the subprotocols are those offered, in order;
//! - the `101` response is a well-formed head: one `Upgrade`, `Connection` and
//!   `Sec-WebSocket-Accept` each whatever the application's headers repeat, the chosen
//!   subprotocol, and every application header, whose line breaks cannot split the response;
//! - a rejection is a well-formed response whose `Content-Length` is its body's length.

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use zcasgi_core::handshake::{
    accept_key, parse_request, validate_upgrade, write_accept, HandshakeConfig,
};
use zcasgi_core::http::response::write_reject;
use zcasgi_core::http::DefaultHeaders;

use super::common::{check_default_headers, parse_response, values, wall, MAX_HEADERS};

#[derive(Debug, Arbitrary)]
struct Input {
    method: Method,
    http_10: bool,
    lines: Vec<Line>,
    choose: Option<u8>,
    extra: Vec<Extra>,
    reject: (u16, String),
    wall: u64,
}

#[derive(Debug, Arbitrary)]
enum Method {
    Get,
    Post,
    LowerGet,
}

#[derive(Debug, Arbitrary)]
enum Line {
    Upgrade(Vec<Token>),
    Connection(Vec<Token>),
    Key(Key),
    Version(u8),
    Protocol(Vec<u8>),
    Other(u8, u8),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Token {
    WebSocket,
    Upgrade,
    KeepAlive,
    Other(u8),
}

#[derive(Debug, Arbitrary)]
enum Key {
    /// 16 bytes in base64, with optional spaces around.
    Valid([u8; 16], bool),
    /// Any number of bytes in base64.
    Encoded(Vec<u8>),
    /// Arbitrary visible characters.
    Garbage(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Extra {
    name: u8,
    value: Vec<u8>,
}

/// Header names an application might give: those the handshake controls, in odd cases, the
/// defaults the core adds, and others.
const EXTRA_NAMES: [&str; 8] = [
    "Upgrade",
    "CONNECTION",
    "sec-websocket-accept",
    "Sec-WebSocket-Protocol",
    "x-a",
    "x-b",
    "Date",
    "server",
];
/// The headers of the 101 that the application cannot repeat.
const CONTROLLED: [&str; 4] =
    ["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"];

fn token(t: Token) -> String {
    match t {
        Token::WebSocket => "WebSocket".into(),
        Token::Upgrade => "upgrade".into(),
        Token::KeepAlive => "keep-alive".into(),
        Token::Other(n) => format!("t{n}"),
    }
}

fn list(tokens: &[Token]) -> String {
    tokens.iter().map(|&t| token(t)).collect::<Vec<_>>().join(", ")
}

/// The target.
pub fn run(input: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(input)) else { return };
    let method = match input.method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::LowerGet => "get",
    };
    let minor = u8::from(!input.http_10);
    let mut head = format!("{method} /ws?q=1 HTTP/1.{minor}\r\nHost: example\r\n");
    let (mut upgrade, mut connection, mut version13) = (false, false, false);
    let mut keys = Vec::new();
    let mut offered = Vec::new();
    for line in &input.lines {
        let text = match line {
            Line::Upgrade(t) => {
                upgrade |= t.iter().any(|t| matches!(t, Token::WebSocket));
                format!("Upgrade: {}", list(t))
            }
            Line::Connection(t) => {
                connection |= t.iter().any(|t| matches!(t, Token::Upgrade));
                format!("Connection: {}", list(t))
            }
            Line::Key(k) => {
                let (value, valid) = match k {
                    Key::Valid(bytes, spaced) => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                        (if *spaced { format!(" {b64} ") } else { b64 }, true)
                    }
                    Key::Encoded(bytes) => {
                        (base64::engine::general_purpose::STANDARD.encode(bytes), bytes.len() == 16)
                    }
                    Key::Garbage(bytes) => {
                        // `*` is not base64: never a valid key.
                        let visible = bytes.iter().map(|b| char::from(b'!' + b % 94));
                        (std::iter::once('*').chain(visible).collect(), false)
                    }
                };
                keys.push((value.trim().to_owned(), valid));
                format!("Sec-WebSocket-Key: {value}")
            }
            Line::Version(v) => {
                let v = [13, 8, 0, 130][usize::from(v % 4)];
                // Only the first Sec-WebSocket-Version counts.
                if !head.contains("Sec-WebSocket-Version") {
                    version13 = v == 13;
                }
                format!("Sec-WebSocket-Version: {v}")
            }
            Line::Protocol(p) => {
                let names: Vec<String> = p.iter().map(|n| format!("p{n}")).collect();
                offered.extend(names.iter().cloned());
                format!("Sec-WebSocket-Protocol: {}", names.join(","))
            }
            Line::Other(n, v) => format!("X-Other-{n}: {v}"),
        };
        head.push_str(&text);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let cfg =
        HandshakeConfig { max_headers: 1000, max_head_bytes: 1 << 20, max_request_line: 1 << 20 };
    let (req, n) = parse_request(head.as_bytes(), &cfg).unwrap().expect("a whole head");
    assert_eq!(n, head.len());
    let valid_key = matches!(&keys[..], [(_, true)]);
    let expected = method == "GET" && minor == 1 && upgrade && connection && valid_key && version13;
    match validate_upgrade(&req) {
        Ok(up) => {
            assert!(expected, "accepted: {head}");
            assert_eq!(up.accept_key, accept_key(keys[0].0.as_bytes()));
            assert_eq!(up.subprotocols, offered);
            let chosen = input.choose.and_then(|i| offered.get(usize::from(i)).cloned());
            check_accept(&up, chosen.as_deref(), &input.extra, input.wall);
        }
        Err(e) => {
            assert!(!expected, "refused with {e:?}: {head}");
            assert!(matches!(e.status(), 400 | 426), "{e:?}");
        }
    }
    let (status, message) = &input.reject;
    let status = 400 + status % 200;
    let mut out = Vec::new();
    write_reject(&mut out, status, message, DefaultHeaders::dated(wall(input.wall)));
    let (code, headers, len) = parse_response(&out);
    assert_eq!(code, status);
    check_default_headers(&headers, &[]);
    let body = format!("{message}\n");
    assert_eq!(values(&headers, "content-length"), [body.len().to_string().as_bytes()]);
    assert_eq!(&out[len..], body.as_bytes());
}

fn check_accept(
    up: &zcasgi_core::handshake::Upgrade,
    chosen: Option<&str>,
    extra: &[Extra],
    secs: u64,
) {
    let extra: Vec<(Vec<u8>, Vec<u8>)> = extra
        .iter()
        .take(MAX_HEADERS)
        .map(|e| {
            let name = EXTRA_NAMES[usize::from(e.name) % EXTRA_NAMES.len()];
            // Visible characters, spaces and line breaks.
            let value =
                e.value.iter().map(|b| [b'\r', b'\n', b' ', b'!' + b % 94][usize::from(b % 4)]);
            (name.as_bytes().to_vec(), value.collect())
        })
        .collect();
    let mut out = Vec::new();
    write_accept(
        &mut out,
        up,
        chosen,
        Some("permessage-deflate"),
        &extra,
        DefaultHeaders::dated(wall(secs)),
    );
    let (status, headers, len) = parse_response(&out);
    assert_eq!((status, len), (101, out.len()));
    assert_eq!(values(&headers, "upgrade"), [b"websocket"]);
    assert_eq!(values(&headers, "connection"), [b"Upgrade"]);
    assert_eq!(values(&headers, "sec-websocket-accept"), [up.accept_key.as_bytes()]);
    assert_eq!(values(&headers, "sec-websocket-extensions"), [b"permessage-deflate"]);
    let protocols = values(&headers, "sec-websocket-protocol");
    assert_eq!(protocols, chosen.map(str::as_bytes).into_iter().collect::<Vec<_>>());
    let names: Vec<String> =
        extra.iter().map(|(n, _)| String::from_utf8_lossy(n).to_ascii_lowercase()).collect();
    let own = names.iter().filter(|n| !CONTROLLED.contains(&n.as_str())).count();
    let given: Vec<&str> = names.iter().map(String::as_str).collect();
    check_default_headers(&headers, &given);
    let defaults = ["date", "server"].iter().filter(|d| !given.contains(d)).count();
    assert_eq!(headers.len(), 4 + protocols.len() + own + defaults, "{headers:?}");
}
