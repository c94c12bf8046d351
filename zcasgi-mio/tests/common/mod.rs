//! Helpers shared by the integration tests: a server on `127.0.0.1:0` fed to an `EchoApp`, a
//! tungstenite client, and a raw client that speaks the handshake and frames by hand.
#![allow(dead_code, clippy::missing_panics_doc)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::WebSocket;
use zcasgi_core::backend::{Backend, RunningServer, ServerConfig};
use zcasgi_core::testing::{EchoApp, Seen};
use zcasgi_mio::MioBackend;

/// Every blocking socket call in the tests gives up after this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(4);

/// A running mio server with an echo application.
pub struct TestServer {
    pub server: Box<dyn RunningServer>,
    pub app: Arc<EchoApp>,
    pub addr: SocketAddr,
}

impl TestServer {
    /// Starts a server with `cfg`.
    pub fn start(cfg: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = EchoApp::start();
        let server = MioBackend.start(Arc::new(cfg), vec![listener], app.clone()).unwrap();
        Self { server, app, addr }
    }

    /// Starts a server with the default configuration and `io_threads` threads.
    pub fn with_threads(io_threads: usize) -> Self {
        Self::start(ServerConfig { io_threads, ..ServerConfig::default() })
    }

    /// A connected TCP socket with timeouts.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// A tungstenite client on `path`.
    pub fn ws(&self, path: &str) -> WebSocket<TcpStream> {
        let url = format!("ws://{}{path}", self.addr);
        tungstenite::client(url, self.tcp()).expect("handshake").0
    }

    /// A tungstenite client with a custom request (headers).
    pub fn ws_request(
        &self,
        path: &str,
        edit: impl FnOnce(&mut tungstenite::handshake::client::Request),
    ) -> (WebSocket<TcpStream>, tungstenite::handshake::client::Response) {
        let mut req = format!("ws://{}{path}", self.addr).into_client_request().unwrap();
        edit(&mut req);
        tungstenite::client(req, self.tcp()).expect("handshake")
    }

    /// A raw socket that completed the opening handshake by hand.
    pub fn raw_ws(&self) -> TcpStream {
        let mut s = self.tcp();
        s.write_all(&upgrade_request("/")).unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s
    }

    /// Waits until the app saw something matching `pred`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Seen]) -> bool) {
        assert!(self.app.wait_for(IO_TIMEOUT, pred), "timed out waiting for {what}: {:?}", {
            self.app.seen()
        });
    }

    /// Checks that the server still serves: a fresh client gets an echo.
    pub fn assert_serving(&self) {
        let mut ws = self.ws("/");
        ws.send(tungstenite::Message::text("still there")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still there"));
        close_client(ws);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
        let joined = self.server.join(Duration::from_secs(3));
        if !std::thread::panicking() {
            assert!(joined, "server threads did not stop");
        }
    }
}

/// Closes a client politely and waits for the server's end of stream.
pub fn close_client(mut ws: WebSocket<TcpStream>) {
    let _ = ws.close(None);
    let end = Instant::now() + IO_TIMEOUT;
    while Instant::now() < end {
        if ws.read().is_err() {
            return;
        }
    }
    panic!("the server did not finish the close handshake");
}

/// An opening handshake request for `path`.
pub fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads an HTTP response head (one byte at a time, so nothing after it is consumed).
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) => panic!("reading the response head: {e} (got {head:?})"),
        }
    }
    String::from_utf8(head).unwrap()
}

/// Reads everything until end of stream (or error); returns what arrived.
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A client frame (masked) with `opcode` and `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0xfe); // masked, 16-bit length
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xff); // masked, 64-bit length
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one unmasked server frame; returns its opcode and payload.
pub fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            usize::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            usize::try_from(u64::from_be_bytes(b)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (head[0] & 0x0f, payload)
}

/// The code of a close frame payload.
pub fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Whether `seen` has a disconnect of `id` with `code`.
pub fn disconnected(seen: &[Seen], code: u16) -> Option<u64> {
    seen.iter().find_map(|s| match s {
        Seen::Disconnected(id, c) if *c == code => Some(*id),
        _ => None,
    })
}

/// The id of the most recent connection the app saw.
pub fn last_connected(seen: &[Seen]) -> Option<u64> {
    seen.iter().rev().find_map(|s| match s {
        Seen::Connected(id, _) => Some(*id),
        _ => None,
    })
}
