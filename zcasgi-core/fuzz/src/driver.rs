//! Fuzz the per-connection driver (`zcasgi_core::driver::Driver`) as a backend and an
//! application use it: random interleavings of client bytes (arbitrary, or well-formed
//! requests, bodies and frames), application operations through the typed `ConnHandle`
//! (`accept`, `send`, `close`, `respond`, `respond_body`, `abort`, `message_taken`,
//! `receive_waiting`), wake-ups
//! (`on_commands`), time passing (`on_tick` at the deadline), partial writes (`on_written`),
//! end of stream, socket errors and server shutdown, under small arbitrary limits. As worker 1
//! of 3, Engine.IO requests of every worker's sessions are routed: hand-offs the backend
//! makes, finds the owner's inbox full for, or fails.
//!
//! The harness keeps the backend's side of the contract (it reads only while the driver
//! wants to, through the driver's own buffer when it has one; writes only what `io_slices`
//! gave; stops once the driver is finished) and the application's (`message_taken` with its
//! size once per delivered message, `receive_waiting` only with nothing left to take; only
//! synthetic payloads and headers). After every step it checks:
//! - no panic, and no `Error` log: the driver catches panics and reports them that way;
//! - `queued_bytes` never exceeds what the application queued (it never wraps);
//! - a finished driver wants neither read nor write, its handle is closed, and its
//!   `queued_bytes` is 0;
//! - nothing reaches the application after its disconnect, and there is at most one;
//! - when the driver wants to write, it has bytes to write;
//! - once the WebSocket is open, the bytes written are well-formed server frames (unmasked,
//!   control frames whole and short) and nothing follows a close frame.
//!
//! At the end the application returns (`abort`, as the bridge does for an unfinished
//! response), the client leaves and time passes: the driver must finish, with every accounted
//! byte released and the WebSocket's disconnect delivered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use zcasgi_core::backend::{
    ConnHandle, Event, EventSink, LogLevel, Notify, SendState, ServerConfig,
};
use zcasgi_core::deflate::{Deflate, DeflateParams};
use zcasgi_core::driver::Driver;
use zcasgi_core::frame::{decode_header, OpCode};
use zcasgi_core::sticky::WorkerSlot;

use super::common::{client_frame, read_into, wall, write_from};

#[derive(Debug, Arbitrary)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    deflate: bool,
    max_message: u8,
    max_queue: u8,
    high_water: u8,
    pings: bool,
    max_body: u8,
    small_heads: bool,
    wall: u64,
    /// Odd: worker 1 of 3, whose Engine.IO requests are routed.
    worker: u8,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Arbitrary client bytes.
    Bytes(Vec<u8>),
    /// A well-formed request head.
    Request(Request),
    /// Body bytes.
    Body(u8),
    /// A chunk of a chunked body (0: the last chunk and the end of the body).
    Chunk(u8),
    /// A masked client frame.
    Frame {
        opcode: u8,
        fin: bool,
        rsv1: bool,
        len: u8,
        compressed: bool,
    },
    Eof,
    IoError,
    Accept(bool),
    Send {
        text: bool,
        len: u16,
    },
    Close {
        code: u16,
        reason: u8,
    },
    Respond {
        status: u16,
        headers: Vec<AppHeader>,
    },
    RespondBody {
        len: u16,
        more: bool,
    },
    Abort,
    MessageTaken,
    /// The application waits in `receive()` with nothing left to take.
    ReceiveWaiting,
    Commands,
    Tick(u16),
    Write(u16),
    WriteAll,
    Shutdown,
    /// The hand-off the driver waits for, if any, as the backend makes it: sent (0), the
    /// owner's inbox full (1), or failed (2).
    HandOff(u8),
}

#[derive(Debug, Arbitrary)]
enum Request {
    Upgrade {
        deflate: bool,
        protocol: bool,
    },
    Get {
        close: bool,
    },
    Head,
    Post(u8),
    Chunked,
    Expect(u8),
    Http10,
    /// An Engine.IO request: a handshake (0), a session of worker 0..=3 (1..=4; worker 3 does
    /// not exist), an untagged session (5); a WebSocket upgrade if `upgrade`.
    Engineio {
        session: u8,
        upgrade: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum AppHeader {
    Length(u16),
    Close,
    Other(u8),
}

#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn push(&self, event: Event) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }
}

struct NoWake;

impl Notify for NoWake {
    fn notify(&self) {}
}

const UPGRADE: &str =
    "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
/// Close frame payloads: valid codes, a code that may not be sent, a reason, and none.
const CLOSES: [&[u8]; 6] =
    [b"\x03\xe8", b"\x03\xe9bye", b"\x0b\xb8", b"\x03\xed", b"\x03\xe7", b""];
/// What the 101 response (and only it) contains: the WebSocket frames follow its head.
const ACCEPT_LINE: &[u8] = b"\r\nSec-WebSocket-Accept: ";

fn config(s: &Setup) -> ServerConfig {
    let high_water = usize::from(s.high_water) * 8;
    let (max_headers, max_header_bytes) = if s.small_heads { (8, 512) } else { (100, 16 * 1024) };
    ServerConfig {
        ws_max_size: usize::from(s.max_message) * 16,
        ws_max_queue: usize::from(s.max_queue % 4) + 1,
        // Below ws_max_size: messages over the byte budget, and pauses by bytes, happen.
        ws_max_queue_bytes: usize::from(s.max_message) * 8 + 1,
        ws_ping_interval: s.pings.then_some(Duration::from_secs(1)),
        ws_ping_timeout: Some(Duration::from_secs(1)),
        ws_per_message_deflate: s.deflate,
        ws_write_high_water: high_water,
        ws_write_low_water: high_water / 2,
        handshake_timeout: Duration::from_secs(3),
        timeout_keep_alive: Duration::from_secs(2),
        http_max_body_size: u64::from(s.max_body) * 4,
        close_timeout: Duration::from_secs(2),
        max_headers,
        max_header_bytes,
        ..ServerConfig::default()
    }
}

fn request(r: &Request) -> String {
    match r {
        Request::Upgrade { deflate, protocol } => {
            let mut head = UPGRADE.to_owned();
            if *deflate {
                head.push_str(
                    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                );
            }
            if *protocol {
                head.push_str("Sec-WebSocket-Protocol: chat, superchat\r\n");
            }
            head + "\r\n"
        }
        Request::Get { close: false } => "GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n".into(),
        Request::Get { close: true } => {
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into()
        }
        Request::Head => "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
        Request::Post(n) => {
            let body = "b".repeat(usize::from(*n));
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n{body}")
        }
        Request::Chunked => {
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".into()
        }
        Request::Expect(n) => {
            format!(
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {n}\r\n\r\n"
            )
        }
        Request::Http10 => "GET / HTTP/1.0\r\n\r\n".into(),
        &Request::Engineio { session, upgrade } => {
            let sid = match session % 6 {
                0 => String::new(),
                5 => "&sid=untagged".to_owned(),
                n => format!("&sid=abc.{}", n - 1),
            };
            let transport = if upgrade { "websocket" } else { "polling" };
            let target = format!("/socket.io/?EIO=4&transport={transport}{sid}");
            if upgrade {
                UPGRADE.replacen("/ws", &target, 1) + "\r\n"
            } else {
                format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n")
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Harness {
    driver: Driver,
    sink: Arc<Sink>,
    /// The connection's handle, for the checks.
    handle: ConnHandle,
    /// The application's handle, once a request was announced to it.
    app: Option<ConnHandle>,
    now: Instant,
    /// Every byte written to the client.
    written: Vec<u8>,
    /// Accounted bytes the application queued.
    sent: usize,
    /// Messages and body pieces delivered and not yet taken.
    untaken: VecDeque<usize>,
    eof: bool,
    shut_down: bool,
    /// A WebSocket was announced (`Connect`).
    websocket: bool,
    /// Disconnects since the last announcement.
    disconnects: usize,
    client: Deflate,
}

impl Harness {
    fn new(setup: &Setup) -> Self {
        let sink = Arc::new(Sink::default());
        let now = Instant::now();
        let mut driver = Driver::new(
            1,
            Arc::new(config(setup)),
            sink.clone(),
            Box::new(NoWake),
            None,
            None,
            now,
            wall(setup.wall),
        );
        if setup.worker % 2 == 1 {
            driver.set_worker(WorkerSlot { index: 1, count: 3 });
        }
        let handle = driver.handle().clone();
        Self {
            driver,
            sink,
            handle,
            app: None,
            now,
            written: Vec::new(),
            sent: 0,
            untaken: VecDeque::new(),
            eof: false,
            shut_down: false,
            websocket: false,
            disconnects: 0,
            client: Deflate::new(DeflateParams::default()),
        }
    }

    /// A read of `data`, as a backend does it, if the driver wants to read.
    fn read(&mut self, data: &[u8]) {
        if self.eof || data.is_empty() || !self.driver.wants_read() {
            return;
        }
        read_into(&mut self.driver, data, self.now);
    }

    /// A write of at most `max` bytes, as a backend does it, if the driver wants to write.
    fn write(&mut self, max: usize) {
        write_from(&mut self.driver, &mut self.written, max);
    }

    fn frame(&mut self, opcode: u8, fin: bool, rsv1: bool, len: u8, compressed: bool) {
        let opcode = [0, 1, 2, 8, 9, 10, 3][usize::from(opcode % 7)];
        let mut payload: Bytes = if opcode == 8 {
            Bytes::from_static(CLOSES[usize::from(len) % CLOSES.len()])
        } else {
            Bytes::from(vec![b'a' + len % 26; usize::from(len)])
        };
        if compressed && opcode < 8 {
            payload = self.client.compress(&payload);
        }
        let rsv1 = rsv1 || (compressed && opcode < 8);
        self.read(&client_frame(opcode, fin, rsv1, &payload));
    }

    fn tick(&mut self, ms: u16) {
        self.now += Duration::from_millis(u64::from(ms));
        if self.driver.deadline().is_some_and(|at| self.now >= at) {
            self.driver.on_tick(self.now);
        }
    }

    fn accounted(&mut self, len: usize, state: SendState) {
        if state == SendState::Closed {
            assert!(self.handle.is_closed());
        } else {
            self.sent += len;
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Bytes(data) => self.read(data),
            Op::Request(r) => self.read(request(r).as_bytes()),
            Op::Body(n) => self.read(&vec![b'b'; usize::from(*n)]),
            Op::Chunk(0) => self.read(b"0\r\n\r\n"),
            Op::Chunk(n) => {
                let mut chunk = format!("{n:x}\r\n").into_bytes();
                chunk.extend(std::iter::repeat_n(b'c', usize::from(*n)));
                chunk.extend_from_slice(b"\r\n");
                self.read(&chunk);
            }
            &Op::Frame { opcode, fin, rsv1, len, compressed } => {
                self.frame(opcode, fin, rsv1, len, compressed);
            }
            Op::Eof => {
                if !self.eof && self.driver.wants_read() {
                    self.eof = true;
                    self.driver.on_eof();
                }
            }
            Op::IoError => {
                self.driver.on_io_error(&std::io::ErrorKind::ConnectionReset.into());
            }
            Op::Commands => self.driver.on_commands(self.now),
            Op::Tick(ms) => self.tick(*ms),
            Op::Write(n) => self.write(usize::from(*n)),
            Op::WriteAll => {
                while self.driver.wants_write() {
                    self.write(usize::MAX);
                }
            }
            Op::Shutdown => {
                if !self.shut_down {
                    self.shut_down = true;
                    self.driver.on_shutdown(self.now);
                }
            }
            Op::HandOff(outcome) => {
                if self.driver.handoff().is_some() {
                    let result = match outcome % 3 {
                        0 => Ok(()),
                        1 => Err(std::io::ErrorKind::WouldBlock.into()),
                        _ => Err(std::io::ErrorKind::BrokenPipe.into()),
                    };
                    self.driver.on_handoff(result, self.now);
                    if self.driver.is_handed_off() {
                        assert!(self.driver.is_finished(), "handed off but not finished");
                    }
                }
            }
            _ => self.app_op(op),
        }
    }

    /// An operation of the application, once it has the handle.
    fn app_op(&mut self, op: &Op) {
        let Some(h) = self.app.clone() else { return };
        match op {
            Op::Accept(protocol) => {
                h.accept(
                    protocol.then(|| "chat".to_owned()),
                    vec![(b"x-app".to_vec(), b"1".to_vec())],
                );
            }
            &Op::Send { text, len } => {
                let state = h.send(text, Bytes::from(vec![b's'; usize::from(len)]));
                self.accounted(usize::from(len), state);
            }
            &Op::Close { code, reason } => h.close(code, "r".repeat(usize::from(reason))),
            Op::Respond { status, headers } => {
                let headers = headers
                    .iter()
                    .map(|a| match a {
                        AppHeader::Length(n) => {
                            (b"content-length".to_vec(), n.to_string().into_bytes())
                        }
                        AppHeader::Close => (b"connection".to_vec(), b"close".to_vec()),
                        AppHeader::Other(n) => (format!("x-h{n}").into_bytes(), b"v".to_vec()),
                    })
                    .collect();
                h.respond(100 + status % 500, headers);
            }
            &Op::RespondBody { len, more } => {
                let state = h.respond_body(Bytes::from(vec![b'r'; usize::from(len)]), more);
                self.accounted(usize::from(len), state);
            }
            Op::Abort => h.abort(),
            Op::MessageTaken => {
                if let Some(len) = self.untaken.pop_front() {
                    h.message_taken(len);
                }
            }
            Op::ReceiveWaiting => {
                if self.untaken.is_empty() {
                    h.receive_waiting();
                }
            }
            _ => unreachable!("not an operation of the application: {op:?}"),
        }
    }

    /// Takes the events the driver pushed and checks them.
    fn events(&mut self) {
        let events = std::mem::take(
            &mut *self.sink.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for event in events {
            match event {
                Event::Log { level: LogLevel::Error, message } => {
                    panic!("the driver's panic guard caught a panic: {message}")
                }
                Event::Log { .. } | Event::Writable { .. } => {}
                Event::Refused(refusal) => {
                    assert!((400..600).contains(&refusal.status), "{refusal:?}");
                }
                Event::Connect(info) | Event::HttpRequest(info) => {
                    assert_eq!(info.id, 1);
                    self.app = Some(info.handle.clone());
                    self.websocket |= info.upgrade.is_some();
                    self.disconnects = 0;
                }
                Event::Message { message, .. } => {
                    assert_eq!(self.disconnects, 0, "an event after the disconnect");
                    self.untaken.push_back(message.len());
                }
                Event::HttpBody { body, .. } => {
                    assert_eq!(self.disconnects, 0, "an event after the disconnect");
                    self.untaken.push_back(body.len());
                }
                Event::Disconnect { .. } => {
                    self.disconnects += 1;
                    assert_eq!(self.disconnects, 1, "a second disconnect");
                }
            }
        }
    }

    fn check(&mut self) {
        self.events();
        let queued = self.handle.queued_bytes();
        assert!(queued <= self.sent, "queued_bytes {queued} > {} queued in all", self.sent);
        if self.driver.is_finished() {
            // The backend applies what the application queued last, then drops the driver.
            self.driver.on_commands(self.now);
            self.events();
            let queued = self.handle.queued_bytes();
            assert_eq!(queued, 0, "accounted bytes left on a finished connection");
            assert!(!self.driver.wants_read() && !self.driver.wants_write());
            assert!(self.handle.is_closed(), "a finished connection's handle is open");
        }
        self.check_frames();
    }

    /// Checks the WebSocket frames written after the 101 response.
    fn check_frames(&self) {
        let Some(at) = find(&self.written, ACCEPT_LINE) else { return };
        let Some(end) = find(&self.written[at..], b"\r\n\r\n") else { return };
        let mut rest = &self.written[at + end + 4..];
        let mut closed = false;
        while !rest.is_empty() {
            assert!(!closed, "{} bytes written after the close frame", rest.len());
            let header = decode_header(rest).expect("a valid frame header");
            let Some((header, n)) = header else { return };
            assert!(header.mask.is_none(), "a masked server frame");
            let Some(len) =
                usize::try_from(header.payload_len).ok().filter(|l| rest.len() >= n + l)
            else {
                return;
            };
            if header.opcode.is_control() {
                assert!(header.fin && len <= 125, "{header:?}");
            }
            closed = header.opcode == OpCode::Close;
            rest = &rest[n + len..];
        }
    }

    /// The application returns, the client leaves, time passes: the driver must finish.
    fn finish(&mut self) {
        if let Some(app) = self.app.as_ref().filter(|_| !self.driver.is_finished()) {
            app.abort();
            self.driver.on_commands(self.now);
            self.check();
        }
        if !self.eof && !self.driver.is_finished() {
            self.eof = true;
            self.driver.on_eof();
            self.check();
        }
        for _ in 0..64 {
            while self.driver.wants_write() {
                self.write(usize::MAX);
            }
            self.check();
            if self.driver.is_finished() {
                break;
            }
            let at = self.driver.deadline().map_or(self.now, |at| at.max(self.now));
            self.now = at + Duration::from_millis(1);
            self.driver.on_tick(self.now);
            self.check();
        }
        assert!(self.driver.is_finished(), "the driver never finished: {:?}", self.driver);
        if self.websocket {
            assert_eq!(self.disconnects, 1, "the WebSocket's disconnect was not delivered");
        }
    }
}

/// The target.
pub fn run(input: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(input)) else { return };
    let mut harness = Harness::new(&input.setup);
    for op in &input.ops {
        if harness.driver.is_finished() {
            break;
        }
        harness.apply(op);
        harness.check();
    }
    harness.finish();
}
