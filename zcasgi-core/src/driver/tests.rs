//! The driver as the backends see it: bytes, commands and ticks in; events and bytes out.

use super::*;
use crate::backend::SendState;
use crate::config::LogConfig;
use crate::deflate::{Deflate, DeflateParams};
use crate::frame::{apply_mask_bytes, FrameHeader, HeaderBytes, OpCode};
use crate::protocol::Message;
use crate::sticky::WorkerSlot;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

/// The wall-clock time of the accept: 1994-11-06T08:49:37Z.
fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(784_111_777)
}

/// The default headers of a response written at `wall()`.
const DEFAULTS: &str = "date: Sun, 06 Nov 1994 08:49:37 GMT\r\nserver: zcasgi\r\n";

#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn push(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Sink {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[derive(Default)]
struct CountNotify(Arc<AtomicUsize>);

impl Notify for CountNotify {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const REQUEST: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";

fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let h = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::from(opcode),
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut out = HeaderBytes::new(&h).as_slice().to_vec();
    let mut p = payload.to_vec();
    apply_mask_bytes(&mut p, key, 0);
    out.extend(p);
    out
}

fn setup(cfg: ServerConfig) -> (Driver, Arc<Sink>, Arc<AtomicUsize>, Instant) {
    let sink = Arc::new(Sink::default());
    let count = Arc::new(AtomicUsize::new(0));
    let now = Instant::now();
    let d = Driver::new(
        7,
        Arc::new(cfg),
        sink.clone(),
        Box::new(CountNotify(count.clone())),
        None,
        None,
        now,
        wall(),
    );
    (d, sink, count, now)
}

fn read(d: &mut Driver, bytes: &[u8], now: Instant) {
    d.on_read(&mut BytesMut::from(bytes), now);
}

fn output(d: &mut Driver) -> Vec<u8> {
    let mut all = Vec::new();
    while d.wants_write() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = d.io_slices(&mut slices);
        let chunk: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        d.on_written(chunk.len());
        all.extend(chunk);
    }
    all
}

fn connect(d: &mut Driver, sink: &Sink, now: Instant) -> ConnHandle {
    for chunk in REQUEST.chunks(10) {
        read(d, chunk, now);
    }
    let events = sink.take();
    let [Event::Connect(info)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(info.request.path(), "/chat");
    assert_eq!(info.upgrade.as_ref().unwrap().subprotocols, ["chat"]);
    info.handle.clone()
}

/// Connects and accepts: the WebSocket is open and the 101 written.
fn open(d: &mut Driver, sink: &Sink, now: Instant) -> ConnHandle {
    let h = connect(d, sink, now);
    h.accept(None, vec![]);
    d.on_commands(now);
    output(d);
    h
}

#[test]
fn accept_echo_and_client_close() {
    let (mut d, sink, notified, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    // A frame sent before the accept waits for it.
    read(&mut d, &client_frame(1, b"early"), now);
    assert!(sink.take().is_empty());
    h.accept(Some("chat".into()), vec![]);
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    d.on_commands(now);
    let head = String::from_utf8(output(&mut d)).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: chat\r\n"));
    let events = sink.take();
    assert!(
        matches!(&events[..], [Event::Message { id: 7, message: Message::Text(t) }] if t == "early")
    );
    h.message_taken(5);
    assert_eq!(h.send(false, Bytes::from_static(b"pong")), SendState::Ready);
    d.on_commands(now);
    assert_eq!(output(&mut d), [0x82, 4, b'p', b'o', b'n', b'g']);
    assert_eq!(h.queued_bytes(), 0);
    read(&mut d, &client_frame(8, &[0x03, 0xe9]), now);
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xe9]);
    let events = sink.take();
    assert!(matches!(&events[..], [Event::Disconnect { id: 7, code: 1001, .. }]), "{events:?}");
    assert!(d.is_finished());
    // The client's close frame ended it: it sends nothing more, no linger needed.
    assert!(d.is_closed_by_client());
    assert_eq!(h.send(true, Bytes::new()), SendState::Closed);
}

#[test]
fn close_before_accept_is_403() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.close(1000, String::new());
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
    assert!(d.is_finished());
    assert!(matches!(&sink.take()[..], [Event::Disconnect { code: 1006, .. }]));
}

#[test]
fn denial_response_streams_chunked_or_with_length() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.respond(401, vec![]);
    let _ = h.respond_body(Bytes::from_static(b"no"), true);
    let _ = h.respond_body(Bytes::from_static(b"pe"), false);
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\n2\r\nno\r\n2\r\npe\r\n0\r\n\r\n"), "{out}");
    assert!(d.is_finished());

    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.respond(418, vec![(b"content-length".to_vec(), b"3".to_vec())]);
    let _ = h.respond_body(Bytes::from_static(b"tea"), false);
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.contains("content-length: 3\r\n") && out.ends_with("\r\n\r\ntea"), "{out}");
    assert_eq!(h.queued_bytes(), 0);
}

/// Every byte of a denial body is counted when the application sends it and released when
/// written (or dropped), so `queued_bytes` returns to 0. The bridge used to queue denial
/// bodies without counting them, and their release wrapped the counter around.
#[test]
fn denial_body_is_accounted_and_released() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.respond(401, vec![(b"content-length".to_vec(), b"11".to_vec())]);
    assert_eq!(h.respond_body(Bytes::from_static(b"go "), true), SendState::Ready);
    assert_eq!(h.respond_body(Bytes::from_static(b"away\r\n\r\n"), false), SendState::Ready);
    assert_eq!(h.queued_bytes(), 11);
    d.on_commands(now);
    assert_eq!(h.queued_bytes(), 11, "held until written");
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.ends_with("\r\n\r\ngo away\r\n\r\n"), "{out:?}");
    assert_eq!(h.queued_bytes(), 0);
    assert!(d.is_finished());
    let events = sink.take();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Log { level: LogLevel::Error, .. })),
        "{events:?}"
    );

    // A socket error drops the unwritten body: its bytes are released too.
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.respond(401, vec![]);
    let _ = h.respond_body(Bytes::from(vec![b'x'; 100]), false);
    d.on_commands(now);
    d.on_io_error(&std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(h.queued_bytes(), 0);
    assert!(d.is_finished());
}

/// The core writes `date` and `server` into every response: denials, its own rejections and
/// the 101 included; the application's own `server` wins, and is not doubled.
#[test]
fn every_response_carries_date_and_server() {
    // A denial, a second after the accept.
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.respond(401, vec![]);
    let _ = h.respond_body(Bytes::from_static(b"no"), false);
    d.on_commands(now + Duration::from_secs(1));
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(
        out.starts_with(
            "HTTP/1.1 401 Unauthorized\r\ndate: Sun, 06 Nov 1994 08:49:38 GMT\r\nserver: zcasgi\r\n"
        ),
        "{out}"
    );
    // A rejection of the core's own.
    let (mut d, _, _, now) = setup(ServerConfig::default());
    read(&mut d, b"BAD\x01 / HTTP/1.1\r\n\r\n", now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with(&format!("HTTP/1.1 400 Bad Request\r\n{DEFAULTS}")), "{out}");
    // The 101, with the application's server header.
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    h.accept(None, vec![(b"Server".to_vec(), b"app/1".to_vec())]);
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{out}");
    assert!(out.contains("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), "{out}");
    assert!(out.contains("Server: app/1\r\n"), "{out}");
    assert_eq!(out.to_ascii_lowercase().matches("server:").count(), 1, "{out}");
    // An HTTP response with the application's own server header.
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    h.respond(200, vec![(b"server".to_vec(), b"app/1".to_vec())]);
    let _ = h.respond_body(Bytes::new(), false);
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.contains("server: app/1\r\n") && out.contains("date: "), "{out}");
    assert_eq!(out.matches("server:").count(), 1, "{out}");
}

/// Requests the core refuses on its own get their status, with its reason phrase.
#[test]
fn bad_requests_get_statuses() {
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"[..], "426 Upgrade Required"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", "413 Payload Too Large"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "501 Not Implemented"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n", "417 Expectation Failed"),
        (b"BAD\x01 / HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400 Bad Request"),
        // RFC 9112 §3.2: no Host in HTTP/1.1, for a plain request and an upgrade alike.
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "400 Bad Request"),
        (b"GET http://evil/x HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"GET http://user@evil/x HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"),
    ] {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        read(&mut d, req, now);
        let out = String::from_utf8(output(&mut d)).unwrap();
        assert!(out.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{out}");
        assert!(d.is_finished());
        assert!(sink.take().iter().all(|e| matches!(e, Event::Log { .. })));
    }
}

/// RFC 9112 §3.2.2: the application sees the path of an absolute-form target, never the URI,
/// and the target's authority as `host`.
#[test]
fn absolute_form_reaches_the_app_as_a_path() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    read(&mut d, b"GET http://evil/x?y=1 HTTP/1.1\r\nHost: good\r\n\r\n", now);
    let events = sink.take();
    let Some(Event::HttpRequest(info)) = events.first() else { panic!("{events:?}") };
    assert_eq!(info.request.path(), "/x");
    assert_eq!(info.request.query_string, b"y=1");
    assert_eq!(info.request.header(b"host"), Some(&b"evil"[..]));
}

#[test]
fn handshake_timeout() {
    let (mut d, _sink, _, now) = setup(ServerConfig {
        handshake_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    });
    read(&mut d, b"GET / HTTP/1.1\r\nHost: x\r\n", now);
    assert_eq!(d.deadline(), Some(now + Duration::from_millis(100)));
    d.on_tick(now + Duration::from_millis(100));
    assert!(String::from_utf8(output(&mut d)).unwrap().starts_with("HTTP/1.1 408 "));
    assert!(d.is_finished());
}

#[test]
fn awaited_bytes_only_while_a_frame_is_read() {
    let (mut d, sink, _, now) = setup(ServerConfig { ws_max_queue: 1, ..ServerConfig::default() });
    assert_eq!(d.awaited_bytes(), 0, "a request head awaits no known length");
    let h = open(&mut d, &sink, now);
    let frame = client_frame(2, &vec![5; 100_000]);
    read(&mut d, &frame[..1000], now);
    assert_eq!(d.awaited_bytes(), frame.len() - 1000);
    read(&mut d, &frame[1000..], now);
    assert_eq!(d.awaited_bytes(), 0);
    // The application holds `ws_max_queue` messages: reading pauses, and nothing is awaited
    // even with the next frame begun.
    let next = client_frame(2, &vec![6; 100_000]);
    read(&mut d, &next[..1000], now);
    assert!(!d.wants_read());
    assert_eq!(d.awaited_bytes(), 0);
    // Taken: woken, the driver parses what it held back, and awaits the rest of that frame.
    h.message_taken(100_000);
    d.on_commands(now);
    assert!(d.wants_read());
    assert_eq!(d.awaited_bytes(), next.len() - 1000);
}

#[test]
fn back_pressure_both_ways() {
    let (mut d, sink, notified, now) = setup(ServerConfig {
        ws_max_queue: 2,
        ws_write_high_water: 10,
        ws_write_low_water: 4,
        ..ServerConfig::default()
    });
    let h = open(&mut d, &sink, now);
    // Inbound: the second undelivered message pauses reading; taking one resumes it.
    let mut two = client_frame(2, b"a");
    two.extend(client_frame(2, b"b"));
    read(&mut d, &two, now);
    assert!(!d.wants_read());
    let before = notified.load(Ordering::SeqCst);
    h.message_taken(1);
    assert_eq!(notified.load(Ordering::SeqCst), before + 1);
    assert!(d.wants_read());
    // Outbound: above the high-water mark the sender must wait for Writable.
    assert_eq!(h.send(false, Bytes::from_static(b"12345678")), SendState::Ready);
    assert_eq!(h.send(false, Bytes::from_static(b"12345678")), SendState::Full);
    assert!(h.wait_writable());
    d.on_commands(now);
    sink.take();
    output(&mut d);
    assert!(matches!(&sink.take()[..], [Event::Writable { id: 7 }]));
    assert!(!h.wait_writable(), "drained: nothing to wait for");
}

/// A frame of `payload` compressed (permessage-deflate, RSV1), as a client sends it.
fn compressed_frame(payload: &[u8]) -> Vec<u8> {
    let params = DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() };
    let compressed = Deflate::new(params).compress(payload);
    let mut frame = client_frame(2, &compressed);
    frame[0] |= 0b0100_0000; // RSV1: compressed (RFC 7692 §6)
    frame
}

/// The sizes of the messages among `events`.
fn message_sizes(events: &[Event]) -> Vec<usize> {
    let size = |e: &Event| match e {
        Event::Message { message: Message::Binary(b) | Message::Text(b), .. } => Some(b.len()),
        _ => None,
    };
    events.iter().filter_map(size).collect()
}

/// Issue 10 item 2: with permessage-deflate, frames of a few KiB on the wire inflate to mebibytes.
/// Inflated bytes the application has not taken count against `ws_max_queue_bytes`: parsing
/// stops (even inside one read) and reading pauses once they reach it, so at most the budget
/// plus one message waits, however many messages `ws_max_queue` would allow. Taking messages
/// resumes parsing from what was already read, and every message arrives, in order.
#[test]
fn inflated_messages_pause_reading_at_the_byte_budget() {
    const MESSAGE: usize = 4 << 20;
    const FRAMES: usize = 20;
    let budget = 6 << 20;
    let cfg = ServerConfig {
        ws_per_message_deflate: true,
        ws_max_queue_bytes: budget,
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg);
    let request = String::from_utf8(REQUEST.to_vec())
        .unwrap()
        .replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
    read(&mut d, request.as_bytes(), now);
    let events = sink.take();
    let [Event::Connect(info)] = &events[..] else { panic!("{events:?}") };
    let h = info.handle.clone();
    h.accept(None, vec![]);
    d.on_commands(now);
    let head = String::from_utf8(output(&mut d)).unwrap();
    assert!(head.contains("permessage-deflate"), "{head}");
    let mut wire = Vec::new();
    for i in 0..FRAMES {
        let mut payload = vec![0; MESSAGE];
        payload[0] = i as u8;
        wire.extend(compressed_frame(&payload));
    }
    assert!(wire.len() < FRAMES * 16 * 1024, "{} bytes on the wire", wire.len());
    read(&mut d, &wire, now);
    let (mut buffered, mut delivered) = (0, Vec::new());
    loop {
        let events = sink.take();
        for e in &events {
            if let Event::Message { message: Message::Binary(b), .. } = e {
                delivered.push(b[0]);
            }
        }
        buffered += message_sizes(&events).iter().sum::<usize>();
        assert!(buffered <= budget + MESSAGE, "{buffered} bytes wait for the application");
        if delivered.len() == FRAMES {
            break;
        }
        assert!(buffered >= budget, "paused early: {buffered} bytes");
        assert!(!d.wants_read(), "reading goes on at {buffered} bytes");
        h.message_taken(MESSAGE);
        buffered -= MESSAGE;
        d.on_commands(now); // the backend's wake-up after message_taken
    }
    assert_eq!(delivered, (0..FRAMES).map(|i| i as u8).collect::<Vec<_>>());
}

/// A message larger than the whole budget still gets through, alone.
#[test]
fn a_message_over_the_byte_budget_is_delivered_alone() {
    let (mut d, sink, _, now) =
        setup(ServerConfig { ws_max_queue_bytes: 10, ..ServerConfig::default() });
    let h = open(&mut d, &sink, now);
    let mut wire = client_frame(2, &[1; 100]);
    wire.extend(client_frame(2, &[2; 100]));
    read(&mut d, &wire, now);
    assert_eq!(message_sizes(&sink.take()), [100]);
    assert!(!d.wants_read());
    h.message_taken(100);
    d.on_commands(now);
    assert_eq!(message_sizes(&sink.take()), [100]);
}

/// A connection that closes does not wait for room: the client's close frame, held back
/// behind messages the application had no room for, is still read (no `close_timeout`).
#[test]
fn closing_parses_what_was_held_back() {
    for shutdown in [false, true] {
        let (mut d, sink, _, now) =
            setup(ServerConfig { ws_max_queue: 1, ..ServerConfig::default() });
        let h = open(&mut d, &sink, now);
        let mut wire = Vec::new();
        for text in [&b"a"[..], b"b", b"c"] {
            wire.extend(client_frame(1, text));
        }
        wire.extend(client_frame(8, &[0x03, 0xe8]));
        read(&mut d, &wire, now);
        assert_eq!(message_sizes(&sink.take()), [1], "one message, then no room");
        assert!(!d.wants_read());
        if shutdown {
            d.on_shutdown(now);
        } else {
            h.close(1000, String::new());
            d.on_commands(now);
        }
        assert_eq!(output(&mut d), [0x88, 2, 0x03, if shutdown { 0xf4 } else { 0xe8 }]);
        assert!(d.is_finished(), "the client's close frame was read (shutdown: {shutdown})");
        let events = sink.take();
        assert!(message_sizes(&events).is_empty(), "{events:?}");
        assert_eq!(disconnects(&events), [if shutdown { 1012 } else { 1000 }], "{events:?}");
    }
}

/// HTTP request body pieces count against the byte budget too.
#[test]
fn http_body_pieces_pause_reading_at_the_byte_budget() {
    let (mut d, sink, _, now) =
        setup(ServerConfig { ws_max_queue_bytes: 4, ..ServerConfig::default() });
    let (h, events) = http_request(
        &mut d,
        &sink,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n3\r\nghi\r\n0\r\n\r\n",
        now,
    );
    assert_eq!(body_of(&events), (b"abcdef".to_vec(), false), "6 bytes reach the budget of 4");
    assert!(!d.wants_read());
    h.message_taken(3);
    d.on_commands(now);
    assert_eq!(body_of(&sink.take()), (b"ghi".to_vec(), false));
}

/// On shutdown the application learns of the close (1012) at once, as uvicorn tells it, while
/// the transport still waits for the client's close frame.
#[test]
fn shutdown_sends_1012_and_waits_for_the_peer() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = open(&mut d, &sink, now);
    d.on_shutdown(now);
    assert!(matches!(&sink.take()[..], [Event::Disconnect { code: 1012, .. }]));
    assert_eq!(h.send(true, Bytes::from_static(b"late")), SendState::Closed);
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xf4]);
    assert!(!d.is_finished(), "waits for the client's close frame");
    read(&mut d, &client_frame(8, &[0x03, 0xf4]), now);
    assert!(d.is_finished());
    assert!(sink.take().is_empty(), "one disconnect only");
}

/// A client that never answers the shutdown close frame: the application has had its
/// disconnect from the start; the transport gives up after `close_timeout`.
#[test]
fn shutdown_disconnect_does_not_wait_for_a_silent_client() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    open(&mut d, &sink, now);
    d.on_shutdown(now);
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xf4]);
    assert!(matches!(&sink.take()[..], [Event::Disconnect { code: 1012, .. }]));
    assert!(d.wants_read(), "the close handshake goes on");
    let at = d.deadline().expect("the close timeout");
    assert_eq!(at, now + Duration::from_secs(10));
    d.on_tick(at);
    assert!(d.is_finished());
    assert!(sink.take().is_empty(), "one disconnect only");
}

#[test]
fn eof_before_accept_then_accept() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = connect(&mut d, &sink, now);
    d.on_eof();
    assert!(matches!(&sink.take()[..], [Event::Disconnect { code: 1006, .. }]));
    assert!(!d.wants_read());
    h.accept(None, vec![]);
    d.on_commands(now);
    output(&mut d);
    assert!(d.is_finished());
    assert!(sink.take().is_empty(), "one disconnect only");
}

#[test]
fn protocol_error_closes_with_its_code() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    open(&mut d, &sink, now);
    read(&mut d, &[0x81, 0x00], now); // unmasked
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xea]);
    assert!(d.is_finished());
    // A peer that broke the protocol may still be sending: the socket lingers.
    assert!(!d.is_closed_by_client());
    let events = sink.take();
    assert!(events.iter().any(|e| matches!(e, Event::Disconnect { code: 1002, .. })), "{events:?}");
}

/// An open connection that has read `valid` text messages and then a frame with a reserved
/// opcode, all in one read.
fn violation_after(valid: &[&str]) -> (Driver, Arc<Sink>, Arc<AtomicUsize>, ConnHandle, Instant) {
    let (mut d, sink, notified, now) = setup(ServerConfig::default());
    let h = open(&mut d, &sink, now);
    let mut input = Vec::new();
    for text in valid {
        input.extend(client_frame(1, text.as_bytes()));
    }
    input.extend(client_frame(3, b""));
    input.extend(client_frame(1, b"after the violation"));
    read(&mut d, &input, now);
    (d, sink, notified, h, now)
}

/// The codes of the disconnects among `events`.
fn disconnects(events: &[Event]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnect { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

/// The application takes a message (one letter, see `violation_after`) and answers it with
/// the text `reply`.
fn answer(h: &ConnHandle, reply: &'static [u8]) {
    h.message_taken(1);
    assert_eq!(h.send(true, Bytes::from_static(reply)), SendState::Ready);
}

fn texts(events: &[Event]) -> Vec<&[u8]> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message: Message::Text(t), .. } => Some(&t[..]),
            _ => None,
        })
        .collect()
}

#[test]
fn replies_to_valid_messages_go_out_before_the_1002() {
    let (mut d, sink, notified, h, now) = violation_after(&["a", "b"]);
    // Both valid messages are delivered, nothing after the violation; the close is held.
    let events = sink.take();
    assert_eq!(texts(&events), [b"a", b"b"]);
    assert!(disconnects(&events).is_empty(), "{events:?}");
    assert!(output(&mut d).is_empty());
    assert!(!d.wants_read() && !d.is_finished());
    // The application takes "a" and answers it; it has not caught up yet.
    answer(&h, b"A");
    d.on_commands(now);
    assert_eq!(output(&mut d), [0x81, 1, b'A']);
    assert!(disconnects(&sink.take()).is_empty());
    // It takes "b", answers, and waits in receive(): that wakes the I/O side, which applies
    // the answer and then fails the connection.
    answer(&h, b"B");
    let before = notified.load(Ordering::SeqCst);
    h.receive_waiting();
    assert_eq!(notified.load(Ordering::SeqCst), before + 1);
    d.on_commands(now);
    assert_eq!(output(&mut d), [0x81, 1, b'B', 0x88, 2, 0x03, 0xea]);
    assert_eq!(disconnects(&sink.take()), [1002]);
    assert!(d.is_finished());
    // Nothing is sent after the close frame, and every byte is accounted for.
    assert_eq!(h.send(true, Bytes::from_static(b"late")), SendState::Closed);
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn the_reply_and_the_wait_in_one_wake_up_keep_their_order() {
    let (mut d, sink, _, h, now) = violation_after(&["a"]);
    sink.take();
    answer(&h, b"A");
    h.receive_waiting();
    d.on_commands(now);
    assert_eq!(output(&mut d), [0x81, 1, b'A', 0x88, 2, 0x03, 0xea]);
    assert!(d.is_finished());
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn an_app_that_closes_while_the_failure_is_held_closes_with_1002() {
    let (mut d, sink, _, h, now) = violation_after(&["a"]);
    sink.take();
    answer(&h, b"A");
    h.close(1000, String::new()); // the application finishes
    d.on_commands(now);
    assert_eq!(output(&mut d), [0x81, 1, b'A', 0x88, 2, 0x03, 0xea]);
    assert_eq!(disconnects(&sink.take()), [1002]);
    assert!(d.is_finished());
}

#[test]
fn an_app_that_never_comes_back_gets_1002_after_close_timeout() {
    let (mut d, sink, _, h, now) = violation_after(&["a"]);
    sink.take();
    let at = d.deadline().expect("the hold is bounded");
    assert_eq!(at, now + Duration::from_secs(10));
    d.on_tick(now + Duration::from_secs(9));
    assert!(output(&mut d).is_empty());
    d.on_tick(at);
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xea]);
    assert_eq!(disconnects(&sink.take()), [1002]);
    assert!(d.is_finished());
    // A reply that comes too late is dropped and released.
    h.message_taken(1);
    assert_eq!(h.send(true, Bytes::from_static(b"A")), SendState::Closed);
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn a_reply_queued_when_the_hold_times_out_is_released() {
    let (mut d, sink, _, h, now) = violation_after(&["a"]);
    sink.take();
    h.message_taken(1);
    assert_eq!(h.send(true, Bytes::from(vec![b'x'; 1000])), SendState::Ready);
    assert_eq!(h.queued_bytes(), 1000);
    d.on_tick(now + Duration::from_secs(10));
    d.on_commands(now + Duration::from_secs(10));
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xea]);
    assert_eq!(h.queued_bytes(), 0);
    assert!(d.is_finished());
}

#[test]
fn a_violation_with_nothing_to_answer_fails_at_once() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = open(&mut d, &sink, now);
    // A message the application has answered, and it waits again.
    read(&mut d, &client_frame(1, b"a"), now);
    sink.take();
    answer(&h, b"A");
    h.receive_waiting();
    // The violation arrives before the I/O side applied the answer: the answer still goes
    // first.
    read(&mut d, &client_frame(3, b""), now);
    assert_eq!(output(&mut d), [0x81, 1, b'A', 0x88, 2, 0x03, 0xea]);
    assert_eq!(disconnects(&sink.take()), [1002]);
    assert!(d.is_finished());
}

fn http_request(
    d: &mut Driver,
    sink: &Sink,
    bytes: &[u8],
    now: Instant,
) -> (ConnHandle, Vec<Event>) {
    read(d, bytes, now);
    let mut events = sink.take();
    let Event::HttpRequest(info) = events.remove(0) else { panic!("{events:?}") };
    (info.handle.clone(), events)
}

fn body_of(events: &[Event]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    let mut done = false;
    for e in events {
        if let Event::HttpBody { body: b, more, .. } = e {
            body.extend_from_slice(b);
            done = !more;
        }
    }
    (body, done)
}

fn respond(d: &mut Driver, h: &ConnHandle, body: &'static [u8], now: Instant) -> String {
    h.respond(200, vec![]);
    let _ = h.respond_body(Bytes::from_static(body), false);
    d.on_commands(now);
    String::from_utf8(output(d)).unwrap()
}

#[test]
fn http_keep_alive_and_pipelining() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz";
    let (h, events) = http_request(&mut d, &sink, two, now);
    assert_eq!(body_of(&events), (vec![], true));
    h.message_taken(0);
    // The second request waits until the first response is complete.
    let out = respond(&mut d, &h, b"first", now);
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("5\r\nfirst\r\n0\r\n\r\n"),
        "{out}"
    );
    let mut events = sink.take();
    // The first request is over for the application before the next one is announced: its
    // side forgets it (it used to keep the last request of every connection, a leak).
    let first = events.remove(0);
    assert!(matches!(first, Event::Disconnect { id: 7, code: 1000, .. }), "{first:?}");
    let Event::HttpRequest(info) = events.remove(0) else { panic!("{events:?}") };
    assert_eq!(info.request.path(), "/b");
    assert_eq!(body_of(&events), (b"xyz".to_vec(), true));
    h.message_taken(3);
    respond(&mut d, &h, b"second", now);
    assert_eq!(disconnects(&sink.take()), [1000]);
    assert!(!d.is_finished(), "kept alive");
    // Idle past the keep-alive timeout: closed without a response, and nothing more for the
    // application, which was told when the second response was complete.
    d.on_tick(now + Duration::from_secs(5));
    assert!(d.is_finished());
    assert!(output(&mut d).is_empty());
    assert!(sink.take().is_empty());
}

/// A shutdown while the connection waits for its next request head closes it: the previous
/// request's handle takes no more bytes (found by the `driver` fuzz target).
#[test]
fn shutdown_between_requests_closes_the_handle() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    h.message_taken(0);
    respond(&mut d, &h, b"ok", now);
    d.on_shutdown(now);
    assert!(d.is_finished());
    assert!(h.is_closed());
    assert_eq!(h.respond_body(Bytes::from_static(b"late"), false), SendState::Closed);
    assert_eq!(h.queued_bytes(), 0);
}

/// A connection accepted just before the shutdown whose request arrives after it (a worker
/// replaced on SIGHUP took it from the shared backlog): the request is answered, with
/// `connection: close`, then the connection closes.
#[test]
fn shutdown_before_the_first_request_still_answers_it() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    d.on_shutdown(now);
    assert!(!d.is_finished(), "waits for the request it was accepted for");
    let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    h.message_taken(0);
    let response = respond(&mut d, &h, b"ok", now);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("connection: close\r\n"), "{response}");
    assert!(d.is_finished());
}

/// The same for a WebSocket upgrade: refused with 503, the server goes away.
#[test]
fn shutdown_before_the_first_request_refuses_an_upgrade() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    d.on_shutdown(now);
    read(&mut d, REQUEST, now);
    assert!(sink.take().is_empty(), "the application is not asked");
    let response = String::from_utf8(output(&mut d)).unwrap();
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
}

/// A connection accepted over `limit_concurrency` gets 503 for an HTTP request and for an
/// upgrade alike, and the application is not asked.
#[test]
fn an_overloaded_connection_is_answered_503() {
    for request in [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], REQUEST] {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        d.set_overloaded();
        read(&mut d, request, now);
        assert!(sink.take().iter().all(|e| matches!(e, Event::Log { .. })), "not announced");
        let response = String::from_utf8(output(&mut d)).unwrap();
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{response}");
        assert!(d.is_finished());
    }
}

/// A connection accepted before the shutdown whose client never speaks is dropped at the
/// head's deadline, silently.
#[test]
fn shutdown_before_a_request_that_never_comes() {
    let (mut d, _, _, now) = setup(ServerConfig::default());
    d.on_shutdown(now);
    let at = d.deadline().expect("the head's deadline");
    assert_eq!(at, now + Duration::from_secs(10));
    d.on_tick(at);
    assert!(d.is_finished());
    assert!(output(&mut d).is_empty());
}

#[test]
fn http_chunked_upload_with_100_continue() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (h, events) = http_request(&mut d, &sink, head, now);
    assert!(events.is_empty());
    assert_eq!(output(&mut d), b"HTTP/1.1 100 Continue\r\n\r\n");
    read(&mut d, b"3\r\nabc\r\n0\r\n\r\n", now);
    let events = sink.take();
    assert_eq!(body_of(&events), (b"abc".to_vec(), true));
    for e in &events {
        if let Event::HttpBody { body, .. } = e {
            h.message_taken(body.len());
        }
    }
    let out = respond(&mut d, &h, b"", now);
    assert!(out.ends_with("transfer-encoding: chunked\r\n\r\n0\r\n\r\n"), "{out}");
}

#[test]
fn http_head_and_http10() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let (h, _) = http_request(&mut d, &sink, b"HEAD / HTTP/1.0\r\n\r\n", now);
    h.message_taken(0);
    h.respond(200, vec![(b"content-length".to_vec(), b"5".to_vec())]);
    let _ = h.respond_body(Bytes::from_static(b"hello"), false);
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert_eq!(
        out,
        format!("HTTP/1.1 200 OK\r\n{DEFAULTS}content-length: 5\r\nconnection: close\r\n\r\n")
    );
    assert_eq!(disconnects(&sink.take()), [1000]);
    assert!(d.is_finished());
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn http_client_leaves_mid_body() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let (_h, _) = http_request(
        &mut d,
        &sink,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        now,
    );
    d.on_eof();
    let events = sink.take();
    assert!(matches!(events.last(), Some(Event::Disconnect { code: 1006, .. })), "{events:?}");
    assert!(d.is_finished());
}

#[test]
fn http_app_failure() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    h.abort();
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
    assert!(d.is_finished());
    // After the response started, a failure can only close the connection.
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    h.respond(200, vec![]);
    let _ = h.respond_body(Bytes::from_static(b"part"), true);
    h.abort();
    d.on_commands(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.ends_with("4\r\npart\r\n"), "{out}");
    assert!(d.is_finished());
}

#[test]
fn http_body_back_pressure() {
    let (mut d, sink, _, now) = setup(ServerConfig { ws_max_queue: 1, ..ServerConfig::default() });
    let (h, events) = http_request(
        &mut d,
        &sink,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n",
        now,
    );
    assert_eq!(body_of(&events), (b"a".to_vec(), false), "one piece, then reading pauses");
    assert!(!d.wants_read());
    h.message_taken(1);
    d.on_commands(now); // the backend's wake-up after message_taken
    assert_eq!(body_of(&sink.take()), (b"b".to_vec(), false));
}

/// A request body that stops arriving is answered 408 once `handshake_timeout` passes without
/// a byte: it no longer holds its connection (and a `max_connections` slot) forever.
#[test]
fn http_stalled_body_times_out() {
    let timeout = Duration::from_millis(100);
    let (mut d, sink, _, now) =
        setup(ServerConfig { handshake_timeout: timeout, ..ServerConfig::default() });
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na";
    let (h, events) = http_request(&mut d, &sink, head, now);
    assert_eq!(body_of(&events), (b"a".to_vec(), false));
    h.message_taken(1);
    assert_eq!(d.deadline(), Some(now + timeout));
    // Progress re-arms the deadline; the application's own activity does not.
    let later = now + Duration::from_millis(80);
    read(&mut d, b"b", later);
    assert_eq!(d.deadline(), Some(later + timeout));
    h.message_taken(1);
    h.respond(200, vec![]);
    d.on_commands(later + Duration::from_millis(50));
    assert_eq!(d.deadline(), Some(later + timeout));
    d.on_tick(later + timeout);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(d.is_finished(), "closed: the response had started");
    assert!(matches!(sink.take().last(), Some(Event::Disconnect { code: 1006, .. })));

    // Before the response started: 408.
    let (mut d, sink, _, now) =
        setup(ServerConfig { handshake_timeout: timeout, ..ServerConfig::default() });
    let (_h, _) = http_request(&mut d, &sink, head, now);
    d.on_tick(now + timeout);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
    assert!(d.is_finished());
    assert!(matches!(sink.take().last(), Some(Event::Disconnect { code: 1006, .. })));
}

/// While the application holds reading paused, or once the body is in, the client is not
/// timed out: the wait is the application's.
#[test]
fn http_body_timeout_only_while_waiting_for_the_client() {
    let timeout = Duration::from_millis(100);
    let cfg =
        ServerConfig { handshake_timeout: timeout, ws_max_queue: 1, ..ServerConfig::default() };
    let (mut d, sink, _, now) = setup(cfg);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n";
    let (h, events) = http_request(&mut d, &sink, head, now);
    assert_eq!(body_of(&events), (b"a".to_vec(), false));
    assert_eq!(d.deadline(), None, "paused by the application");
    let later = now + Duration::from_secs(60);
    d.on_tick(later);
    assert!(!d.is_finished());
    h.message_taken(1);
    d.on_commands(later);
    assert_eq!(d.deadline(), Some(later + timeout), "waiting for the client again");
    read(&mut d, b"0\r\n\r\n", later);
    assert_eq!(body_of(&sink.take()), (vec![], true));
    assert_eq!(d.deadline(), None, "the body is in");
    h.message_taken(0);
    d.on_tick(later + Duration::from_secs(60));
    assert!(!d.is_finished());
    let out = respond(&mut d, &h, b"ok", later);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
}

/// A chunked body with a bare LF where RFC 9112 §7.1 requires CRLF is a 400 at once, not a
/// connection waiting forever for a CRLF.
#[test]
fn http_chunked_bare_lf_is_400() {
    for body in [
        &b"5\r\nhello\r\n0\r\n\n"[..],
        b"5;ext\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n",
        b"5\r\nhello\r\n0\r\nTrailer: x\n",
    ] {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_h, _) = http_request(&mut d, &sink, head, now);
        read(&mut d, body, now);
        let out = String::from_utf8(output(&mut d)).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{body:?}: {out}");
        assert!(d.is_finished(), "{body:?}");
    }
}

#[test]
fn peer_that_stops_reading_is_dropped_after_close_timeout() {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    let h = open(&mut d, &sink, now);
    let _ = h.send(false, Bytes::from(vec![0; 100_000]));
    d.on_commands(now);
    read(&mut d, &client_frame(8, &[0x03, 0xe8]), now); // client closes, never reads again
    assert!(d.wants_write() && !d.is_finished());
    let at = d.deadline().expect("a drain deadline");
    assert_eq!(at, now + Duration::from_secs(10));
    d.on_tick(at);
    assert!(d.is_finished());
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn ping_flood_without_reading_pauses_reads() {
    let (mut d, sink, _, now) =
        setup(ServerConfig { ws_write_high_water: 1000, ..ServerConfig::default() });
    open(&mut d, &sink, now);
    let ping = client_frame(9, &[7; 100]);
    let mut n = 0;
    while d.wants_read() {
        read(&mut d, &ping, now);
        n += 1;
        assert!(n < 100, "reading never paused");
    }
    assert!(d.out_queue().len() > 1000);
    output(&mut d);
    assert!(d.wants_read(), "resumes once the pongs are written");
}

/// A sink that panics on the first message, as a bug on the I/O side would.
#[derive(Default)]
struct PanickySink(Sink);

impl EventSink for PanickySink {
    fn push(&self, event: Event) {
        assert!(!matches!(event, Event::Message { .. }), "bug on the I/O side");
        self.0.push(event);
    }
}

#[test]
fn a_panic_closes_only_that_connection_with_1011() {
    let sink = Arc::new(PanickySink::default());
    let now = Instant::now();
    let mut d = Driver::new(
        9,
        Arc::new(ServerConfig::default()),
        sink.clone(),
        Box::new(CountNotify::default()),
        None,
        None,
        now,
        wall(),
    );
    read(&mut d, REQUEST, now);
    let events = sink.0.take();
    let [Event::Connect(info)] = &events[..] else { panic!("{events:?}") };
    info.handle.accept(None, vec![]);
    d.on_commands(now);
    output(&mut d);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // keep the test output quiet
    read(&mut d, &client_frame(1, b"boom"), now);
    std::panic::set_hook(prev);
    assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xf3], "close 1011, no details");
    assert!(d.is_finished());
    let events = sink.0.take();
    assert!(events.iter().any(|e| matches!(e, Event::Log { level: LogLevel::Error, .. })));
    assert!(events.iter().any(|e| matches!(e, Event::Disconnect { code: 1011, .. })));
}

/// A polling request of the Engine.IO session `sid`.
fn polling(sid: &str) -> Vec<u8> {
    format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n")
        .into_bytes()
}

/// A driver of worker 1 of 3.
fn worker_setup() -> (Driver, Arc<Sink>, Instant) {
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    d.set_worker(WorkerSlot { index: 1, count: 3 });
    (d, sink, now)
}

fn warnings(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log { level: LogLevel::Warning, message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

/// Checks that the driver answered `status` itself, finished, and logged one warning; returns it.
fn answered_and_warned(d: &mut Driver, sink: &Sink, status: u16) -> String {
    let out = String::from_utf8(output(d)).unwrap();
    assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
    assert!(d.is_finished() && !d.is_handed_off());
    let events = sink.take();
    let [warning] = &warnings(&events)[..] else { panic!("{events:?}") };
    (*warning).to_owned()
}

#[test]
fn a_request_for_another_workers_session_is_handed_off_with_every_byte() {
    let (mut d, sink, now) = worker_setup();
    let mut sent = polling("abc.2");
    sent.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    read(&mut d, &sent[..10], now);
    assert_eq!(d.handoff(), None, "a partial head is not routed");
    read(&mut d, &sent[10..], now);
    assert_eq!(d.handoff(), Some((2, &sent[..])));
    assert!(sink.take().is_empty(), "the application hears nothing");
    assert!(!d.wants_read() && !d.wants_write() && !d.is_finished());
    d.on_handoff(Ok(()), now);
    assert!(d.is_handed_off() && d.is_finished() && d.handle().is_closed());
    assert_eq!(d.deadline(), None);
    assert!(output(&mut d).is_empty());
}

#[test]
fn sessions_of_this_worker_untagged_ones_and_new_ones_are_served_here() {
    for sid in ["abc.1", "abc", ""] {
        let (mut d, sink, now) = worker_setup();
        let (h, _) = http_request(&mut d, &sink, &polling(sid), now);
        respond(&mut d, &h, b"ok", now);
        assert_eq!(d.handoff(), None);
    }
    // Not a worker: nothing is routed.
    let (mut d, sink, _, now) = setup(ServerConfig::default());
    http_request(&mut d, &sink, &polling("abc.2"), now);
}

#[test]
fn a_websocket_upgrade_of_another_workers_session_is_handed_off() {
    let (mut d, sink, now) = worker_setup();
    let upgrade = String::from_utf8(REQUEST.to_vec())
        .unwrap()
        .replace("/chat?x=1", "/socket.io/?EIO=4&transport=websocket&sid=abc.0");
    let mut sent = upgrade.into_bytes();
    sent.extend(client_frame(1, b"2probe"));
    read(&mut d, &sent, now);
    assert_eq!(d.handoff(), Some((0, &sent[..])));
    assert!(sink.take().is_empty());
}

#[test]
fn a_keep_alive_connection_is_handed_off_once_its_response_is_written() {
    let (mut d, sink, now) = worker_setup();
    let mut two = polling("abc.1");
    two.extend(polling("xyz.0"));
    let (h, _) = http_request(&mut d, &sink, &two, now);
    assert_eq!(d.handoff(), None, "the first request is this worker's");
    h.respond(200, vec![]);
    let _ = h.respond_body(Bytes::from_static(b"first"), false);
    d.on_commands(now);
    assert!(d.wants_write());
    assert_eq!(d.handoff(), None, "the first response is not written yet");
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.ends_with("first\r\n0\r\n\r\n"), "{out}");
    assert_eq!(d.handoff(), Some((0, &polling("xyz.0")[..])));
    // The first request is over (this worker's application forgets it); nothing else.
    assert_eq!(disconnects(&sink.take()), [1000]);
    d.on_handoff(Ok(()), now);
    assert!(d.is_handed_off() && d.is_finished());
    assert_eq!(h.send(true, Bytes::from_static(b"late")), SendState::Closed);
}

#[test]
fn a_full_inbox_is_retried_then_answered_503() {
    let (mut d, sink, now) = worker_setup();
    read(&mut d, &polling("abc.2"), now);
    d.on_handoff(Err(std::io::ErrorKind::WouldBlock.into()), now);
    assert_eq!(d.handoff(), None, "not before the retry time");
    let retry = d.deadline().unwrap();
    assert!(retry > now && retry < now + Duration::from_secs(1));
    d.on_tick(retry);
    assert!(d.handoff().is_some(), "tried again");
    let mut at = retry;
    while !d.wants_write() {
        d.on_handoff(Err(std::io::ErrorKind::WouldBlock.into()), at);
        at = d.deadline().unwrap();
        d.on_tick(at);
    }
    assert_eq!(at, now + ServerConfig::default().handshake_timeout);
    answered_and_warned(&mut d, &sink, 503);
}

#[test]
fn a_failed_hand_off_is_answered_503_and_logged() {
    let (mut d, sink, now) = worker_setup();
    read(&mut d, &polling("abc.0"), now);
    d.on_handoff(Err(std::io::ErrorKind::BrokenPipe.into()), now);
    let warning = answered_and_warned(&mut d, &sink, 503);
    assert!(warning.contains("worker 0"), "{warning}");
}

#[test]
fn too_many_bytes_read_ahead_are_answered_503() {
    let (mut d, sink, now) = worker_setup();
    let mut sent = polling("abc.2");
    sent.resize(sent.len() + max_handoff_bytes(&ServerConfig::default()), b'x');
    read(&mut d, &sent, now);
    assert_eq!(d.handoff(), None);
    answered_and_warned(&mut d, &sink, 503);
}

#[test]
fn a_session_of_a_worker_that_does_not_exist_is_answered_400() {
    let (mut d, sink, now) = worker_setup();
    read(&mut d, &polling("abc.3"), now);
    let warning = answered_and_warned(&mut d, &sink, 400);
    assert!(warning.contains("worker 3, of 3 workers"), "{warning}");
}

#[test]
fn a_handed_in_connection_serves_its_first_request_then_routes_again() {
    let (mut d, sink, now) = worker_setup();
    let mut two = polling("abc.2");
    two.extend(polling("abc.2"));
    d.on_handed_in(&mut BytesMut::from(&two[..]), now);
    let mut events = sink.take();
    let Event::HttpRequest(info) = events.remove(0) else { panic!("{events:?}") };
    respond(&mut d, &info.handle, b"here", now);
    assert_eq!(d.handoff(), Some((2, &polling("abc.2")[..])), "the next request is routed");
}

#[test]
fn shutdown_during_a_hand_off_answers_503() {
    let (mut d, _, now) = worker_setup();
    read(&mut d, &polling("abc.2"), now);
    d.on_handoff(Err(std::io::ErrorKind::WouldBlock.into()), now);
    d.on_shutdown(now);
    let out = String::from_utf8(output(&mut d)).unwrap();
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(d.is_finished());
}

/// An Engine.IO handshake: a request that creates a session.
const HANDSHAKE: &[u8] = b"GET /socket.io/?EIO=4&transport=polling&t=1 HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn handshakes_are_served_by_the_worker_that_accepted_them() {
    let (mut d, sink, now) = worker_setup();
    let (h, _) = http_request(&mut d, &sink, HANDSHAKE, now);
    respond(&mut d, &h, b"0{}", now);
    assert_eq!(d.handoff(), None);
}

/// The log messages among `events`, at `level`.
fn logged(events: &[Event], level: LogLevel) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log { level: l, message } if *l == level => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn refused_requests_are_reported_only_with_the_access_log() {
    for access_log in [false, true] {
        let cfg = ServerConfig {
            log: LogConfig { access: access_log, ..LogConfig::default() },
            max_header_bytes: 256,
            ..ServerConfig::default()
        };
        let (mut d, sink, _, now) = setup(cfg);
        read(&mut d, b"GET /long HTTP/1.1\r\nHost: a\r\nX: ", now);
        read(&mut d, &[b'x'; 300], now);
        assert!(output(&mut d).starts_with(b"HTTP/1.1 431 "));
        let refusals: Vec<_> = sink
            .take()
            .into_iter()
            .filter_map(|e| if let Event::Refused(r) = e { Some(r) } else { None })
            .collect();
        if access_log {
            let [r] = &refusals[..] else { panic!("{refusals:?}") };
            assert_eq!((r.id, r.status, r.request.is_none(), r.tls), (7, 431, true, false));
        } else {
            assert!(refusals.is_empty(), "{refusals:?}");
        }
    }
}

#[test]
fn a_refusal_after_the_head_carries_the_request() {
    let cfg = ServerConfig {
        log: LogConfig { access: true, ..LogConfig::default() },
        http_max_body_size: 10,
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg);
    read(&mut d, b"POST /up?a=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", now);
    assert!(output(&mut d).starts_with(b"HTTP/1.1 413 "));
    let events = sink.take();
    let [Event::Log { .. }, Event::Refused(r)] = &events[..] else { panic!("{events:?}") };
    let req = r.request.as_ref().unwrap();
    assert_eq!((r.status, req.method.as_str(), req.path()), (413, "POST", "/up".to_owned()));
}

#[test]
fn the_head_timeout_is_refused_with_408() {
    let cfg = ServerConfig {
        log: LogConfig { access: true, ..LogConfig::default() },
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg.clone());
    read(&mut d, b"GET / HT", now);
    d.on_tick(now + cfg.handshake_timeout);
    assert!(output(&mut d).starts_with(b"HTTP/1.1 408 "));
    let events = sink.take();
    assert!(events.iter().any(|e| matches!(e, Event::Refused(r) if r.status == 408)), "{events:?}");
}

#[test]
fn records_below_the_log_level_are_not_made() {
    let cfg = ServerConfig {
        log: LogConfig { level: LogLevel::Info, access: false },
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg);
    read(&mut d, b"BAD\r\n\r\n", now);
    assert!(output(&mut d).starts_with(b"HTTP/1.1 400 "));
    let events = sink.take();
    assert!(events.iter().all(|e| !matches!(e, Event::Log { .. })), "{events:?}");
    drop(d);
    assert!(sink.take().is_empty(), "no close record below trace");
}

#[test]
fn debug_records_name_the_client() {
    let sink = Arc::new(Sink::default());
    let now = Instant::now();
    let client = Some("192.0.2.1:4321".parse().unwrap());
    let cfg = Arc::new(ServerConfig::default());
    let notify = Box::new(CountNotify::default());
    let mut d = Driver::new(9, cfg, sink.clone(), notify, client, None, now, wall());
    read(&mut d, b"BAD\r\n\r\n", now);
    let debug = logged(&sink.take(), LogLevel::Debug);
    assert_eq!(debug, ["connection 9 (192.0.2.1:4321): malformed HTTP request: invalid token"]);
}

#[test]
fn trace_shows_open_frames_and_who_closed() {
    let cfg = ServerConfig {
        log: LogConfig { level: LogLevel::Trace, access: false },
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg);
    d.trace_open("tcp");
    let mut trace = logged(&sink.take(), LogLevel::Trace);
    let h = open(&mut d, &sink, now);
    read(&mut d, &client_frame(0x1, b"secret payload"), now);
    h.send(true, Bytes::from_static(b"secret reply"));
    d.on_commands(now);
    output(&mut d);
    let mut close = vec![0x03, 0xe8];
    close.extend_from_slice(b"bye");
    read(&mut d, &client_frame(0x8, &close), now);
    output(&mut d);
    assert!(d.is_finished());
    drop(d);
    trace.extend(logged(&sink.take(), LogLevel::Trace));
    let expected = [
        "open, server -, tcp",
        "received text frame, 14 bytes, fin=1",
        "sent text frame, 12 bytes, fin=1",
        "received close frame, 5 bytes, fin=1",
        "sent close frame, 2 bytes, fin=1",
        "closed by client: code 1000, reason \"bye\"",
    ];
    let expected: Vec<String> = expected.iter().map(|m| format!("connection 7 (-): {m}")).collect();
    assert_eq!(trace, expected);
}

#[test]
fn trace_says_the_application_closed() {
    let cfg = ServerConfig {
        log: LogConfig { level: LogLevel::Trace, access: false },
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg);
    let h = open(&mut d, &sink, now);
    h.close(4001, "done".into());
    d.on_commands(now);
    output(&mut d);
    read(&mut d, &client_frame(0x8, &[0x0f, 0xa1]), now);
    output(&mut d);
    assert!(d.is_finished());
    assert!(!d.is_closed_by_client(), "the application closed it");
    drop(d);
    let trace = logged(&sink.take(), LogLevel::Trace);
    assert_eq!(trace.last().unwrap(), "connection 7 (-): closed by app: code 4001, reason \"\"");
}

#[test]
fn trace_says_a_timeout_closed_an_idle_keep_alive_connection() {
    let cfg = ServerConfig {
        log: LogConfig { level: LogLevel::Trace, access: false },
        ..ServerConfig::default()
    };
    let (mut d, sink, _, now) = setup(cfg.clone());
    d.on_tick(now + cfg.handshake_timeout);
    assert!(d.is_finished());
    drop(d);
    let trace = logged(&sink.take(), LogLevel::Trace);
    assert_eq!(trace, ["connection 7 (-): closed by timeout after 0 requests"]);
}
