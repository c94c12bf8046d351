//! The WebSocket behaviour of the mio backend over real sockets, with tungstenite as the peer.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{
    close_client, close_code, disconnected, masked_frame, read_frame, read_head, read_to_end,
    TestServer,
};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;
use zcasgi_core::backend::ServerConfig;
use zcasgi_core::testing::Seen;

const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 1 << 20];

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn binary_echo_at_length_boundaries() {
    let t = TestServer::with_threads(1);
    let mut ws = t.ws("/");
    for (i, len) in SIZES.into_iter().enumerate() {
        let data = pattern(len, i as u8);
        ws.send(Message::binary(data.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(data), "length {len}");
    }
    close_client(ws);
}

#[test]
fn text_echo_at_length_boundaries() {
    let t = TestServer::with_threads(1);
    let mut ws = t.ws("/");
    for len in SIZES {
        // Multi-byte characters, so that reads split code points.
        let text: String = "aé€𝄞"
            .chars()
            .cycle()
            .scan(0, |n, c| {
                *n += c.len_utf8();
                (*n <= len).then_some(c)
            })
            .collect();
        let pad = len - text.len();
        let text = text + &"x".repeat(pad);
        assert_eq!(text.len(), len);
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text), "length {len}");
    }
    close_client(ws);
}

#[test]
fn subprotocol_is_negotiated() {
    let t = TestServer::with_threads(1);
    let (ws, response) = t.ws_request("/chat", |req| {
        req.headers_mut().insert("Sec-WebSocket-Protocol", "chat, superchat".parse().unwrap());
    });
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    close_client(ws);
    t.wait_for("the connect", |s| s.contains(&Seen::Connected(1, "/chat".into())));
}

#[test]
fn app_denial_is_http_403() {
    let t = TestServer::with_threads(1);
    let url = format!("ws://{}/deny", t.addr);
    match tungstenite::client(url, t.tcp()) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status(), 403);
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
    }
    t.assert_serving();
}

#[test]
fn client_close_code_reaches_the_app() {
    let t = TestServer::with_threads(1);
    let mut ws = t.ws("/");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hi"));
    ws.close(Some(CloseFrame { code: CloseCode::from(4321), reason: "done".into() })).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4321),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    t.wait_for("the disconnect", |s| disconnected(s, 4321).is_some());
}

#[test]
fn app_close_reaches_the_client() {
    let t = TestServer::with_threads(1);
    let mut ws = t.ws("/");
    ws.send(Message::text("close:4001:bye")).unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    t.wait_for("the disconnect", |s| disconnected(s, 4001).is_some());
}

#[test]
fn invalid_upgrade_is_426_and_the_server_goes_on() {
    let t = TestServer::with_threads(1);
    let mut s = t.tcp();
    // `Upgrade: websocket` without `Connection: Upgrade` (RFC 6455 §4.2.1).
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    read_to_end(&mut s);
    t.assert_serving();
}

#[test]
fn unmasked_frame_is_1002_and_the_server_goes_on() {
    let t = TestServer::with_threads(1);
    let mut s = t.raw_ws();
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!(opcode, 0x8);
    assert_eq!(close_code(&payload), 1002);
    t.wait_for("the disconnect", |s| disconnected(s, 1002).is_some());
    t.assert_serving();
}

#[test]
fn message_over_max_size_is_1009() {
    let t = TestServer::start(ServerConfig { ws_max_size: 1000, ..ServerConfig::default() });
    let mut ws = t.ws("/");
    ws.send(Message::binary(vec![7u8; 1000])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![7u8; 1000]));
    ws.send(Message::binary(vec![7u8; 1001])).unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a close frame, got {other:?}"),
    }
    t.wait_for("the disconnect", |s| disconnected(s, 1009).is_some());
}

#[test]
fn many_connections_lose_and_reorder_nothing() {
    const CONNS: usize = 200;
    const MESSAGES: usize = 50;
    const CLIENT_THREADS: usize = 20;
    let t = TestServer::with_threads(2);
    std::thread::scope(|scope| {
        for worker in 0..CLIENT_THREADS {
            let t = &t;
            scope.spawn(move || {
                let mut clients: Vec<_> = (0..CONNS / CLIENT_THREADS).map(|_| t.ws("/")).collect();
                // Pipelined: every message of every connection goes out before any is read.
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MESSAGES {
                        let msg = format!("{worker}/{c}/{m}");
                        ws.write(Message::text(msg)).unwrap();
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
    let seen = t.app.seen();
    let messages = seen.iter().filter(|s| matches!(s, Seen::Message(..))).count();
    assert_eq!(messages, CONNS * MESSAGES);
    t.wait_for("every disconnect", |s| {
        s.iter().filter(|e| matches!(e, Seen::Disconnected(..))).count() == CONNS
    });
    // Closed sockets leave once the peers' end of stream arrives.
    assert!(t.app.wait_for(common::IO_TIMEOUT, |_| t.server.connection_count() == 0));
}

#[test]
fn shutdown_sends_1012_and_join_returns_true() {
    let t = TestServer::with_threads(2);
    let mut clients: Vec<_> = (0..6).map(|_| t.ws("/")).collect();
    for ws in &mut clients {
        ws.send(Message::text("ping")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("ping"));
    }
    t.server.shutdown();
    for mut ws in clients {
        match ws.read().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1012),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    }
    assert!(t.server.join(Duration::from_secs(3)));
    assert_eq!(t.server.connection_count(), 0);
    assert!(std::net::TcpStream::connect(t.addr).is_err(), "the listener is closed");
}

#[test]
fn handshake_timeout() {
    let t = TestServer::start(ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let started = Instant::now();
    let mut s = t.tcp();
    s.write_all(b"GET / HTTP/1.1\r\nHost: te").unwrap();
    let head = read_head(&mut s);
    let elapsed = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    read_to_end(&mut s);
    t.assert_serving();
}

#[test]
fn keepalive_timeout_is_1011() {
    let t = TestServer::start(ServerConfig {
        ws_ping_interval: Some(Duration::from_millis(100)),
        ws_ping_timeout: Some(Duration::from_millis(100)),
        ..ServerConfig::default()
    });
    let started = Instant::now();
    // Completes the handshake, then neither reads nor answers pings.
    let mut s = t.raw_ws();
    t.wait_for("the keepalive disconnect", |s| disconnected(s, 1011).is_some());
    assert!(started.elapsed() >= Duration::from_millis(190));
    // The socket holds the ping and the close frame.
    let (opcode, _) = read_frame(&mut s);
    assert_eq!(opcode, 0x9);
    let (opcode, payload) = read_frame(&mut s);
    assert_eq!(opcode, 0x8);
    assert_eq!(close_code(&payload), 1011);
}

#[test]
fn ping_is_answered_with_pong() {
    let t = TestServer::with_threads(1);
    let mut s = t.raw_ws();
    s.write_all(&masked_frame(0x9, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s), (0xA, b"are you there".to_vec()));
}

#[test]
fn plain_http_request_is_answered_by_the_app() {
    let t = TestServer::with_threads(1);
    let mut s = t.tcp();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\n7\r\n/health\r\n0\r\n\r\n"), "{response}");
    t.assert_serving();
    let panics =
        t.app.seen().into_iter().filter(|e| matches!(e, Seen::Log(m) if m.contains("panic")));
    assert_eq!(panics.count(), 0);
}

#[test]
fn pipelined_http_requests_on_one_connection() {
    let t = TestServer::with_threads(1);
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
