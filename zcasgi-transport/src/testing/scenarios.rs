//! Every transport scenario, written once against `&dyn Backend`.
//!
//! Each `pub fn` here is one scenario and is listed in [`crate::backend_matrix!`] (a test of
//! the matrix checks that). Unless a scenario says otherwise, the server runs two I/O threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use zcasgi_core::backend::{Backend, Event, EventSink, LogLevel, ServerConfig, WorkerSockets};
use zcasgi_core::sticky::{tag_session_id, WorkerSlot};
use zcasgi_core::testing::{EchoApp, Seen};

use super::{
    close_client, close_code, count, disconnected, echo, last_connected, masked_frame, read_close,
    read_frame, read_head, read_to_end, read_until_closed, upgrade_request, wait_until,
    with_timeouts, DenyApp, HoldApp, TempDir, TestServer, TlsFiles, FDS, IO_TIMEOUT, QUIET,
};

/// Message lengths around the 7-, 16- and 64-bit length encodings (RFC 6455 §5.2).
const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 1 << 20];

/// The configuration of most scenarios: the defaults on two I/O threads.
fn config() -> ServerConfig {
    ServerConfig { io_threads: 2, ..ServerConfig::default() }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A client socket with a small receive buffer, so that the server's writes block early.
fn small_window_client(t: &TestServer, recv_buffer: usize) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    socket.connect(&t.addr.into()).unwrap();
    with_timeouts(socket.into())
}

/// Binary messages at every length boundary echo intact.
pub fn binary_echo_at_length_boundaries(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut ws = t.ws("/");
    for (i, len) in SIZES.into_iter().enumerate() {
        echo(&mut ws, Message::binary(pattern(len, i as u8)));
    }
    close_client(ws);
}

/// Text messages of multi-byte characters, at every length boundary, echo intact (reads split
/// code points).
pub fn text_echo_at_length_boundaries(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut ws = t.ws("/");
    for len in SIZES {
        let text: String = "aé€𝄞"
            .chars()
            .cycle()
            .scan(0, |n, c| {
                *n += c.len_utf8();
                (*n <= len).then_some(c)
            })
            .collect();
        let pad = len - text.len();
        echo(&mut ws, Message::text(text + &"x".repeat(pad)));
    }
    close_client(ws);
}

/// The subprotocol the application chooses is in the handshake response.
pub fn subprotocol_is_negotiated(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let (ws, response) = t.ws_request("/chat", |req| {
        req.headers_mut().insert("Sec-WebSocket-Protocol", "chat, superchat".parse().unwrap());
    });
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    close_client(ws);
    t.wait_for("the connect", |s| s.contains(&Seen::Connected(1, "/chat".into())));
}

/// Connection ids are numbered per server, from 1.
pub fn connection_ids_start_at_one_per_server(backend: &dyn Backend) {
    for _ in 0..2 {
        let t = TestServer::start(backend, config());
        close_client(t.ws("/first"));
        close_client(t.ws("/second"));
        t.wait_for("both connects", |s| {
            s.contains(&Seen::Connected(1, "/first".into()))
                && s.contains(&Seen::Connected(2, "/second".into()))
        });
    }
}

/// A WebSocket the application closes before accepting gets a 403; the server goes on.
pub fn app_denial_is_http_403(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let url = format!("ws://{}/deny", t.addr);
    match tungstenite::client(url, t.tcp()) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status(), 403);
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
    }
    t.assert_serving();
}

/// An ASGI denial response with a body in pieces goes out as written, and logs no error.
pub fn denial_response_with_a_body(backend: &dyn Backend) {
    let t = TestServer::with_app(backend, config(), Arc::new(DenyApp::default()));
    let mut s = t.tcp();
    s.write_all(&upgrade_request("/")).unwrap();
    let response = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let body = std::str::from_utf8(DenyApp::BODY).unwrap();
    assert!(response.ends_with(&format!("\r\n\r\n{body}")), "{response:?}");
    t.wait_idle();
    assert_eq!(*t.app.errors.lock().unwrap(), Vec::<String>::new());
}

/// The client's close code reaches the application and is echoed in the server's close frame.
pub fn client_close_code_reaches_the_app(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut ws = t.ws("/");
    echo(&mut ws, Message::text("hi"));
    ws.close(Some(CloseFrame { code: CloseCode::from(4321), reason: "done".into() })).unwrap();
    assert_eq!(read_close(&mut ws).0, 4321);
    read_until_closed(&mut ws);
    t.wait_for("the disconnect", |s| disconnected(s, 4321).is_some());
}

/// The application's close code and reason reach the client.
pub fn app_close_reaches_the_client(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut ws = t.ws("/");
    ws.send(Message::text("close:4001:bye")).unwrap();
    assert_eq!(read_close(&mut ws), (4001, "bye".to_owned()));
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    t.wait_for("the disconnect", |s| disconnected(s, 4001).is_some());
}

/// Invalid upgrades get 426 and a clean end of stream; the server goes on.
pub fn invalid_upgrade_is_426_and_the_server_goes_on(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let requests: [&[u8]; 2] = [
        // `Upgrade: websocket` without `Connection: Upgrade` (RFC 6455 §4.2.1).
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        // An unsupported version (RFC 6455 §4.4).
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    ];
    for request in requests {
        let mut s = t.tcp();
        s.write_all(request).unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        read_to_end(&mut s);
    }
    t.assert_serving();
}

/// An error response reaches a client that keeps sending: the server lingers, draining the
/// client's input, instead of closing into a reset that could destroy the response.
pub fn error_response_survives_unread_input(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.tcp();
    // No `Connection: Upgrade`: a 426.
    let mut bytes = b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    bytes.extend(vec![b'x'; 256 * 1024]);
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            s.write_all(&bytes).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        })
    };
    let response = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    writer.join().unwrap();
    t.wait_idle();
}

/// An unmasked client frame is a protocol error (1002); the server goes on.
pub fn unmasked_frame_is_1002_and_the_server_goes_on(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!(opcode, 0x8);
    assert_eq!(close_code(&payload), 1002);
    read_to_end(&mut s);
    t.wait_for("the disconnect", |s| disconnected(s, 1002).is_some());
    t.assert_serving();
}

/// A message over `ws_max_size` closes with 1009; one at the limit is fine.
pub fn message_over_max_size_is_1009(backend: &dyn Backend) {
    let t = TestServer::start(backend, ServerConfig { ws_max_size: 1000, ..config() });
    let mut ws = t.ws("/");
    echo(&mut ws, Message::binary(vec![7u8; 1000]));
    ws.send(Message::binary(vec![7u8; 200_000])).unwrap();
    assert_eq!(read_close(&mut ws).0, 1009);
    read_until_closed(&mut ws);
    t.wait_for("the disconnect", |s| disconnected(s, 1009).is_some());
}

/// A ping is answered with a pong carrying its payload.
pub fn ping_is_answered_with_pong(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    s.write_all(&masked_frame(0x9, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s), (0xA, b"are you there".to_vec()));
}

/// A 1 MiB frame that arrives in pieces, with pauses between them (the server waits for the
/// rest of the frame before it reads again, see `io::read_low_water`): its echo is intact, and
/// a small frame after it is read at once. Then a frame cut short by the peer's half-close: the
/// end of the stream still wakes the server (1006, no message).
pub fn large_frame_in_pieces_then_one_cut_short(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    let payload = pattern(1 << 20, 7);
    let frame = masked_frame(0x2, &payload);
    for piece in frame.chunks(300 * 1024) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(read_frame(&mut s) == (0x2, payload.clone()), "the echo differs");
    s.write_all(&masked_frame(0x9, b"next")).unwrap();
    assert_eq!(read_frame(&mut s), (0xA, b"next".to_vec()));
    s.write_all(&frame[..200 * 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.shutdown(Shutdown::Write).unwrap();
    t.wait_for("the disconnect", |s| disconnected(s, 1006).is_some());
    let messages = count(&t.app.seen(), |e| matches!(e, Seen::Message(..)));
    assert_eq!(messages, 1, "only the complete frame is a message");
    read_to_end(&mut s);
    t.assert_serving();
}

/// 200 connections, 50 pipelined messages each: nothing is lost or reordered, and every
/// connection is gone once the clients leave.
pub fn many_connections_lose_and_reorder_nothing(backend: &dyn Backend) {
    const CONNS: usize = 200;
    const MESSAGES: usize = 50;
    const CLIENT_THREADS: usize = 20;
    let t = TestServer::start(backend, config());
    std::thread::scope(|scope| {
        for worker in 0..CLIENT_THREADS {
            let t = &t;
            scope.spawn(move || {
                let mut clients: Vec<_> = (0..CONNS / CLIENT_THREADS).map(|_| t.ws("/")).collect();
                // Every message of every connection goes out before any is read.
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MESSAGES {
                        ws.write(Message::text(format!("{worker}/{c}/{m}"))).unwrap();
                    }
                    ws.flush().unwrap();
                }
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MESSAGES {
                        assert_eq!(ws.read().unwrap(), Message::text(format!("{worker}/{c}/{m}")));
                    }
                }
                for ws in clients {
                    close_client(ws);
                }
            });
        }
    });
    let messages = count(&t.app.seen(), |e| matches!(e, Seen::Message(..)));
    assert_eq!(messages, CONNS * MESSAGES);
    t.wait_for("every disconnect", |s| count(s, |e| matches!(e, Seen::Disconnected(..))) == CONNS);
    t.wait_idle();
}

/// Shutdown closes open WebSockets with 1012 (the application hears it too); a connection
/// accepted before it whose request comes after it (a worker replaced on SIGHUP took it from
/// the shared backlog) is still answered, with `connection: close`. `join` then succeeds, the
/// server is finished and the listener is closed.
pub fn shutdown_sends_1012_and_join_returns_true(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut clients: Vec<_> = (0..6).map(|_| t.ws("/")).collect();
    for ws in &mut clients {
        echo(ws, Message::text("open"));
    }
    let mut late = t.tcp();
    wait_until("the late connection", || t.server.connection_count() == 7);
    t.server.shutdown();
    for mut ws in clients {
        assert_eq!(read_close(&mut ws).0, 1012);
        assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    }
    assert!(!t.server.is_finished(), "the late connection is still served");
    late.write_all(b"GET /late HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut late)).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("connection: close\r\n"), "{response}");
    drop(late);
    assert!(t.server.join(IO_TIMEOUT));
    assert!(t.server.is_finished());
    assert_eq!(t.server.connection_count(), 0);
    assert!(TcpStream::connect(t.addr).is_err(), "the listener is closed");
    t.wait_for("every disconnect", |s| count(s, |e| matches!(e, Seen::Disconnected(_, 1012))) == 6);
}

/// Past its timeout, `join` drops the connections that did not close, and a second `join`
/// succeeds. The application heard of the close (1012) as soon as the close frame went out,
/// and only then: dropping the connection reports nothing more.
pub fn join_timeout_drops_connections_that_do_not_close(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    // A peer that ignores the closing handshake (close_timeout is 10 s).
    let mut s = t.raw_ws();
    t.wait_for("the connect", |s| last_connected(s).is_some());
    t.server.shutdown();
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!(opcode, 0x8);
    assert_eq!(close_code(&payload), 1012);
    t.wait_for("the disconnect", |s| disconnected(s, 1012).is_some());
    assert!(!t.server.join(Duration::from_millis(200)));
    assert_eq!(t.server.connection_count(), 0);
    assert!(t.server.join(IO_TIMEOUT));
    let seen = t.app.seen();
    assert_eq!(count(&seen, |e| matches!(e, Seen::Disconnected(..))), 1, "{seen:?}");
}

/// An incomplete request head gets 408 at the handshake timeout, not before.
pub fn handshake_timeout_is_408(backend: &dyn Backend) {
    let timeout = Duration::from_millis(200);
    let t = TestServer::start(backend, ServerConfig { handshake_timeout: timeout, ..config() });
    let started = Instant::now();
    let mut s = t.tcp();
    s.write_all(b"GET / HTTP/1.1\r\nHost: te").unwrap();
    let head = read_head(&mut s);
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    read_to_end(&mut s);
    t.assert_serving();
}

/// A client that sends nothing is closed at the handshake timeout (with a 408 or, as an idle
/// keep-alive connection, without a word).
pub fn silent_client_is_closed_after_the_handshake_timeout(backend: &dyn Backend) {
    let timeout = Duration::from_millis(200);
    let t = TestServer::start(backend, ServerConfig { handshake_timeout: timeout, ..config() });
    let started = Instant::now();
    let response = String::from_utf8(read_to_end(&mut t.tcp())).unwrap();
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert!(response.is_empty() || response.starts_with("HTTP/1.1 408"), "{response}");
    t.wait_idle();
}

/// A server that pings every 100 ms and waits 100 ms for the pong.
fn keepalive_server(backend: &dyn Backend) -> TestServer {
    TestServer::start(
        backend,
        ServerConfig {
            ws_ping_interval: Some(Duration::from_millis(100)),
            ws_ping_timeout: Some(Duration::from_millis(100)),
            ..config()
        },
    )
}

/// A peer that does not answer the keep-alive ping is closed with 1011.
pub fn keepalive_timeout_is_1011(backend: &dyn Backend) {
    let t = keepalive_server(backend);
    // Completes the handshake, then neither reads nor answers pings.
    let mut s = t.raw_ws();
    t.wait_for("the keepalive disconnect", |s| disconnected(s, 1011).is_some());
    // The socket holds the ping and the close frame.
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!((opcode, payload.len()), (0x9, 8));
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!(opcode, 0x8);
    assert_eq!(close_code(&payload), 1011);
    read_to_end(&mut s);
}

/// A peer that answers the keep-alive pings stays connected.
pub fn answered_keepalive_pings_keep_the_connection_open(backend: &dyn Backend) {
    let t = TestServer::start(
        backend,
        ServerConfig {
            ws_ping_interval: Some(Duration::from_millis(50)),
            ws_ping_timeout: Some(Duration::from_millis(100)),
            ..config()
        },
    );
    let mut ws = t.ws("/");
    for _ in 0..4 {
        // tungstenite queues the pong; the flush sends it.
        assert!(matches!(ws.read().unwrap(), Message::Ping(_)));
        ws.flush().unwrap();
    }
    echo(&mut ws, Message::text("still open"));
    assert!(!t.app.seen().iter().any(|s| matches!(s, Seen::Disconnected(..))));
    close_client(ws);
}

/// A peer that stops reading, with more queued for it than the socket buffers hold, is failed
/// by the keep-alive (1011) and then dropped although its output never drained.
pub fn peer_that_stops_reading_is_dropped_after_the_timeouts(backend: &dyn Backend) {
    let t = TestServer::start(
        backend,
        ServerConfig {
            ws_ping_interval: Some(Duration::from_millis(100)),
            ws_ping_timeout: Some(Duration::from_millis(100)),
            close_timeout: Duration::from_millis(200),
            ..config()
        },
    );
    let mut ws = t.ws("/");
    // (On a slow machine the keepalive may fail the connection while this is being sent.)
    let _ = ws.send(Message::binary(vec![7; 12 << 20]));
    t.wait_for("the keepalive disconnect", |s| disconnected(s, 1011).is_some());
    t.wait_idle();
}

/// A peer that never reads while the application closes: its close frame cannot be written
/// either, and after the close timeout the connection is given up.
pub fn peer_that_never_reads_is_dropped_after_close_timeout(backend: &dyn Backend) {
    let t = TestServer::start(
        backend,
        ServerConfig { close_timeout: Duration::from_millis(200), ..config() },
    );
    let mut s = small_window_client(&t, 4 * 1024);
    s.write_all(&upgrade_request("/")).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 101"));
    for _ in 0..64 {
        s.write_all(&masked_frame(0x2, &vec![1u8; 64 * 1024])).unwrap();
    }
    s.write_all(&masked_frame(0x1, b"close:4001:bye")).unwrap();
    t.wait_for("the close timeout", |s| disconnected(s, 1006).is_some());
    t.wait_idle();
}

/// Every ping queues a pong: a peer that pings and never reads cannot grow that queue without
/// bound — the server stops reading, and the peer's writes block.
pub fn ping_flood_from_a_peer_that_does_not_read_is_throttled(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    s.set_write_timeout(Some(QUIET)).unwrap();
    let batch = masked_frame(0x9, &[0; 125]).repeat(1024);
    let mut written = 0usize;
    let blocked = loop {
        match s.write(&batch) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => panic!("write failed: {e}"),
        }
        if written > 256 << 20 {
            break false;
        }
    };
    assert!(blocked, "the server read {written} bytes of pings without the peer reading");
}

/// A peer that floods pings and does not read, with keep-alive pings on, is closed the same
/// way by every backend: once its unanswered keep-alive ping times out the application is told
/// 1011, and the peer, when it reads, finds the pongs and then a 1011 close frame (not a dropped
/// TCP connection).
pub fn ping_flood_without_reading_is_closed_with_1011(backend: &dyn Backend) {
    let t = keepalive_server(backend);
    let mut s = t.raw_ws();
    s.set_write_timeout(Some(QUIET)).unwrap();
    let batch = masked_frame(0x9, &[7; 125]).repeat(256);
    // Flood until the server stops reading or closes the connection.
    while disconnected(&t.app.seen(), 1011).is_none() {
        match s.write(&batch) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                break
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    t.wait_for("the keepalive disconnect", |s| disconnected(s, 1011).is_some());
    let close = loop {
        let (opcode, payload) = read_frame(&mut s);
        match opcode {
            0x9 | 0xA => {}
            0x8 => break payload,
            other => panic!("unexpected opcode {other:#x}"),
        }
    };
    assert_eq!(close_code(&close), 1011);
}

/// A plain HTTP request is answered by the application (chunked), and nothing panics.
pub fn plain_http_request_is_answered_by_the_app(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.tcp();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\n7\r\n/health\r\n0\r\n\r\n"), "{response}");
    t.assert_serving();
    let panics = count(&t.app.seen(), |e| matches!(e, Seen::Log(_, m) if m.contains("panic")));
    assert_eq!(panics, 0);
}

/// Pipelined HTTP requests on one connection are answered in order.
pub fn pipelined_http_requests_on_one_connection(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.tcp();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: test\r\n\r\nGET /two HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let response = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert_eq!(response.matches("HTTP/1.1 200").count(), 2, "{response}");
    let one = response.find("\r\n/one\r\n").expect("first body");
    let two = response.find("\r\n/two\r\n").expect("second body");
    assert!(one < two);
}

/// A peer that sends a message and half-closes: the message is delivered, then a 1006
/// disconnect, and the server closes its side too.
pub fn half_closed_peer_message_then_disconnect(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    s.write_all(&masked_frame(0x1, b"hello")).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    t.wait_for("the disconnect", |s| disconnected(s, 1006).is_some());
    let seen = t.app.seen();
    let id = last_connected(&seen).unwrap();
    let events: Vec<_> = seen.into_iter().filter(|e| !matches!(e, Seen::Log(..))).collect();
    assert_eq!(
        events,
        [Seen::Connected(id, "/".into()), Seen::Message(id, 5), Seen::Disconnected(id, 1006)]
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    t.assert_serving();
}

/// A peer that resets in the middle of a frame: 1006, no message, the connection is gone.
pub fn peer_reset_mid_frame_is_1006(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    // A ping, then the first 100 bytes of a frame, in one write: the pong shows that the
    // server read that write.
    let mut bytes = masked_frame(0x9, b"read?");
    bytes.extend_from_slice(&masked_frame(0x2, &[5u8; 1000])[..100]);
    s.write_all(&bytes).unwrap();
    assert_eq!(read_frame(&mut s), (0xA, b"read?".to_vec()));
    SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    t.wait_for("the disconnect", |s| disconnected(s, 1006).is_some());
    assert!(t.app.seen().iter().all(|e| !matches!(e, Seen::Message(..))));
    t.assert_serving();
    t.wait_idle();
}

/// 8 MiB of echoes to a reader with a small receive window: the server's writes hit
/// `WouldBlock` over and over, and everything arrives intact and in order.
pub fn writes_blocked_by_a_slow_reader_resume_intact(backend: &dyn Backend) {
    const MESSAGES: usize = 32;
    const SIZE: usize = 256 * 1024;
    let t = TestServer::start(backend, config());
    let stream = small_window_client(&t, 8 * 1024);
    let (mut ws, _) = tungstenite::client(format!("ws://{}/", t.addr), stream).unwrap();
    let base = pattern(SIZE + MESSAGES, 3);
    let payload = |i: usize| &base[i..i + SIZE];
    for i in 0..MESSAGES {
        ws.send(Message::binary(payload(i).to_vec())).unwrap();
    }
    t.wait_for("every message", |s| count(s, |e| matches!(e, Seen::Message(..))) == MESSAGES);
    for i in 0..MESSAGES {
        let Message::Binary(got) = ws.read().unwrap() else { panic!("expected binary") };
        assert!(got[..] == *payload(i), "message {i} differs");
    }
    close_client(ws);
}

/// A client that writes everything before reading: the server keeps reading (and the
/// application receiving) while its own writes are blocked.
pub fn pipelined_large_messages_do_not_deadlock(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut ws = t.ws("/");
    for i in 0..8 {
        ws.send(Message::binary(vec![i; 1 << 20])).unwrap();
    }
    for i in 0..8 {
        assert_eq!(ws.read().unwrap(), Message::binary(vec![i; 1 << 20]));
    }
    close_client(ws);
}

/// At `max_connections`, further clients wait in the backlog; when one leaves, the next is
/// served. With several I/O threads, the one that frees a slot must wake the others.
pub fn max_connections_pauses_and_resumes_accepting(backend: &dyn Backend) {
    for io_threads in [1, 3] {
        let t = TestServer::start(
            backend,
            ServerConfig { max_connections: 2, io_threads, ..ServerConfig::default() },
        );
        let a = t.ws("/");
        let mut b = t.ws("/");
        assert_eq!(t.server.connection_count(), 2);
        let mut c = t.tcp();
        c.write_all(&upgrade_request("/")).unwrap();
        c.set_read_timeout(Some(QUIET)).unwrap();
        let err = c.read(&mut [0u8; 1]).expect_err("the third client is not served yet");
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        assert_eq!(t.server.connection_count(), 2);
        close_client(a);
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let head = read_head(&mut c);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        c.write_all(&masked_frame(0x1, b"third")).unwrap();
        assert_eq!(read_frame(&mut c), (0x1, b"third".to_vec()));
        echo(&mut b, Message::text("still served"));
        close_client(b);
    }
}

/// The handshake and the first frames in one write: nothing after the head is lost.
pub fn handshake_and_frames_in_one_write(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
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

/// Frames arriving one byte at a time, and a large frame split at its header and in uneven
/// pieces, are reassembled. (The pauses between writes only pace them, so that the server's
/// reads split where the writes do; nothing waits on them.)
pub fn frames_split_at_every_boundary(backend: &dyn Backend) {
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    s.set_nodelay(true).unwrap();
    let small = masked_frame(0x1, b"one byte at a time");
    for b in &small {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(read_frame(&mut s), (0x1, b"one byte at a time".to_vec()));
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

/// More small frames at once than one turn reads: the connection is served over several
/// turns, in order.
pub fn flood_of_small_frames_stays_in_order(backend: &dyn Backend) {
    const FRAMES: usize = 4000;
    let t = TestServer::start(backend, config());
    let mut s = t.raw_ws();
    let flood: Vec<u8> =
        (0..FRAMES).flat_map(|i| masked_frame(0x2, &[(i % 256) as u8; 1000])).collect();
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

/// Reading pauses while the application holds `ws_max_queue` messages it has not taken, and
/// resumes when it takes them — although no new readiness event comes for bytes already in
/// the socket.
pub fn reading_pauses_at_max_queue_and_resumes_when_taken(backend: &dyn Backend) {
    let app = Arc::new(HoldApp::default());
    let t = TestServer::with_app(backend, ServerConfig { ws_max_queue: 4, ..config() }, app);
    let mut s = t.raw_ws();
    let frames = |range: std::ops::Range<u8>| -> Vec<u8> {
        range.flat_map(|i| masked_frame(0x2, &[i; 10])).collect()
    };
    s.write_all(&frames(0..4)).unwrap();
    wait_until("four messages", || t.app.count() == 4);
    // These arrive but stay in the socket.
    s.write_all(&frames(4..7)).unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(t.app.count(), 4, "reading paused at ws_max_queue");
    let handle = t.app.handles.lock().unwrap()[0].clone();
    for _ in 0..4 {
        handle.message_taken(10);
    }
    wait_until("seven messages", || t.app.count() == 7);
    let got = t.app.messages.lock().unwrap().clone();
    assert_eq!(got, (0..7u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
    // While reading is paused the server cannot see the client leave: take them first.
    for _ in 0..3 {
        handle.message_taken(10);
    }
}

/// Out of file descriptors, the server logs the accept error, backs off, and serves the
/// waiting clients once descriptors are free again.
pub fn emfile_is_logged_and_survived(backend: &dyn Backend) {
    // Alone: no other scenario of this process may need a descriptor meanwhile.
    let _all_fds = FDS.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = TestServer::holding(
        backend,
        ServerConfig { io_threads: 1, ..ServerConfig::default() },
        zcasgi_core::testing::EchoApp::start(),
        None,
        None,
    );
    // Client sockets exist before the limit drops; connecting needs no new descriptor.
    let sockets: Vec<Socket> =
        (0..3).map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap()).collect();
    let limit = FdLimit::lower_to_lowest_free();
    let mut clients: Vec<TcpStream> = sockets
        .into_iter()
        .map(|s| {
            s.connect(&t.addr.into()).unwrap();
            with_timeouts(s.into())
        })
        .collect();
    let logged = t.app.wait_for(IO_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Seen::Log(_, m) if m.starts_with("accept failed")))
    });
    let served_meanwhile = t.server.connection_count();
    drop(limit);
    assert!(logged, "no accept error logged: {:?}", t.app.seen());
    assert_eq!(served_meanwhile, 0);
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&upgrade_request("/")).unwrap();
        assert!(read_head(c).starts_with("HTTP/1.1 101"));
        let msg = format!("client {i}");
        c.write_all(&masked_frame(0x1, msg.as_bytes())).unwrap();
        assert_eq!(read_frame(c), (0x1, msg.into_bytes()));
    }
    t.assert_serving();
}

/// The inboxes of `count` workers: (receiving end, sending end) each.
fn inboxes(count: u16) -> Vec<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    (0..count).map(|_| crate::handoff::inbox_pair().unwrap()).collect()
}

/// Worker `index`'s sockets among the workers of `inboxes`.
fn worker(inboxes: &[(std::os::fd::OwnedFd, std::os::fd::OwnedFd)], index: u16) -> WorkerSockets {
    let count = u16::try_from(inboxes.len()).unwrap();
    let inbox = inboxes[usize::from(index)].0.try_clone().unwrap();
    let peers = inboxes.iter().map(|(_, sending)| sending.try_clone().unwrap()).collect();
    WorkerSockets::new(WorkerSlot { index, count }, inbox, peers).unwrap()
}

/// An Engine.IO polling request of session `sid`, kept alive.
fn polling(sid: &str) -> Vec<u8> {
    format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: test\r\n\r\n")
        .into_bytes()
}

/// Reads one response to a [`polling`] request: its head and its chunked body.
fn read_response(s: &mut impl Read) -> (String, Vec<u8>) {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        head.push_str(&read_head_line(s));
    }
    let mut body = Vec::new();
    if !head.contains("transfer-encoding: chunked") {
        return (head, body);
    }
    loop {
        let size_line = read_head_line(s);
        let size = usize::from_str_radix(size_line.trim_end(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        s.read_exact(&mut chunk).unwrap();
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Sends `count` binary messages of `size` bytes (a pattern seeded with `seed`), then reads
/// their echoes and checks each.
fn echo_all_then_read<S: Read + Write>(ws: &mut WebSocket<S>, count: usize, size: usize, seed: u8) {
    let base = pattern(size + count, seed);
    let payload = |i: usize| &base[i..i + size];
    for i in 0..count {
        ws.send(Message::binary(payload(i).to_vec())).unwrap();
    }
    for i in 0..count {
        let Message::Binary(got) = ws.read().unwrap() else { panic!("expected binary") };
        assert!(got[..] == *payload(i), "message {i} differs");
    }
}

/// Reads one CRLF-terminated line, byte by byte.
fn read_head_line(s: &mut impl Read) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        let mut byte = [0];
        s.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Whether `t` answered the polling request of session `sid`.
fn answered(t: &TestServer, sid: &str) -> bool {
    t.requests().iter().any(|r| r.ends_with(&format!("&sid={sid}")))
}

/// Sticky sessions: every request of an Engine.IO session reaches the worker whose id tags it,
/// whichever worker it reached first. One keep-alive connection (a reverse proxy's upstream
/// connection) carries polling requests of sessions of both workers: each request for the
/// other worker's session hands the connection over, with its bytes; an untagged session is
/// served by whichever worker holds the connection. A WebSocket upgrade of a session goes to
/// its worker too. New sessions stay with the worker that accepted them.
pub fn engineio_sessions_reach_their_worker(backend: &dyn Backend) {
    let inboxes = inboxes(2);
    let workers = [0, 1].map(|i| TestServer::start_worker(backend, config(), worker(&inboxes, i)));
    let mut s = workers[0].tcp();
    let a = |w| tag_session_id("aaaaaaaaaaaaaaaaaaaa", w);
    let b = |w| tag_session_id("bbbbbbbbbbbbbbbbbbbb", w);
    // Which worker holds the connection after each request, and so serves the untagged one.
    for (sid, owner) in [(a(1), 1), (b(0), 0), (b(1), 1), ("untagged".into(), 1), (a(0), 0)] {
        s.write_all(&polling(&sid)).unwrap();
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"/socket.io/");
        assert!(answered(&workers[owner], &sid), "{sid} not answered by worker {owner}");
        assert!(!answered(&workers[1 - owner], &sid), "{sid} answered by both");
    }
    // Two pipelined requests of different workers, in one write.
    let mut two = polling(&a(1));
    two.extend(polling(&b(0)));
    s.write_all(&two).unwrap();
    for _ in 0..2 {
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert_eq!(workers[1].requests().len(), 4);
    assert_eq!(workers[0].requests().len(), 3);
    // The upgrade of a polling session of worker 1, arriving at worker 0.
    let mut ws = workers[0].ws(&format!("/socket.io/?EIO=4&transport=websocket&sid={}", a(1)));
    echo(&mut ws, Message::text("2probe"));
    workers[1].wait_for("the upgrade", |s| s.iter().any(|e| matches!(e, Seen::Connected(..))));
    assert!(!workers[0].app.seen().iter().any(|e| matches!(e, Seen::Connected(..))));
    close_client(ws);
    drop(s);
    // New sessions (handshakes, no `sid`) are created by the worker that accepted them.
    for t in 0..4 {
        let mut s = workers[0].tcp();
        let handshake = format!("GET /socket.io/?EIO=4&transport=polling&t={t} HTTP/1.1\r\n");
        s.write_all(format!("{handshake}Host: test\r\n\r\n").as_bytes()).unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let handshakes = |w: &TestServer| w.requests().iter().filter(|r| r.contains("&t=")).count();
    assert_eq!([handshakes(&workers[0]), handshakes(&workers[1])], [4, 0]);
    for w in &workers {
        w.wait_idle();
    }
}

/// A hand-off to a worker that is not running yet (being replaced) waits in its inbox, and the
/// worker that starts with that inbox serves it.
pub fn a_hand_off_waits_in_the_inbox_for_a_worker_being_replaced(backend: &dyn Backend) {
    let inboxes = inboxes(2);
    let first = TestServer::start_worker(backend, config(), worker(&inboxes, 0));
    let mut s = first.tcp();
    let sid = tag_session_id("cccccccccccccccccccc", 1);
    s.write_all(&polling(&sid)).unwrap();
    wait_until("the hand-off", || first.server.connection_count() == 0);
    let second = TestServer::start_worker(backend, config(), worker(&inboxes, 1));
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(answered(&second, &sid) && !answered(&first, &sid));
    drop(s);
}

/// A hand-off that the owner's inbox has no room for is retried until `handshake_timeout`,
/// then answered 503 by the worker that holds it, which logs a warning; it goes on serving.
pub fn a_hand_off_to_a_full_inbox_is_answered_503(backend: &dyn Backend) {
    let inboxes = inboxes(2);
    // Fill worker 1's inbox (nobody reads it) with hand-offs of one connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (filler, _) = listener.accept().unwrap();
    let sending = std::os::fd::AsFd::as_fd(&inboxes[1].1);
    let filler = std::os::fd::AsFd::as_fd(&filler);
    while crate::handoff::send(
        sending,
        filler,
        &crate::handoff::Origin::default(),
        &[b'x'; 16 * 1024],
    )
    .is_ok()
    {}
    let cfg = ServerConfig { handshake_timeout: Duration::from_millis(300), ..config() };
    let t = TestServer::start_worker(backend, cfg, worker(&inboxes, 0));
    let mut s = t.tcp();
    s.write_all(&polling(&tag_session_id("dddddddddddddddddddd", 1))).unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let warned = |e: &Seen| matches!(e, Seen::Log(LogLevel::Warning, m) if m.contains("worker 1"));
    t.wait_for("the warning", |seen| count(seen, warned) == 1);
    drop(s);
    t.assert_serving();
}

/// Over TLS a connection cannot leave the worker that holds its TLS state: a request for
/// another worker's session is relayed to that worker through a socket pair, and a later
/// request on the connection for a third worker's session moves the pair end on (a plain
/// hand-off), back to the relaying worker included. A WebSocket of another worker's session,
/// upgraded over TLS, echoes large messages through the relay to a reader with a small
/// receive window (back-pressure all the way) and closes cleanly; the client's
/// `close_notify` ends a polling connection, which ends with the server's, and so does the
/// owner's close after a `connection: close` request. New sessions stay where their
/// connection is, as without TLS; every connection and relay is gone at the end.
pub fn over_tls_another_workers_session_is_relayed(backend: &dyn Backend) {
    let tls = TlsFiles::new();
    let inboxes = inboxes(3);
    let workers = [0, 1, 2]
        .map(|i| TestServer::start_worker(backend, tls.config(config()), worker(&inboxes, i)));
    let sid = |w| tag_session_id("eeeeeeeeeeeeeeeeeeee", w);
    let mut s = tls.client(workers[0].tcp());
    for owner in [0, 1, 2, 0, 2] {
        s.write_all(&polling(&sid(owner))).unwrap();
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"/socket.io/");
    }
    assert_eq!(workers.each_ref().map(|w| w.requests().len()), [2, 1, 2]);
    s.conn.send_close_notify();
    s.flush().unwrap();
    let mut rest = Vec::new();
    // The server ends with close_notify too: a clean end of stream.
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    drop(s);
    // The owner ends the connection (`connection: close`): the relay ends it with close_notify.
    let mut s = tls.client(workers[0].tcp());
    let mut last = polling(&sid(1));
    last.splice(last.len() - 2..last.len() - 2, *b"Connection: close\r\n");
    s.write_all(&last).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    drop(s);
    // The upgrade of a session of worker 1, arriving at worker 0 over TLS.
    let stream = tls.client(small_window_client(&workers[0], 8 * 1024));
    let url =
        format!("wss://{}/socket.io/?EIO=4&transport=websocket&sid={}", workers[0].addr, sid(1));
    let (mut ws, _) = tungstenite::client(url, stream).unwrap();
    echo_all_then_read(&mut ws, 8, 256 * 1024, 9);
    close_client(ws);
    let connected = |seen: &[Seen]| seen.iter().any(|e| matches!(e, Seen::Connected(..)));
    workers[1].wait_for("the upgrade", connected);
    assert!(!connected(&workers[0].app.seen()) && !connected(&workers[2].app.seen()));
    for t in 0..2 {
        let mut s = tls.client(workers[0].tcp());
        let handshake = format!("GET /socket.io/?EIO=4&transport=polling&t={t} HTTP/1.1\r\n");
        s.write_all(format!("{handshake}Host: test\r\n\r\n").as_bytes()).unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert_eq!(workers.each_ref().map(|w| w.requests().len()), [4, 2, 2]);
    for w in &workers {
        w.wait_idle();
    }
}

/// The process's descriptor limit lowered so that no new descriptor can be made; restored
/// when dropped.
struct FdLimit(libc::rlimit);

impl FdLimit {
    fn lower_to_lowest_free() -> Self {
        let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `getrlimit` writes one `rlimit` to the valid pointer it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut saved) }, 0);
        // The lowest descriptor number not in use: with the limit set to it, no new one fits.
        let lowest_free = {
            let probe = std::fs::File::open("/dev/null").unwrap();
            std::os::fd::AsRawFd::as_raw_fd(&probe)
        };
        let lowered =
            libc::rlimit { rlim_cur: libc::rlim_t::try_from(lowest_free).unwrap(), ..saved };
        // SAFETY: `setrlimit` reads one `rlimit` from the valid pointer it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lowered) }, 0);
        Self(saved)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        // SAFETY: `setrlimit` reads one `rlimit` from the valid pointer it is given.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const self.0) };
    }
}

/// A Unix stream listener serves WebSockets and plain HTTP as a TCP one does.
pub fn unix_socket_serves_websocket_and_http(backend: &dyn Backend) {
    use std::os::unix::net::{UnixListener, UnixStream};
    let dir = TempDir::new("uds");
    let path = dir.join("zcasgi.sock");
    let app = EchoApp::start();
    let listener = UnixListener::bind(&path).unwrap();
    let server =
        backend.start(Arc::new(config()), vec![listener.into()], app.clone(), None).unwrap();
    let connect = || {
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    };
    let (mut ws, _) = tungstenite::client("ws://localhost/over-uds", connect()).unwrap();
    echo(&mut ws, Message::text("over a unix socket"));
    echo(&mut ws, Message::binary(vec![7u8; 100_000]));
    close_client(ws);
    let mut s = connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(app.wait_for(IO_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Seen::Connected(_, p) if p == "/over-uds"))
    }));
    server.shutdown();
    assert!(server.join(IO_TIMEOUT), "the server did not stop");
}

/// Over TLS, WebSocket echoes (4 MiB to a reader with a small receive window, so that the
/// server's encrypted writes block again and again) and a plain HTTP request arrive intact.
pub fn tls_echo_and_http_with_blocked_writes(backend: &dyn Backend) {
    let tls = TlsFiles::new();
    let t = TestServer::start(backend, tls.config(config()));
    let stream = tls.client(small_window_client(&t, 8 * 1024));
    let (mut ws, _) = tungstenite::client(format!("wss://{}/tls", t.addr), stream).unwrap();
    echo(&mut ws, Message::text("over TLS"));
    echo_all_then_read(&mut ws, 16, 256 * 1024, 5);
    close_client(ws);
    let mut s = tls.client(t.tcp());
    s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    // The server ends with close_notify: a clean end of stream.
    s.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// A plain HTTP client on the TLS port gets a plain-text 400, garbage gets at most an alert,
/// a stalled handshake is closed at `handshake_timeout`; none of it is logged above DEBUG,
/// and the server goes on serving TLS.
pub fn tls_refuses_plain_http_garbage_and_stalls_and_goes_on(backend: &dyn Backend) {
    let tls = TlsFiles::new();
    let cfg = ServerConfig { handshake_timeout: Duration::from_millis(200), ..config() };
    let t = TestServer::start(backend, tls.config(cfg));
    let mut s = t.tcp();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let reply = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("https://"), "{reply}");
    let mut s = t.tcp();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
    let alert = read_to_end(&mut s);
    assert!(alert.is_empty() || alert[0] == 0x15, "{alert:?}");
    let mut s = t.tcp();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let closed = read_to_end(&mut s);
    assert!(closed.is_empty() || closed[0] == 0x15, "{closed:?}");
    let stream = tls.client(t.tcp());
    let (mut ws, _) = tungstenite::client(format!("wss://{}/", t.addr), stream).unwrap();
    echo(&mut ws, Message::text("still serving"));
    close_client(ws);
    let seen = t.app.seen();
    let loud = count(&seen, |e| matches!(e, Seen::Log(level, _) if *level > LogLevel::Debug));
    assert_eq!(loud, 0, "{seen:?}");
}

/// Counts how events arrive, and the batched ones a flush covered.
#[derive(Default)]
struct Counting {
    pushed: AtomicUsize,
    batched: AtomicUsize,
    flushed: AtomicUsize,
}

impl EventSink for Counting {
    fn push(&self, _event: Event) {
        self.pushed.fetch_add(1, Ordering::SeqCst);
    }

    fn push_batched(&self, _event: Event) {
        self.batched.fetch_add(1, Ordering::SeqCst);
    }

    fn flush(&self) {
        self.flushed.store(self.batched.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// An I/O thread delivers its events without waking the application, and wakes it
/// ([`EventSink::flush`]) before it waits for more (`zcasgi_transport::batch`). A server
/// with no I/O thread, whose events are taken after each turn of its loop, delivers them as
/// they come.
pub fn io_threads_wake_the_app_once_per_batch(backend: &dyn Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Arc::new(Counting::default());
    let cfg = Arc::new(ServerConfig { io_threads: 1, ..ServerConfig::default() });
    let server = backend.start(cfg, vec![listener.into()], sink.clone(), None).unwrap();
    let mut client = with_timeouts(TcpStream::connect(addr).unwrap());
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    if server.inline().is_some() {
        wait_until("the request", || sink.pushed.load(Ordering::SeqCst) >= 1);
        assert_eq!(sink.batched.load(Ordering::SeqCst), 0);
    } else {
        wait_until("a flush covering the request", || sink.flushed.load(Ordering::SeqCst) >= 1);
        assert_eq!(sink.pushed.load(Ordering::SeqCst), 0);
    }
    drop(client);
    server.shutdown();
    assert!(server.join(IO_TIMEOUT));
}
