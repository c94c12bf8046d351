//! Transport-level behaviour of the mio backend: half-close, resets, full send buffers,
//! connection limits, reads split at every boundary, forced stops.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    close_client, close_code, disconnected, last_connected, masked_frame, read_frame, read_head,
    upgrade_request, TestServer, IO_TIMEOUT,
};
use socket2::{Domain, SockRef, Socket, Type};
use tungstenite::Message;
use zcasgi_core::backend::{Backend, ConnHandle, Event, EventSink, ServerConfig};
use zcasgi_core::protocol::Message as CoreMessage;
use zcasgi_core::testing::Seen;
use zcasgi_mio::MioBackend;

#[test]
fn half_closed_peer_message_then_disconnect() {
    let t = TestServer::with_threads(1);
    let mut s = t.raw_ws();
    s.write_all(&masked_frame(0x1, b"hello")).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    t.wait_for("the disconnect", |s| disconnected(s, 1006).is_some());
    let seen = t.app.seen();
    let id = last_connected(&seen).unwrap();
    let events: Vec<_> = seen.into_iter().filter(|e| !matches!(e, Seen::Log(_))).collect();
    assert_eq!(
        events,
        [Seen::Connected(id, "/".into()), Seen::Message(id, 5), Seen::Disconnected(id, 1006)]
    );
    // The server closes its side too.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    t.assert_serving();
}

#[test]
fn peer_reset_mid_frame_is_1006() {
    let t = TestServer::with_threads(1);
    let s = t.raw_ws();
    let frame = masked_frame(0x2, &[5u8; 1000]);
    (&s).write_all(&frame[..100]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    t.wait_for("the disconnect", |s| disconnected(s, 1006).is_some());
    assert!(t.app.seen().iter().all(|e| !matches!(e, Seen::Message(..))));
    t.assert_serving();
    assert!(t.app.wait_for(IO_TIMEOUT, |_| t.server.connection_count() == 0));
}

#[test]
fn writes_blocked_by_a_slow_reader_resume_intact() {
    const MESSAGES: usize = 32;
    const SIZE: usize = 256 * 1024;
    let t = TestServer::with_threads(1);
    // A small receive window: the server's writes hit WouldBlock early and often.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.connect(&t.addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{}/", t.addr), stream).unwrap();
    let base: Vec<u8> = (0..SIZE + MESSAGES).map(|j| (j * 7 / 3) as u8).collect();
    let payload = |i: usize| &base[i..i + SIZE];
    // 8 MiB of echoes pile up in the server while nothing is read.
    for i in 0..MESSAGES {
        ws.send(Message::binary(payload(i).to_vec())).unwrap();
    }
    t.wait_for("every message", |s| {
        s.iter().filter(|e| matches!(e, Seen::Message(..))).count() == MESSAGES
    });
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..MESSAGES {
        let Message::Binary(got) = ws.read().unwrap() else { panic!("expected binary") };
        assert!(got[..] == *payload(i), "message {i} differs");
    }
    close_client(ws);
}

#[test]
fn max_connections_pauses_and_resumes_accepting() {
    // With several reactors, the one that frees a slot must wake the others.
    for io_threads in [1, 3] {
        max_connections_with(io_threads);
    }
}

fn max_connections_with(io_threads: usize) {
    let t = TestServer::start(ServerConfig {
        max_connections: 2,
        io_threads,
        ..ServerConfig::default()
    });
    let a = t.ws("/");
    let b = t.ws("/");
    assert_eq!(t.server.connection_count(), 2);
    // The third waits in the backlog: its handshake gets no answer.
    let mut c = t.tcp();
    c.write_all(&upgrade_request("/")).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    let err = c.read(&mut byte).unwrap_err();
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert_eq!(t.server.connection_count(), 2);
    // One leaves: the third is accepted and answered.
    close_client(a);
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write_all(&masked_frame(0x1, b"third")).unwrap();
    assert_eq!(read_frame(&mut c), (0x1, b"third".to_vec()));
    close_client(b);
}

#[test]
fn handshake_and_frames_in_one_write() {
    let t = TestServer::with_threads(1);
    let mut s = t.tcp();
    let mut bytes = upgrade_request("/");
    bytes.extend(masked_frame(0x1, b"early"));
    bytes.extend(masked_frame(0x2, &vec![9u8; 70_000]));
    s.write_all(&bytes).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(read_frame(&mut s), (0x1, b"early".to_vec()));
    assert_eq!(read_frame(&mut s), (0x2, vec![9u8; 70_000]));
}

#[test]
fn frames_split_at_every_boundary() {
    let t = TestServer::with_threads(1);
    let mut s = t.raw_ws();
    s.set_nodelay(true).unwrap();
    // A small frame one byte at a time.
    let small = masked_frame(0x1, b"one byte at a time");
    for b in &small {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(read_frame(&mut s), (0x1, b"one byte at a time".to_vec()));
    // A large frame whose header is split, then its payload in uneven pieces.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let large = masked_frame(0x2, &data);
    let mut rest = &large[..];
    for piece in [3, 7, 1000, 65_536, 1, 99_999] {
        s.write_all(&rest[..piece]).unwrap();
        rest = &rest[piece..];
        std::thread::sleep(Duration::from_millis(2));
    }
    s.write_all(rest).unwrap();
    assert_eq!(read_frame(&mut s), (0x2, data));
}

#[test]
fn join_timeout_drops_connections_that_do_not_close() {
    let t = TestServer::with_threads(2);
    // A peer that ignores the closing handshake (close_timeout is 10 s).
    let mut s = t.raw_ws();
    t.wait_for("the connect", |s| last_connected(s).is_some());
    t.server.shutdown();
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!(opcode, 0x8);
    assert_eq!(close_code(&payload), 1012);
    assert!(!t.server.join(Duration::from_millis(300)));
    t.wait_for("the disconnect", |s| disconnected(s, 1006).is_some());
    assert_eq!(t.server.connection_count(), 0);
    assert!(t.server.join(Duration::from_secs(1)));
}

#[test]
fn flood_of_small_frames_stays_in_order() {
    // More than a turn's read budget at once: the connection is served over several turns.
    const FRAMES: usize = 4000;
    let t = TestServer::with_threads(1);
    let mut s = t.raw_ws();
    let mut flood = Vec::new();
    for i in 0..FRAMES {
        flood.extend(masked_frame(0x2, &[(i % 256) as u8; 1000]));
    }
    let reader = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..FRAMES {
                assert_eq!(read_frame(&mut s), (0x2, vec![(i % 256) as u8; 1000]), "frame {i}");
            }
        })
    };
    s.write_all(&flood).unwrap();
    reader.join().unwrap();
}

#[test]
fn peer_that_never_reads_is_dropped_after_close_timeout() {
    let t = TestServer::start(ServerConfig {
        close_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    socket.connect(&t.addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&upgrade_request("/")).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 101"));
    // Echoes pile up unread, then the app closes: its close frame cannot be written either.
    for _ in 0..64 {
        s.write_all(&masked_frame(0x2, &vec![1u8; 64 * 1024])).unwrap();
    }
    s.write_all(&masked_frame(0x1, b"close:4001:bye")).unwrap();
    t.wait_for("the close timeout", |s| disconnected(s, 1006).is_some());
    // Then the socket is given up although its output never drained.
    assert!(t.app.wait_for(IO_TIMEOUT, |_| t.server.connection_count() == 0));
}

/// An application that accepts every WebSocket and keeps messages without taking them.
#[derive(Default)]
struct HoldApp {
    handles: Mutex<Vec<ConnHandle>>,
    messages: Mutex<Vec<Vec<u8>>>,
}

impl EventSink for HoldApp {
    fn push(&self, event: Event) {
        match event {
            Event::Connect(info) => {
                info.handle.accept(None, Vec::new());
                self.handles.lock().unwrap().push(info.handle);
            }
            Event::Message { message: CoreMessage::Text(b) | CoreMessage::Binary(b), .. } => {
                self.messages.lock().unwrap().push(b.to_vec());
            }
            _ => {}
        }
    }
}

#[test]
fn reading_pauses_at_max_queue_and_resumes_when_taken() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(HoldApp::default());
    let cfg = ServerConfig { ws_max_queue: 4, ..ServerConfig::default() };
    let server = MioBackend.start(Arc::new(cfg), vec![listener], app.clone()).unwrap();
    let count = || app.messages.lock().unwrap().len();
    let wait_count = |n: usize| {
        let end = Instant::now() + IO_TIMEOUT;
        while count() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(count(), n);
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&upgrade_request("/")).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 101"));
    let frames = |range: std::ops::Range<u8>| -> Vec<u8> {
        range.flat_map(|i| masked_frame(0x2, &[i; 10])).collect()
    };
    // Four messages fill the queue: reading stops.
    s.write_all(&frames(0..4)).unwrap();
    wait_count(4);
    // These arrive (an edge-triggered event) but stay in the socket.
    s.write_all(&frames(4..7)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(count(), 4);
    // The application takes its messages: the reactor reads again without a new edge.
    let handle = app.handles.lock().unwrap()[0].clone();
    for _ in 0..4 {
        handle.message_taken();
    }
    wait_count(7);
    let got = app.messages.lock().unwrap().clone();
    assert_eq!(got, (0..7u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
    server.shutdown();
    drop(s);
    assert!(server.join(IO_TIMEOUT));
}
