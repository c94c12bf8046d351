//! Reading pauses while the application has `max_queue` messages it has not taken, and resumes
//! when it takes them (the bridge's `message_taken` wakes the connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zcasgi_core::backend::{Backend, ConnHandle, Event, EventSink, ServerConfig};
use zcasgi_tokio::TokioBackend;

/// Accepts every WebSocket and keeps the messages until the test takes them.
#[derive(Default)]
struct HoldingApp {
    handle: Mutex<Option<ConnHandle>>,
    held: Mutex<usize>,
    taken: Mutex<usize>,
}

impl EventSink for HoldingApp {
    fn push(&self, event: Event) {
        match event {
            Event::Connect(info) => {
                info.handle.accept(None, Vec::new());
                *self.handle.lock().unwrap() = Some(info.handle);
            }
            Event::Message { .. } => *self.held.lock().unwrap() += 1,
            _ => {}
        }
    }
}

impl HoldingApp {
    fn delivered(&self) -> usize {
        *self.held.lock().unwrap() + *self.taken.lock().unwrap()
    }

    fn take_all(&self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        *self.taken.lock().unwrap() += held;
        let handle = self.handle.lock().unwrap().clone().expect("connected");
        for _ in 0..held {
            handle.message_taken();
        }
    }

    fn wait_delivered(&self, n: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            if self.delivered() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// A masked single-frame text message.
fn frame(text: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(&mask);
    out.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[test]
fn reading_pauses_at_max_queue_and_resumes_when_messages_are_taken() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = Arc::new(HoldingApp::default());
    let cfg = ServerConfig { ws_max_queue: 2, ..ServerConfig::default() };
    let server = TokioBackend.start(Arc::new(cfg), vec![listener], app.clone()).unwrap();

    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    // One message per read: after two, the server stops reading.
    for i in 0..6 {
        stream.write_all(&frame(format!("m{i}").as_bytes())).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(app.wait_delivered(2));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(app.delivered(), 2, "reading paused at max_queue");

    // Taking them wakes the connection, which reads the rest.
    app.take_all();
    assert!(app.wait_delivered(6), "reading resumed: {} delivered", app.delivered());

    // (While reading is paused the server cannot see the client leave: take them first.)
    app.take_all();
    drop(stream);
    server.shutdown();
    assert!(server.join(Duration::from_secs(4)));
}
