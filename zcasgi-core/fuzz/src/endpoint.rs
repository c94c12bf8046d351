//! Fuzz the Engine.IO endpoint (`zcasgi_core::engineio::endpoint::Endpoint`) as a server runs
//! it: simulated clients on real drivers (`zcasgi_core::driver::Driver`), whose events reach one
//! endpoint as the binding routes them (`route_engineio` in `zcasgi-python/src/server.rs`), an
//! application that answers arbitrarily, a fake clock, and the endpoint's commands applied back
//! to the drivers when the backend gets to them.
//!
//! The clients, on up to six connections at a time: Engine.IO handshakes (long-polling and
//! WebSocket), long-polling GETs and POSTs (payloads of well-formed or arbitrary packets, sent
//! whole, in pieces or chunked), WebSocket upgrades and frames (the probe, the upgrade, pongs,
//! messages, arbitrary frames), requests naming existing, made-up or percent-encoded session
//! ids, requests outside the endpoint's path (a plain application answers them 404), arbitrary
//! bytes, end of stream and resets. The backend reads what a client sent while its driver
//! wants to read, applies commands when it gets to a woken connection, and writes in pieces.
//! The application accepts, refuses or answers a connect later; is done with a message at once
//! or later; sends, broadcasts and disconnects, also from within its handlers. Time passes in
//! steps; the endpoint and the drivers tick.
//!
//! Checked:
//! - nothing panics, and no driver's panic guard logs an error;
//! - every `Connect` names a new session; a `Message` names a session that had a `Connect` and
//!   is open (accepted, no end reported or asked for; or the application disconnected it while
//!   handling an earlier event of the same batch), and text is UTF-8; a `Disconnect` names
//!   a session that had a `Connect`, at most once, never after a refusal or the application's
//!   own `disconnect`;
//! - the endpoint agrees with what it reported: after each step, `is_open` holds exactly for the
//!   sessions the application accepted and saw no end of; `send` and `disconnect` succeed only
//!   on those;
//! - after a tick, `deadline()` is not in the past;
//! - once the application has caught up (every connect answered, every message done) and
//!   `ping_interval + ping_timeout` has passed, a connection that carried only well-formed
//!   requests, each sent whole, has an answer to every request, unless the connection is over:
//!   no request waits for ever (a waiting poll ends with a ping, or its session's end), and the
//!   endpoint takes every message it is delivered (`message_taken`), so no connection is left
//!   with its reading paused; no connection gets more answers than requests;
//! - at the end the clients leave and every driver must finish; once `ping_interval +
//!   ping_timeout` and the linger of a closed long-polling session (`max(ping_timeout, 1 s)`)
//!   have passed since the last client went, with ticks, the endpoint holds no session and no
//!   connection (`is_empty()`, and `owns(id)` for none), whether the application caught up
//!   first or stopped answering: memory is bounded by the clients.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use zcasgi_core::backend::{ConnHandle, ConnId, Event, EventSink, LogLevel, Notify, ServerConfig};
use zcasgi_core::driver::Driver;
use zcasgi_core::engineio::cors::{AllowedOrigins, Cookie, Cors};
use zcasgi_core::engineio::endpoint::{AppEvent, Endpoint, EndpointConfig, Outgoing, Payload};
use zcasgi_core::engineio::request::Transports;
use zcasgi_core::engineio::session::SessionConfig;

use super::common::{client_frame, read_into, wall, write_from};

/// Connections open at once.
const SLOTS: usize = 6;
/// Most operations taken from one input.
const MAX_OPS: usize = 256;
/// The endpoint's path.
const PREFIX: &str = "/socket.io/";
/// The WebSocket upgrade headers of a request.
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
/// Close frame payloads: a valid code, one with a reason, a code that may not be sent, none.
const CLOSES: [&[u8]; 4] = [b"\x03\xe8", b"\x03\xe9bye", b"\x03\xed", b""];

#[derive(Debug, Arbitrary)]
struct Setup {
    /// The ping interval, in 10 ms.
    ping_interval: u8,
    /// The ping timeout, in 10 ms.
    ping_timeout: u8,
    /// `max_payload`: 8 + 4 × this.
    max_payload: u8,
    /// `max_queued_bytes`: 16 × this.
    max_queued: u8,
    /// `max_packets`: 1 + this % 8.
    max_packets: u8,
    no_upgrades: bool,
    /// Both transports (0, 3), long-polling only (1), WebSocket only (2).
    transports: u8,
    cookie: bool,
    /// The same origin (0), any (1), `http://elsewhere` (2), no CORS (3).
    cors: u8,
    /// The drivers' `ws_max_queue`: 1 + this % 4.
    max_queue: u8,
    /// The drivers' write high-water mark: 16 × this.
    high_water: u8,
    /// At the end, the application stops answering instead of catching up.
    stall: bool,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A request on connection `conn` (a new connection if that slot has none).
    Request { conn: u8, request: Request },
    /// The next `len` bytes (0: all) of the body connection `conn` still has to send.
    Body { conn: u8, len: u8 },
    /// A client WebSocket frame.
    Frame { conn: u8, frame: Frame },
    /// Arbitrary bytes.
    Bytes { conn: u8, data: Vec<u8> },
    /// The client closes its side.
    Eof(u8),
    /// The connection is reset.
    Reset(u8),
    /// The backend applies the commands of connection `conn`, if it was woken.
    Wake(u8),
    /// The backend writes up to `max` bytes of connection `conn`.
    Write { conn: u8, max: u16 },
    /// The backend applies every woken connection's commands and writes everything.
    Flush,
    /// 20 × this milliseconds pass; the endpoint ticks, and the drivers whose deadline came.
    Tick(u8),
    /// The application acts.
    App(AppOp),
}

#[derive(Debug, Arbitrary)]
enum Request {
    /// A new session.
    Handshake { websocket: bool, origin: u8 },
    /// A long-polling GET.
    Poll { sid: SidRef },
    /// A long-polling POST of `packets`, chunked or with a length; only `split` bytes of its
    /// body are sent with the head (the rest with [`Op::Body`]) if given.
    Post { sid: SidRef, packets: Vec<PacketSpec>, chunked: bool, split: Option<u8> },
    /// A WebSocket upgrade of a session (the probe's connection).
    Upgrade { sid: SidRef },
    /// A CORS preflight.
    Options { origin: u8 },
    /// Any method and query parameters.
    Other { method: u8, query: Vec<QueryPart>, upgrade: bool, origin: u8 },
    /// A request outside the endpoint's path.
    Elsewhere { upgrade: bool },
}

#[derive(Debug, Arbitrary)]
enum SidRef {
    /// A session the application was told of (the latest if there are none yet: `s1`).
    Known(u8),
    /// A known session, every byte percent-encoded.
    Encoded(u8),
    /// A session that never exists.
    Unknown(u8),
    /// Arbitrary bytes, percent-encoded.
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum QueryPart {
    /// `EIO=4`, `EIO=3`, `EIO=`.
    Eio(u8),
    /// `transport=polling`, `websocket`, `flash`.
    Transport(u8),
    Sid(SidRef),
    /// `j=0` (JSONP).
    Jsonp,
    /// `t=<n>` (a cache buster).
    Other(u8),
}

#[derive(Debug, Arbitrary)]
enum PacketSpec {
    Open,
    Close,
    Ping,
    Pong,
    /// A text message (its bytes read as Latin-1).
    Message(Vec<u8>),
    /// A binary message (base64 in a long-polling payload, a binary frame on a WebSocket).
    Binary(Vec<u8>),
    Upgrade,
    Noop,
    /// `2probe`.
    Probe,
    /// A text message of this many bytes (modulo 2048).
    Long(u16),
    /// Arbitrary text (bytes read as Latin-1).
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Frame {
    /// An Engine.IO packet in a text frame (a binary message in a binary frame).
    Packet(PacketSpec),
    /// Any frame (any opcode, fragment or not, any payload).
    Raw { opcode: u8, fin: bool, payload: Vec<u8> },
    /// A close frame.
    Close(u8),
    /// A WebSocket ping.
    Ping,
}

#[derive(Debug, Arbitrary)]
enum AppOp {
    /// The answer to the `which`-th connect left for later.
    Connected {
        which: u8,
        accepted: bool,
    },
    /// Done with the `which`-th message left for later.
    Done(u8),
    /// A message of `len` bytes (modulo 1024) to a session.
    Send {
        to: SidRef,
        binary: bool,
        len: u16,
    },
    /// A message to several sessions.
    Broadcast {
        to: Vec<SidRef>,
        binary: bool,
        len: u8,
    },
    Disconnect(SidRef),
}

/// How the application answers a connect.
#[derive(Debug, Arbitrary)]
enum OnConnect {
    Accept,
    Refuse,
    Later,
}

/// The application's handler for an event: its answer, then perhaps another call.
#[derive(Debug, Arbitrary)]
struct Reaction<T> {
    answer: T,
    then: Option<AppOp>,
}

/// What the application knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SidState {
    /// Told of it, not answered yet.
    Connecting,
    /// Accepted; no end seen.
    Open,
    /// Refused.
    Refused,
    /// Its end was reported.
    Ended,
    /// The application disconnected it.
    Closed,
}

#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn push(&self, event: Event) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(event);
    }
}

/// Marks a connection woken: the backend applies its commands when it gets to it.
struct Wake(Arc<AtomicBool>);

impl Notify for Wake {
    fn notify(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A client's end of stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eof {
    /// The client still sends.
    No,
    /// The client closed its side; the server sees it once it has read what came before.
    Sent,
    /// The server saw it (or the connection was reset).
    Seen,
}

/// One client connection and its driver.
struct Conn {
    driver: Driver,
    woken: Arc<AtomicBool>,
    /// Bytes the client sent that the server has not read yet.
    inbox: Vec<u8>,
    /// Whether the client closed its side, and the server saw it.
    eof: Eof,
    /// The part of the last request's body still to send.
    body_left: Vec<u8>,
    /// Every byte written to the client.
    written: Vec<u8>,
    /// Only well-formed requests, each sent whole before the next, and frames only after an
    /// upgrade request: answers are expected for them.
    clean: bool,
    /// Requests sent (the last one possibly still sending its body).
    requests: usize,
    /// A WebSocket upgrade was asked for: frames follow, no more requests.
    upgrade: bool,
}

impl Conn {
    /// Requests sent whole.
    fn complete(&self) -> usize {
        self.requests - usize::from(!self.body_left.is_empty())
    }
}

fn config(s: &Setup) -> (EndpointConfig, ServerConfig) {
    let ms10 = |n: u8| Duration::from_millis(u64::from(n) * 10);
    let session = SessionConfig {
        ping_interval: ms10(s.ping_interval),
        ping_timeout: ms10(s.ping_timeout),
        ping_grace: Duration::ZERO,
        max_payload: 8 + usize::from(s.max_payload) * 4,
        allow_upgrades: !s.no_upgrades,
        max_queued_bytes: usize::from(s.max_queued) * 16,
    };
    let transports = match s.transports % 4 {
        1 => Transports { polling: true, websocket: false },
        2 => Transports { polling: false, websocket: true },
        _ => Transports::default(),
    };
    let origins = match s.cors % 4 {
        0 => AllowedOrigins::SameOrigin,
        1 => AllowedOrigins::Any,
        2 => AllowedOrigins::List(vec!["http://elsewhere".into()]),
        _ => AllowedOrigins::Disabled,
    };
    let endpoint = EndpointConfig {
        session,
        transports,
        cors: Cors { origins, credentials: true },
        cookie: s.cookie.then(|| Cookie::named("io")),
        max_packets: 1 + usize::from(s.max_packets % 8),
    };
    let high_water = usize::from(s.high_water) * 16;
    let server = ServerConfig {
        ws_max_size: 1024,
        ws_max_queue: 1 + usize::from(s.max_queue % 4),
        ws_max_queue_bytes: 4096,
        ws_ping_interval: None,
        ws_write_high_water: high_water,
        ws_write_low_water: high_water / 2,
        handshake_timeout: Duration::from_secs(3),
        timeout_keep_alive: Duration::from_secs(2),
        http_max_body_size: 2048,
        close_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    (endpoint, server)
}

/// Bytes read as Latin-1 (valid UTF-8 text of every code point below 256).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "%{b:02X}");
        out
    })
}

impl PacketSpec {
    /// The packet as text (in a long-polling payload if `polling`); `None`: a binary frame of
    /// these bytes.
    fn encode(&self, polling: bool) -> Result<String, Vec<u8>> {
        Ok(match self {
            Self::Open => "0".into(),
            Self::Close => "1".into(),
            Self::Ping => "2".into(),
            Self::Pong => "3".into(),
            Self::Message(b) => format!("4{}", latin1(b)),
            Self::Binary(b) if polling => format!("b{}", BASE64.encode(b)),
            Self::Binary(b) => return Err(b.clone()),
            Self::Upgrade => "5".into(),
            Self::Noop => "6".into(),
            Self::Probe => "2probe".into(),
            Self::Long(n) => format!("4{}", "x".repeat(usize::from(*n) % 2048)),
            Self::Raw(b) => latin1(b),
        })
    }
}

fn origin_header(origin: u8) -> &'static str {
    match origin % 4 {
        0 => "",
        1 => "Origin: http://a\r\n",
        2 => "Origin: http://elsewhere\r\n",
        _ => "Origin: \r\n",
    }
}

/// A request head (`Host: a`), with `headers` and the upgrade headers if `upgrade`.
fn head(method: &str, target: &str, headers: &str, upgrade: bool) -> String {
    let upgrade = if upgrade { UPGRADE } else { "" };
    format!("{method} {target} HTTP/1.1\r\nHost: a\r\n{headers}{upgrade}\r\n")
}

/// Counts the complete HTTP responses at the start of `written` (a `101` ends them).
fn responses(written: &[u8]) -> usize {
    let mut rest = written;
    let mut count = 0;
    loop {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut storage);
        let Ok(httparse::Status::Complete(len)) = response.parse(rest) else { return count };
        let code = response.code.unwrap_or(0);
        if code == 101 {
            return count + 1;
        }
        let header = |name: &str| {
            let h = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))?;
            std::str::from_utf8(h.value).ok()
        };
        let body = if header("transfer-encoding").is_some() {
            chunked_len(&rest[len..])
        } else {
            Some(header("content-length").map_or(0, |v| v.parse().unwrap_or(0)))
        };
        let Some(body) = body.filter(|&n| rest.len() >= len + n) else { return count };
        rest = &rest[len + body..];
        if code >= 200 {
            count += 1;
        }
    }
}

/// The length of the chunked body at the start of `data` (no trailers), if it is all there.
fn chunked_len(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = data.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[at..at + line]).ok()?, 16).ok()?;
        at += line + 2 + size + 2;
        if size == 0 {
            return (data.len() >= at).then_some(at);
        }
    }
}

struct Harness {
    endpoint: Endpoint,
    server: Arc<ServerConfig>,
    session: SessionConfig,
    sink: Arc<Sink>,
    now: Instant,
    conns: Vec<Option<Conn>>,
    next_id: ConnId,
    /// Every connection made.
    ids: Vec<ConnId>,
    /// Connections the plain application serves (outside the endpoint's path).
    plain: HashMap<ConnId, ConnHandle>,
    sids: HashMap<String, SidState>,
    /// Sessions in the order of their `Connect`.
    known: Vec<String>,
    /// Connects left for later.
    unanswered: Vec<String>,
    /// Messages not done yet, by session.
    undone: Vec<String>,
    /// The application stopped answering.
    stalled: bool,
}

impl Harness {
    fn new(setup: &Setup) -> Self {
        let (endpoint, server) = config(setup);
        let session = endpoint.session;
        let mut n = 0;
        let endpoint = Endpoint::new(
            endpoint,
            Box::new(move || {
                n += 1;
                format!("s{n}")
            }),
        );
        Self {
            endpoint,
            server: Arc::new(server),
            session,
            sink: Arc::default(),
            now: Instant::now(),
            conns: (0..SLOTS).map(|_| None).collect(),
            next_id: 1,
            ids: Vec::new(),
            plain: HashMap::new(),
            sids: HashMap::new(),
            known: Vec::new(),
            unanswered: Vec::new(),
            undone: Vec::new(),
            stalled: false,
        }
    }

    fn slot(conn: u8) -> usize {
        usize::from(conn) % SLOTS
    }

    /// Connection `conn`, opened if the slot is free.
    fn open(&mut self, conn: u8) -> &mut Conn {
        let id = self.next_id;
        let (server, sink, now) = (&self.server, &self.sink, self.now);
        let slot = &mut self.conns[Self::slot(conn)];
        if slot.is_none() {
            self.next_id += 1;
            self.ids.push(id);
            let woken = Arc::new(AtomicBool::new(false));
            let driver = Driver::new(
                id,
                server.clone(),
                sink.clone(),
                Box::new(Wake(woken.clone())),
                None,
                None,
                now,
                wall(0),
            );
            *slot = Some(Conn {
                driver,
                woken,
                inbox: Vec::new(),
                eof: Eof::No,
                body_left: Vec::new(),
                written: Vec::new(),
                clean: true,
                requests: 0,
                upgrade: false,
            });
        }
        slot.as_mut().unwrap()
    }

    fn conn(&mut self, conn: u8) -> Option<&mut Conn> {
        self.conns[Self::slot(conn)].as_mut()
    }

    /// The session id `r` names.
    fn sid(&self, r: &SidRef) -> String {
        let pick = |i: u8| {
            let n = self.known.len();
            if n == 0 {
                "s1".to_owned()
            } else {
                self.known[usize::from(i) % n].clone()
            }
        };
        match r {
            SidRef::Known(i) => pick(*i),
            SidRef::Encoded(i) => percent_encode(pick(*i).as_bytes()),
            SidRef::Unknown(i) => format!("x{i}"),
            SidRef::Raw(b) => percent_encode(b),
        }
    }

    /// The bytes of `r`, the part of its body held back, and whether it asks for an upgrade.
    fn request_bytes(&self, r: &Request) -> (Vec<u8>, Vec<u8>, bool) {
        let eio = |transport: &str, sid: &SidRef| {
            format!("{PREFIX}?EIO=4&transport={transport}&sid={}", self.sid(sid))
        };
        let (text, upgrade) = match r {
            Request::Handshake { websocket, origin } => {
                let transport = if *websocket { "websocket" } else { "polling" };
                let target = format!("{PREFIX}?EIO=4&transport={transport}&t=N1");
                (head("GET", &target, origin_header(*origin), *websocket), *websocket)
            }
            Request::Poll { sid } => (head("GET", &eio("polling", sid), "", false), false),
            Request::Post { sid, packets, chunked, split } => {
                let parts: Vec<String> =
                    packets.iter().map(|p| p.encode(true).unwrap_or_else(|b| latin1(&b))).collect();
                let mut body = Vec::new();
                let length = if *chunked {
                    for part in &parts {
                        if !part.is_empty() {
                            body.extend(format!("{:x}\r\n{part}\r\n", part.len()).into_bytes());
                        }
                    }
                    body.extend_from_slice(b"0\r\n\r\n");
                    "Transfer-Encoding: chunked\r\n".to_owned()
                } else {
                    body = parts.join("\x1e").into_bytes();
                    format!("Content-Length: {}\r\n", body.len())
                };
                let mut bytes = head("POST", &eio("polling", sid), &length, false).into_bytes();
                let sent = split.map_or(body.len(), |n| usize::from(n).min(body.len()));
                let rest = body.split_off(sent);
                bytes.extend(body);
                return (bytes, rest, false);
            }
            Request::Upgrade { sid } => (head("GET", &eio("websocket", sid), "", true), true),
            Request::Options { origin } => {
                let headers =
                    format!("{}Access-Control-Request-Headers: x-a\r\n", origin_header(*origin));
                (head("OPTIONS", &format!("{PREFIX}?EIO=4"), &headers, false), false)
            }
            Request::Other { method, query, upgrade, origin } => {
                let method = ["GET", "POST", "PUT", "OPTIONS", "DELETE"][usize::from(*method) % 5];
                let query: Vec<String> = query
                    .iter()
                    .map(|q| match q {
                        QueryPart::Eio(n) => format!("EIO={}", ["4", "3", ""][usize::from(*n) % 3]),
                        QueryPart::Transport(n) => format!(
                            "transport={}",
                            ["polling", "websocket", "flash"][usize::from(*n) % 3]
                        ),
                        QueryPart::Sid(s) => format!("sid={}", self.sid(s)),
                        QueryPart::Jsonp => "j=0".into(),
                        QueryPart::Other(n) => format!("t={n}"),
                    })
                    .collect();
                let target = format!("{PREFIX}?{}", query.join("&"));
                (head(method, &target, origin_header(*origin), *upgrade), *upgrade)
            }
            Request::Elsewhere { upgrade } => (head("GET", "/other", "", *upgrade), *upgrade),
        };
        (text.into_bytes(), Vec::new(), upgrade)
    }

    fn apply(&mut self, op: &Op, u: &mut Unstructured<'_>) {
        match op {
            Op::Request { conn, request } => {
                let (bytes, rest, upgrade) = self.request_bytes(request);
                let c = self.open(*conn);
                if c.eof != Eof::No {
                    return;
                }
                if c.upgrade || !c.body_left.is_empty() {
                    c.clean = false;
                }
                c.inbox.extend(bytes);
                c.requests += 1;
                c.body_left = rest;
                c.upgrade |= upgrade;
            }
            &Op::Body { conn, len } => {
                if let Some(c) = self.conn(conn).filter(|c| c.eof == Eof::No) {
                    let n = if len == 0 { c.body_left.len() } else { usize::from(len) };
                    let n = n.min(c.body_left.len());
                    c.inbox.extend(c.body_left.drain(..n));
                }
            }
            Op::Frame { conn, frame } => {
                let bytes = match frame {
                    Frame::Packet(p) => match p.encode(false) {
                        Ok(text) => client_frame(1, true, false, text.as_bytes()),
                        Err(binary) => client_frame(2, true, false, &binary),
                    },
                    Frame::Raw { opcode, fin, payload } => {
                        client_frame(opcode % 16, *fin, false, payload)
                    }
                    Frame::Close(n) => {
                        client_frame(8, true, false, CLOSES[usize::from(*n) % CLOSES.len()])
                    }
                    Frame::Ping => client_frame(9, true, false, b"p"),
                };
                if let Some(c) = self.conn(*conn).filter(|c| c.eof == Eof::No) {
                    c.clean &= c.upgrade && c.body_left.is_empty();
                    c.inbox.extend(bytes);
                }
            }
            Op::Bytes { conn, data } => {
                let c = self.open(*conn);
                if c.eof == Eof::No {
                    c.clean = false;
                    c.inbox.extend_from_slice(data);
                }
            }
            &Op::Eof(conn) => {
                if let Some(c) = self.conn(conn).filter(|c| c.eof == Eof::No) {
                    c.eof = Eof::Sent;
                }
            }
            &Op::Reset(conn) => {
                if let Some(c) = self.conn(conn) {
                    c.eof = Eof::Seen;
                    c.inbox.clear();
                    c.driver.on_io_error(&std::io::ErrorKind::ConnectionReset.into());
                }
            }
            &Op::Wake(conn) => {
                let now = self.now;
                if let Some(c) = self.conn(conn) {
                    if c.woken.swap(false, Ordering::SeqCst) {
                        c.driver.on_commands(now);
                    }
                }
            }
            &Op::Write { conn, max } => {
                if let Some(c) = self.conn(conn) {
                    write(c, usize::from(max));
                }
            }
            Op::Flush => self.flush(u),
            &Op::Tick(n) => {
                self.now += Duration::from_millis(u64::from(n) * 20);
                self.tick(u);
            }
            Op::App(op) => {
                self.app_op(op);
                self.app(u);
            }
        }
        self.settle(u);
    }

    /// The endpoint ticks, then every driver whose deadline came.
    fn tick(&mut self, u: &mut Unstructured<'_>) {
        let now = self.now;
        self.endpoint.on_tick(now);
        if let Some(at) = self.endpoint.deadline() {
            assert!(at > now, "the endpoint's deadline is {:?} in the past", now - at);
        }
        self.app(u);
        for c in self.conns.iter_mut().flatten() {
            if c.driver.deadline().is_some_and(|at| at <= now) {
                c.driver.on_tick(now);
            }
        }
    }

    /// Every woken connection applies its commands and writes all it has, until none is left
    /// with work.
    fn flush(&mut self, u: &mut Unstructured<'_>) {
        for _ in 0..16 {
            let mut busy = false;
            let now = self.now;
            for c in self.conns.iter_mut().flatten() {
                if c.woken.swap(false, Ordering::SeqCst) {
                    busy = true;
                    c.driver.on_commands(now);
                }
                while c.driver.wants_write() {
                    busy = true;
                    write(c, usize::MAX);
                }
            }
            self.settle(u);
            if !busy {
                return;
            }
        }
    }

    /// The backend reads what clients sent (while their drivers want it), the events are
    /// routed, and finished connections are dropped; then the checks of every step.
    fn settle(&mut self, u: &mut Unstructured<'_>) {
        let now = self.now;
        for c in self.conns.iter_mut().flatten() {
            if !c.driver.wants_read() {
                continue;
            }
            if !c.inbox.is_empty() {
                read_into(&mut c.driver, &std::mem::take(&mut c.inbox), now);
            }
            if c.eof == Eof::Sent && c.inbox.is_empty() && c.driver.wants_read() {
                c.eof = Eof::Seen;
                c.driver.on_eof();
            }
        }
        self.route(u);
        for slot in &mut self.conns {
            if slot.as_ref().is_some_and(|c| c.driver.is_finished()) {
                let mut c = slot.take().unwrap();
                // The backend applies what was queued last, then drops the connection.
                c.driver.on_commands(now);
                assert!(c.driver.is_finished() && c.driver.handle().is_closed());
            }
        }
        self.route(u);
        self.check_sessions();
    }

    /// Routes the drivers' events as the binding does: requests for the endpoint's path, and
    /// the events of its connections, to the endpoint; the rest to the plain application.
    fn route(&mut self, u: &mut Unstructured<'_>) {
        loop {
            let events =
                std::mem::take(&mut *self.sink.0.lock().unwrap_or_else(PoisonError::into_inner));
            if events.is_empty() {
                return;
            }
            for event in events {
                self.dispatch(event, u);
            }
        }
    }

    fn dispatch(&mut self, event: Event, u: &mut Unstructured<'_>) {
        let now = self.now;
        let owned = |h: &Self, id| !h.plain.contains_key(&id) && h.endpoint.owns(id);
        match event {
            Event::Connect(info) | Event::HttpRequest(info) => {
                let path = info.request.path();
                if path.starts_with(PREFIX) || path == PREFIX.trim_end_matches('/') {
                    self.endpoint.on_request(info, now);
                } else {
                    // The plain application: 404, or a WebSocket denied.
                    let handle = info.handle.clone();
                    if info.upgrade.is_some() {
                        handle.close(1000, String::new());
                    } else {
                        handle.respond(404, Vec::new());
                        let _ = handle.respond_body(Bytes::from_static(b"not here"), false);
                    }
                    self.plain.insert(info.id, handle);
                }
            }
            Event::Message { id, message } if owned(self, id) => {
                self.endpoint.on_message(id, message, now);
            }
            Event::HttpBody { id, body, more } if owned(self, id) => {
                self.endpoint.on_body(id, &body, more, now);
            }
            Event::Disconnect { id, .. } if owned(self, id) => self.endpoint.on_disconnect(id, now),
            Event::HttpBody { id, body, .. } => {
                if let Some(handle) = self.plain.get(&id) {
                    handle.message_taken(body.len());
                }
            }
            Event::Disconnect { id, .. } => {
                self.plain.remove(&id);
            }
            Event::Log { level: LogLevel::Error, message } => {
                panic!("a driver's panic guard caught a panic: {message}")
            }
            Event::Message { .. }
            | Event::Writable { .. }
            | Event::Refused(_)
            | Event::Log { .. } => {}
        }
        self.app(u);
    }

    /// What the application does with the endpoint's events (as the binding's `feed`: every
    /// event handled in order; what handlers' calls produce comes after).
    fn app(&mut self, u: &mut Unstructured<'_>) {
        loop {
            let mut events = Vec::new();
            self.endpoint.take_events(&mut events);
            if events.is_empty() {
                return;
            }
            let open: HashSet<String> = self
                .sids
                .iter()
                .filter(|(_, state)| **state == SidState::Open)
                .map(|(sid, _)| sid.clone())
                .collect();
            for event in events {
                self.app_event(event, &open, u);
            }
        }
    }

    /// The handler's reaction to an event (`stalled` once the application stopped answering).
    fn react<T: for<'a> Arbitrary<'a>>(
        &self,
        u: &mut Unstructured<'_>,
        stalled: T,
        default: T,
    ) -> Reaction<T> {
        if self.stalled {
            return Reaction { answer: stalled, then: None };
        }
        Reaction::arbitrary(u).unwrap_or(Reaction { answer: default, then: None })
    }

    /// Handles one event of a batch taken when the sessions `open` were open.
    fn app_event(&mut self, event: AppEvent, open: &HashSet<String>, u: &mut Unstructured<'_>) {
        let then = match event {
            AppEvent::Connect { sid, .. } => {
                let old = self.sids.insert(sid.clone(), SidState::Connecting);
                assert!(old.is_none(), "a second Connect for {sid} ({old:?})");
                self.known.push(sid.clone());
                let Reaction { answer, then } = self.react(u, OnConnect::Later, OnConnect::Accept);
                match answer {
                    OnConnect::Accept => self.connected(&sid, true),
                    OnConnect::Refuse => self.connected(&sid, false),
                    OnConnect::Later => self.unanswered.push(sid),
                }
                then
            }
            AppEvent::Message { sid, data } => {
                // The application may have closed the session while handling an earlier
                // event of the batch.
                let state = self.sids.get(&sid);
                let closed_since = state == Some(&SidState::Closed) && open.contains(&sid);
                assert!(
                    state == Some(&SidState::Open) || closed_since,
                    "a Message for session {sid} ({state:?})"
                );
                if let Payload::Text(text) = &data {
                    assert!(std::str::from_utf8(text).is_ok(), "a text message not UTF-8");
                }
                let Reaction { answer: later, then } = self.react(u, true, false);
                if later {
                    self.undone.push(sid);
                } else {
                    self.endpoint.done(&sid);
                }
                then
            }
            AppEvent::Disconnect { sid, reason } => {
                let state = self.sids.get_mut(&sid);
                assert!(
                    matches!(state, Some(SidState::Connecting | SidState::Open)),
                    "a Disconnect ({reason:?}) for session {sid} ({state:?})"
                );
                *state.unwrap() = SidState::Ended;
                None
            }
        };
        if let Some(op) = then {
            self.app_op(&op);
        }
    }

    fn connected(&mut self, sid: &str, accepted: bool) {
        self.endpoint.connected(sid, accepted, self.now);
        let state = self.sids.get_mut(sid).unwrap();
        if *state == SidState::Connecting {
            *state = if accepted { SidState::Open } else { SidState::Refused };
        }
    }

    fn state(&self, sid: &str) -> Option<SidState> {
        self.sids.get(sid).copied()
    }

    /// An operation of the application; the events it makes the endpoint produce are handled
    /// after the current batch (the binding runs them soon, not within the handler's call).
    fn app_op(&mut self, op: &AppOp) {
        let now = self.now;
        let message = |binary: bool, len: usize| {
            if binary {
                Outgoing::binary(Bytes::from(vec![0xb5; len]))
            } else {
                Outgoing::text(&"é".repeat(len / 2))
            }
        };
        match op {
            &AppOp::Connected { which, accepted } => {
                if !self.unanswered.is_empty() {
                    let sid = self.unanswered.remove(usize::from(which) % self.unanswered.len());
                    self.connected(&sid, accepted);
                }
            }
            &AppOp::Done(which) => {
                if !self.undone.is_empty() {
                    let sid = self.undone.remove(usize::from(which) % self.undone.len());
                    self.endpoint.done(&sid);
                }
            }
            AppOp::Send { to, binary, len } => {
                let sid = self.sid(to);
                let state = self.state(&sid);
                if self.endpoint.send(&sid, &message(*binary, usize::from(*len) % 1024), now) {
                    assert_eq!(state, Some(SidState::Open), "sent to session {sid}");
                }
            }
            AppOp::Broadcast { to, binary, len } => {
                let sids: Vec<String> = to.iter().map(|r| self.sid(r)).collect();
                let open = sids.iter().filter(|s| self.state(s) == Some(SidState::Open)).count();
                let sent = self.endpoint.broadcast(
                    sids.iter().map(String::as_str),
                    &message(*binary, usize::from(*len)),
                    now,
                );
                assert!(sent <= open, "broadcast to {sent} of {sids:?}, {open} open");
            }
            AppOp::Disconnect(to) => {
                let sid = self.sid(to);
                let state = self.state(&sid);
                if self.endpoint.disconnect(&sid, now) {
                    assert_eq!(state, Some(SidState::Open), "disconnected session {sid}");
                    self.sids.insert(sid, SidState::Closed);
                }
            }
        }
    }

    /// The endpoint's sessions are open exactly when the application thinks so.
    fn check_sessions(&self) {
        for (sid, state) in &self.sids {
            let open = self.endpoint.is_open(sid);
            assert_eq!(open, *state == SidState::Open, "session {sid}: {state:?}, open: {open}");
        }
    }

    /// The application answers every connect and is done with every message; the backend
    /// applies and writes everything.
    fn catch_up(&mut self, u: &mut Unstructured<'_>) {
        for _ in 0..64 {
            let idle = self.unanswered.is_empty() && self.undone.is_empty();
            for sid in std::mem::take(&mut self.unanswered) {
                self.connected(&sid, true);
                self.app(u);
            }
            for sid in std::mem::take(&mut self.undone) {
                self.endpoint.done(&sid);
                self.app(u);
            }
            let woken = self.conns.iter().flatten().any(|c| c.woken.load(Ordering::SeqCst));
            self.flush(u);
            if idle && !woken {
                return;
            }
        }
    }

    /// Lets time pass by `span`, to each deadline of the endpoint and the drivers in turn,
    /// with `each` run after every step; stops early when `done` says so.
    fn pass(
        &mut self,
        span: Duration,
        u: &mut Unstructured<'_>,
        each: fn(&mut Self, &mut Unstructured<'_>),
        done: fn(&Self) -> bool,
    ) {
        let end = self.now + span;
        for _ in 0..10_000 {
            each(self, u);
            if done(self) || self.now >= end {
                return;
            }
            let next = self
                .conns
                .iter()
                .flatten()
                .filter_map(|c| c.driver.deadline())
                .chain(self.endpoint.deadline())
                .min()
                .map_or(end, |at| at.clamp(self.now, end));
            self.now = next;
            self.tick(u);
            self.settle(u);
        }
        panic!("time never passed {span:?}");
    }

    /// Every request of a clean connection is answered, once, unless the connection is over.
    fn check_answers(&self, all: bool) {
        for c in self.conns.iter().flatten().filter(|c| c.clean) {
            let answers = responses(&c.written);
            assert!(answers <= c.requests, "{answers} answers to {} requests", c.requests);
            if all && c.eof == Eof::No && !c.driver.is_finished() {
                assert!(
                    answers >= c.complete(),
                    "{answers} answers to {} complete requests; {:?}",
                    c.complete(),
                    c.driver
                );
            }
        }
    }

    fn finish(&mut self, stall: bool, u: &mut Unstructured<'_>) {
        let cycle = self.session.ping_interval + self.session.ping_timeout;
        let linger = self.session.ping_timeout.max(Duration::from_secs(1));
        if stall {
            self.stalled = true;
        } else {
            // The application catches up; every request is answered within a heartbeat.
            self.catch_up(u);
            self.pass(cycle + Duration::from_millis(1), u, Self::catch_up, |_| false);
            self.check_answers(true);
        }
        // The clients leave; their drivers must finish.
        for c in self.conns.iter_mut().flatten() {
            if c.eof == Eof::No {
                c.eof = Eof::Sent;
            }
        }
        let close = 2 * (cycle + linger) + 4 * self.server.close_timeout;
        let span = close + self.server.handshake_timeout + self.server.timeout_keep_alive;
        self.pass(span, u, Self::flush, |h| h.conns.iter().all(Option::is_none));
        if let Some(c) = self.conns.iter().flatten().next() {
            panic!("a connection never ended after its client left: {:?}", c.driver);
        }
        // No session outlives its clients by more than a heartbeat and the linger.
        self.pass(cycle + linger + Duration::from_millis(1), u, Self::settle, |_| false);
        assert!(
            self.endpoint.is_empty(),
            "{} sessions left: {:?}",
            self.endpoint.len(),
            self.endpoint
        );
        for &id in &self.ids {
            assert!(!self.endpoint.owns(id), "the endpoint still holds connection {id}");
        }
    }
}

/// A write of at most `max` bytes of connection `c`, as a backend does it.
fn write(c: &mut Conn, max: usize) {
    write_from(&mut c.driver, &mut c.written, max);
}

/// The target.
pub fn run(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let Ok(setup) = Setup::arbitrary(&mut u) else { return };
    let mut harness = Harness::new(&setup);
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        harness.apply(&op, &mut u);
        harness.check_answers(false);
    }
    harness.finish(setup.stall, &mut u);
}
