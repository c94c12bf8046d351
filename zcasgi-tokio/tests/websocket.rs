//! End-to-end tests of the tokio backend over real sockets on 127.0.0.1, with
//! [`zcasgi_core::testing::EchoApp`] as the application and tungstenite (or raw bytes) as the
//! client. Every socket has a read timeout, so a hanging server fails a test instead of
//! stalling it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use zcasgi_core::backend::{Backend, RunningServer, ServerConfig};
use zcasgi_core::testing::{EchoApp, Seen};
use zcasgi_tokio::TokioBackend;

const TIMEOUT: Duration = Duration::from_secs(4);

type Client = WebSocket<TcpStream>;

struct TestServer {
    app: Arc<EchoApp>,
    server: Box<dyn RunningServer>,
    addr: SocketAddr,
}

impl TestServer {
    fn start(cfg: ServerConfig) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        socket.listen(1024).expect("listen");
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().expect("local address");
        let app = EchoApp::start();
        let server =
            TokioBackend.start(Arc::new(cfg), vec![listener], app.clone()).expect("server start");
        Self { app, server, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn connect(&self, path: &str) -> Client {
        self.connect_request(self.url(path).into_client_request().expect("request"))
    }

    fn connect_request(&self, request: tungstenite::handshake::client::Request) -> Client {
        let (ws, _) = tungstenite::client(request, self.tcp()).expect("handshake");
        ws
    }

    fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(TIMEOUT)).expect("write timeout");
        stream
    }

    fn disconnected_with(&self, code: u16) -> bool {
        self.app.wait_for(TIMEOUT, |seen| {
            seen.iter().any(|s| matches!(s, Seen::Disconnected(_, c) if *c == code))
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
        self.server.join(Duration::from_secs(2));
    }
}

fn config() -> ServerConfig {
    ServerConfig { io_threads: 2, ..ServerConfig::default() }
}

fn echo(ws: &mut Client, msg: Message) {
    ws.send(msg.clone()).expect("send");
    assert_eq!(read_data(ws), msg);
}

/// Reads the next data message, skipping pings and pongs (tungstenite answers pings itself).
fn read_data(ws: &mut Client) -> Message {
    loop {
        match ws.read().expect("read") {
            Message::Ping(_) | Message::Pong(_) => {}
            msg => return msg,
        }
    }
}

/// Reads until the close frame; returns its code and reason.
fn read_close(ws: &mut Client) -> (u16, String) {
    loop {
        match ws.read().expect("read") {
            Message::Close(Some(frame)) => return (frame.code.into(), frame.reason.to_string()),
            Message::Close(None) => return (1005, String::new()),
            _ => {}
        }
    }
}

/// Reads until the server closed the stream, answering its close frame on the way.
fn read_to_end(ws: &mut Client) {
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return,
            Err(tungstenite::Error::Io(e)) if e.kind() != io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

const UPGRADE: &[u8] = b"GET /raw HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Reads an HTTP response head byte by byte, leaving what follows in the socket.
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Opens a WebSocket by hand and returns the raw stream after the 101 response.
fn raw_upgrade(server: &TestServer) -> TcpStream {
    let mut stream = server.tcp();
    stream.write_all(UPGRADE).expect("write request");
    let head = read_head(&mut stream).expect("response");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Reads one unmasked frame: (first byte, payload).
fn read_frame(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n)?;
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n)?;
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).expect("frame length")];
    stream.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

/// Reads frames until a close frame; returns its code.
fn raw_read_close(stream: &mut TcpStream) -> u16 {
    loop {
        let (b0, payload) = read_frame(stream).expect("frame");
        if b0 & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

fn assert_eof(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("clean end of stream");
}

#[test]
fn echoes_text_and_binary_across_length_boundaries() {
    let server = TestServer::start(config());
    let mut ws = server.connect("/echo");
    for len in [0, 125, 126, 65535, 65536, 1 << 20] {
        echo(&mut ws, Message::text("é".repeat(len / 2) + &"a".repeat(len % 2)));
        let binary: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        echo(&mut ws, Message::binary(binary));
    }
    ws.close(None).expect("close");
    read_to_end(&mut ws);
}

#[test]
fn pipelined_large_messages_do_not_deadlock() {
    // The client writes everything before reading: the server must keep reading (and the
    // application keep receiving) while its own writes are blocked.
    let server = TestServer::start(config());
    let mut ws = server.connect("/");
    let count = 8;
    for i in 0..count {
        ws.send(Message::binary(vec![i; 1 << 20])).expect("send");
    }
    for i in 0..count {
        assert_eq!(ws.read().expect("read"), Message::binary(vec![i; 1 << 20]));
    }
}

#[test]
fn chooses_the_offered_subprotocol() {
    let server = TestServer::start(config());
    let mut request = server.url("/").into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "chat".parse().expect("header"));
    let (mut ws, response) = tungstenite::client(request, server.tcp()).expect("handshake");
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    echo(&mut ws, Message::text("hi"));
}

#[test]
fn denied_path_gets_403() {
    let server = TestServer::start(config());
    match tungstenite::client(server.url("/deny"), server.tcp()) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn client_initiated_close_reports_the_clients_code() {
    let server = TestServer::start(config());
    let mut ws = server.connect("/");
    echo(&mut ws, Message::text("hello"));
    ws.close(Some(CloseFrame { code: CloseCode::from(4000), reason: "done".into() }))
        .expect("close");
    assert_eq!(read_close(&mut ws).0, 4000, "the server echoes the code");
    read_to_end(&mut ws);
    assert!(server.disconnected_with(4000), "{:?}", server.app.seen());
}

#[test]
fn application_initiated_close() {
    let server = TestServer::start(config());
    let mut ws = server.connect("/");
    ws.send(Message::text("close:4001:bye")).expect("send");
    assert_eq!(read_close(&mut ws), (4001, "bye".to_owned()));
    read_to_end(&mut ws);
    assert!(server.disconnected_with(4001), "{:?}", server.app.seen());
}

/// Sends `request` on a fresh connection; returns everything until the server closes.
fn http_exchange(server: &TestServer, request: &[u8]) -> String {
    let mut stream = server.tcp();
    stream.write_all(request).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response and end of stream");
    response
}

#[test]
fn failed_upgrade_gets_426_and_server_keeps_serving() {
    let server = TestServer::start(config());
    let response = http_exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    echo(&mut server.connect("/"), Message::text("still here"));
}

#[test]
fn plain_get_gets_an_http_answer_and_server_keeps_serving() {
    // 426 while the driver serves WebSockets only; the application's answer once it serves the
    // `http` scope. Either way the backend writes it and closes as the driver asks.
    let server = TestServer::start(config());
    let response =
        http_exchange(&server, b"GET /plain HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 "), "{response}");
    echo(&mut server.connect("/"), Message::text("still here"));
}

#[test]
fn unmasked_frame_gets_1002_and_server_keeps_serving() {
    let server = TestServer::start(config());
    let mut stream = raw_upgrade(&server);
    stream.write_all(&[0x81, 0x02, b'h', b'i']).expect("write");
    assert_eq!(raw_read_close(&mut stream), 1002);
    assert_eof(&mut stream);
    assert!(server.disconnected_with(1002), "{:?}", server.app.seen());
    echo(&mut server.connect("/"), Message::text("still here"));
}

#[test]
fn oversize_message_gets_1009() {
    let mut cfg = config();
    cfg.ws_max_size = 1000;
    let server = TestServer::start(cfg);
    let mut ws = server.connect("/");
    echo(&mut ws, Message::binary(vec![1; 1000]));
    ws.send(Message::binary(vec![2; 200_000])).expect("send");
    assert_eq!(read_close(&mut ws).0, 1009);
    read_to_end(&mut ws);
    assert!(server.disconnected_with(1009), "{:?}", server.app.seen());
}

#[test]
fn many_concurrent_connections_lose_and_reorder_nothing() {
    const CONNECTIONS: usize = 200;
    const MESSAGES: usize = 50;
    let server = TestServer::start(config());
    let url = server.url("/");
    let addr = server.addr;
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let url = url.clone();
            thread::spawn(move || {
                let stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
                let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
                // Half pipelined, half one at a time.
                for m in 0..MESSAGES {
                    ws.write(Message::text(format!("{c}:{m}"))).expect("write");
                    if m % 2 == 1 {
                        ws.flush().expect("flush");
                        for k in m - 1..=m {
                            assert_eq!(ws.read().expect("read"), Message::text(format!("{c}:{k}")));
                        }
                    }
                }
                ws.close(None).expect("close");
                read_to_end(&mut ws);
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let messages = server.app.seen().iter().filter(|s| matches!(s, Seen::Message(..))).count();
    assert_eq!(messages, CONNECTIONS * MESSAGES);
    let deadline = Instant::now() + TIMEOUT;
    while server.server.connection_count() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.server.connection_count(), 0);
}

#[test]
fn shutdown_closes_with_1012_and_join_succeeds() {
    let server = TestServer::start(config());
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect("/")).collect();
    for ws in &mut clients {
        echo(ws, Message::text("open"));
    }
    // One connection still in its handshake: it is simply closed.
    let mut idle = server.tcp();
    assert!(server.app.wait_for(TIMEOUT, |_| server.server.connection_count() == 4));
    server.server.shutdown();
    for ws in &mut clients {
        assert_eq!(read_close(ws).0, 1012);
        read_to_end(ws);
    }
    assert_eof(&mut idle);
    assert!(server.server.join(TIMEOUT));
    assert_eq!(server.server.connection_count(), 0);
    assert!(TcpStream::connect(server.addr).is_err(), "the listener is closed");
    // The application learns of the disconnects on its own thread.
    let closed =
        |seen: &[Seen]| seen.iter().filter(|s| matches!(s, Seen::Disconnected(_, 1012))).count();
    assert!(server.app.wait_for(TIMEOUT, |seen| closed(seen) == 3), "{:?}", server.app.seen());
}

#[test]
fn join_times_out_and_drops_connections_that_do_not_close() {
    let server = TestServer::start(config());
    // This client completes the handshake and then never reads: the close handshake hangs.
    let _silent = raw_upgrade(&server);
    assert!(server.app.wait_for(TIMEOUT, |s| s.iter().any(|s| matches!(s, Seen::Connected(..)))));
    server.server.shutdown();
    let start = Instant::now();
    assert!(!server.server.join(Duration::from_millis(200)));
    assert!(start.elapsed() < Duration::from_secs(2));
    // The dropped connection still reports its disconnect.
    assert!(server.disconnected_with(1006), "{:?}", server.app.seen());
}

#[test]
fn max_connections_leaves_excess_clients_in_the_backlog() {
    let mut cfg = config();
    cfg.max_connections = 2;
    let server = TestServer::start(cfg);
    let mut first = server.connect("/");
    let mut second = server.connect("/");
    echo(&mut first, Message::text("1"));
    echo(&mut second, Message::text("2"));
    let mut third = server.tcp();
    third.write_all(UPGRADE).expect("write request");
    third.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
    let mut byte = [0u8; 1];
    let err = third.read(&mut byte).expect_err("the third client is not served yet");
    assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err}");
    assert_eq!(server.server.connection_count(), 2);
    first.close(None).expect("close");
    read_to_end(&mut first);
    drop(first);
    third.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let head = read_head(&mut third).expect("response");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo(&mut second, Message::text("still served"));
}

#[test]
fn incomplete_request_hits_the_handshake_timeout() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_millis(200);
    let server = TestServer::start(cfg);
    let start = Instant::now();
    let response = http_exchange(&server, b"GET / HTTP/1.1\r\nHost: test\r\n");
    let elapsed = start.elapsed();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn silent_client_is_closed_after_the_handshake_timeout() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_millis(200);
    let server = TestServer::start(cfg);
    let start = Instant::now();
    // Closed with a 408 or, as an idle keep-alive connection, without a word.
    let response = http_exchange(&server, b"");
    let elapsed = start.elapsed();
    assert!(response.is_empty() || response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(server.app.wait_for(TIMEOUT, |_| server.server.connection_count() == 0));
}

#[test]
fn unanswered_keepalive_ping_closes_with_1011() {
    let mut cfg = config();
    cfg.ws_ping_interval = Some(Duration::from_millis(100));
    cfg.ws_ping_timeout = Some(Duration::from_millis(100));
    let server = TestServer::start(cfg);
    let start = Instant::now();
    let mut stream = raw_upgrade(&server);
    assert!(server.disconnected_with(1011), "{:?}", server.app.seen());
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    let (b0, payload) = read_frame(&mut stream).expect("ping");
    assert_eq!(b0, 0x89);
    assert_eq!(payload.len(), 8);
    assert_eq!(raw_read_close(&mut stream), 1011);
    assert_eof(&mut stream);
}

#[test]
fn answered_keepalive_pings_keep_the_connection_open() {
    let mut cfg = config();
    cfg.ws_ping_interval = Some(Duration::from_millis(50));
    cfg.ws_ping_timeout = Some(Duration::from_millis(100));
    let server = TestServer::start(cfg);
    let mut ws = server.connect("/");
    let start = Instant::now();
    // tungstenite answers pings while reading.
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(400) {
        ws.send(Message::text("tick")).expect("send");
        loop {
            match ws.read().expect("read") {
                Message::Ping(_) => pings += 1,
                msg => {
                    assert_eq!(msg, Message::text("tick"));
                    break;
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(pings >= 2, "{pings} pings");
    assert!(!server.app.seen().iter().any(|s| matches!(s, Seen::Disconnected(..))));
}

#[test]
fn peer_that_stops_reading_is_dropped_after_the_timeouts() {
    let mut cfg = config();
    cfg.ws_ping_interval = Some(Duration::from_millis(100));
    cfg.ws_ping_timeout = Some(Duration::from_millis(100));
    cfg.close_timeout = Duration::from_millis(200);
    let server = TestServer::start(cfg);
    let mut ws = server.connect("/");
    // The echo is more than the socket buffers hold, and the client never reads it (nor the
    // keepalive ping): the server's writes block for good.
    // (On a slow machine the keepalive may fail the connection while this is being sent.)
    let _ = ws.send(Message::binary(vec![7; 12 << 20]));
    assert!(server.disconnected_with(1011), "{:?}", server.app.seen());
    let deadline = Instant::now() + TIMEOUT;
    while server.server.connection_count() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.server.connection_count(), 0, "the stuck connection was dropped");
}

#[test]
fn ping_flood_from_a_peer_that_does_not_read_is_throttled() {
    // Every ping queues a pong. A peer that never reads must not be able to make that queue
    // grow without bound: the server stops reading, and the peer's writes block.
    let server = TestServer::start(config());
    let mut stream = raw_upgrade(&server);
    stream.set_write_timeout(Some(Duration::from_millis(300))).expect("write timeout");
    let ping: Vec<u8> = [0x89, 0x80 | 0x7d, 0, 0, 0, 0].into_iter().chain([0; 125]).collect();
    let batch = ping.repeat(1024);
    let mut written = 0usize;
    let blocked = loop {
        match stream.write(&batch) {
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
