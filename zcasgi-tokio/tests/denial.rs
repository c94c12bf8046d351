//! An ASGI denial response (`websocket.http.response.*`) goes out as written.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use zcasgi_core::backend::{Backend, Event, EventSink, LogLevel, ServerConfig};
use zcasgi_tokio::TokioBackend;

/// Denies every WebSocket with a 401 and a body in two chunks; records error logs.
#[derive(Default)]
struct DenyingApp {
    errors: Mutex<Vec<String>>,
}

impl EventSink for DenyingApp {
    fn push(&self, event: Event) {
        if let Event::Log { level: LogLevel::Error, message } = event {
            self.errors.lock().unwrap().push(message);
        } else if let Event::Connect(info) = event {
            info.handle.respond(401, vec![(b"content-length".to_vec(), b"11".to_vec())]);
            let _ = info.handle.respond_body(Bytes::from_static(b"go "), true);
            let _ = info.handle.respond_body(Bytes::from_static(b"away\r\n\r\n"), false);
        }
    }
}

/// Runs one denied handshake; returns the error logs.
fn deny_once() -> Vec<String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(DenyingApp::default());
    let server =
        TokioBackend.start(Arc::new(ServerConfig::default()), vec![listener], app.clone()).unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.ends_with("\r\n\r\ngo away\r\n\r\n"), "{response:?}");
    server.shutdown();
    assert!(server.join(Duration::from_secs(4)));
    let errors = std::mem::take(&mut *app.errors.lock().unwrap());
    errors
}

#[test]
fn denial_response_with_a_body() {
    deny_once();
}

#[test]
fn denial_response_with_a_body_logs_no_error() {
    assert_eq!(deny_once(), Vec::<String>::new());
}
