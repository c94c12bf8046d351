//! The backend test matrix (feature `testing`).
//!
//! Every transport scenario is written once, in [`scenarios`], as a function of a
//! `&dyn Backend`; [`backend_matrix!`](crate::backend_matrix) turns each of them into a
//! `#[test]` of the backend's own test suite, so every backend runs every scenario:
//!
//! ```text
//! // zcasgi-mio/tests/matrix.rs
//! zcasgi_transport::backend_matrix!(zcasgi_mio::MioBackend);
//! ```
//!
//! A scenario starts its server on a listener it binds to `127.0.0.1:0` ([`TestServer`]),
//! gives every blocking socket call [`IO_TIMEOUT`], waits for events rather than for fixed
//! times, and stops the server when it ends. The peers are tungstenite or raw bytes.
//!
//! The helpers panic on failure: they are test code.
#![allow(clippy::missing_panics_doc, clippy::must_use_candidate)]

mod apps;
mod inline;
mod memory;
pub mod scenarios;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::{Message, WebSocket};
use zcasgi_core::backend::{Backend, EventSink, RunningServer, ServerConfig, WorkerSockets};
use zcasgi_core::testing::{EchoApp, Seen};

pub use apps::{DenyApp, HoldApp};
pub use inline::Inline;
pub use memory::print_idle_memory;

/// Every blocking socket call and every wait for an event gives up after this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a scenario watches for something that must *not* happen (a server reading or
/// accepting when it should not): an absence raises no event to wait for.
pub const QUIET: Duration = Duration::from_millis(300);

/// Lets scenarios share the process's descriptors (read) or lower the descriptor limit alone
/// (write), whether the harness runs them in one process or one each.
static FDS: RwLock<()> = RwLock::new(());

/// Instantiates every scenario of [`scenarios`](crate::testing::scenarios) as a `#[test]` against a backend value, plus
/// a test that the list is complete.
///
/// ```text
/// zcasgi_transport::backend_matrix!(zcasgi_mio::MioBackend);
/// ```
#[macro_export]
macro_rules! backend_matrix {
    ($backend:expr) => {
        $crate::backend_matrix!(@scenarios $backend;
            binary_echo_at_length_boundaries,
            text_echo_at_length_boundaries,
            subprotocol_is_negotiated,
            connection_ids_start_at_one_per_server,
            app_denial_is_http_403,
            denial_response_with_a_body,
            client_close_code_reaches_the_app,
            app_close_reaches_the_client,
            invalid_upgrade_is_426_and_the_server_goes_on,
            error_response_survives_unread_input,
            unmasked_frame_is_1002_and_the_server_goes_on,
            message_over_max_size_is_1009,
            ping_is_answered_with_pong,
            large_frame_in_pieces_then_one_cut_short,
            many_connections_lose_and_reorder_nothing,
            shutdown_sends_1012_and_join_returns_true,
            join_timeout_drops_connections_that_do_not_close,
            handshake_timeout_is_408,
            silent_client_is_closed_after_the_handshake_timeout,
            keepalive_timeout_is_1011,
            answered_keepalive_pings_keep_the_connection_open,
            peer_that_stops_reading_is_dropped_after_the_timeouts,
            peer_that_never_reads_is_dropped_after_close_timeout,
            ping_flood_from_a_peer_that_does_not_read_is_throttled,
            ping_flood_without_reading_is_closed_with_1011,
            plain_http_request_is_answered_by_the_app,
            pipelined_http_requests_on_one_connection,
            half_closed_peer_message_then_disconnect,
            peer_reset_mid_frame_is_1006,
            writes_blocked_by_a_slow_reader_resume_intact,
            pipelined_large_messages_do_not_deadlock,
            max_connections_pauses_and_resumes_accepting,
            handshake_and_frames_in_one_write,
            frames_split_at_every_boundary,
            flood_of_small_frames_stays_in_order,
            reading_pauses_at_max_queue_and_resumes_when_taken,
            emfile_is_logged_and_survived,
            unix_socket_serves_websocket_and_http,
            tls_echo_and_http_with_blocked_writes,
            tls_refuses_plain_http_garbage_and_stalls_and_goes_on,
            engineio_sessions_reach_their_worker,
            a_hand_off_waits_in_the_inbox_for_a_worker_being_replaced,
            a_hand_off_to_a_full_inbox_is_answered_503,
            over_tls_another_workers_session_is_relayed,
            io_threads_wake_the_app_once_per_batch,
        );
    };
    (@scenarios $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testing::scenarios::$name(&$backend);
            }
        )*

        #[test]
        fn matrix_lists_every_scenario() {
            $crate::testing::assert_complete(&[$(stringify!($name)),*]);
        }
    };
}

/// Checks that `listed` names every scenario function of [`scenarios`] exactly once.
pub fn assert_complete(listed: &[&str]) {
    let source = include_str!("scenarios.rs");
    let mut defined: Vec<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("pub fn "))
        .filter_map(|rest| rest.split_once('(').map(|(name, _)| name))
        .collect();
    defined.sort_unstable();
    let mut listed = listed.to_vec();
    listed.sort_unstable();
    assert_eq!(listed, defined, "backend_matrix! must list every scenario once");
}

/// A backend serving on `127.0.0.1:0`, feeding an application `A` (the [`EchoApp`] unless a
/// scenario brings its own); shut down and joined when dropped.
pub struct TestServer<A: EventSink + 'static = EchoApp> {
    /// The running server.
    pub server: Box<dyn RunningServer>,
    /// The application.
    pub app: Arc<A>,
    /// Where it listens.
    pub addr: SocketAddr,
    _fds: Option<RwLockReadGuard<'static, ()>>,
}

impl<A: EventSink + 'static> std::fmt::Debug for TestServer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TestServer<EchoApp> {
    /// Starts `backend` with `cfg` and an [`EchoApp`].
    pub fn start(backend: &dyn Backend, cfg: ServerConfig) -> Self {
        Self::with_app(backend, cfg, EchoApp::start())
    }

    /// Starts `backend` with `cfg` and an [`EchoApp`] as the worker `worker` says, on a
    /// listener of its own.
    pub fn start_worker(backend: &dyn Backend, cfg: ServerConfig, worker: WorkerSockets) -> Self {
        let fds = FDS.read().unwrap_or_else(PoisonError::into_inner);
        Self::holding(backend, cfg, EchoApp::start(), Some(fds), Some(worker))
    }

    /// The targets of the plain HTTP requests the app answered.
    pub fn requests(&self) -> Vec<String> {
        let target = |s: Seen| match s {
            Seen::Request(_, target) => Some(target),
            _ => None,
        };
        self.app.seen().into_iter().filter_map(target).collect()
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
        echo(&mut ws, Message::text("still there"));
        close_client(ws);
    }
}

impl<A: EventSink + 'static> TestServer<A> {
    /// Starts `backend` with `cfg`, feeding `app`.
    pub fn with_app(backend: &dyn Backend, cfg: ServerConfig, app: Arc<A>) -> Self {
        let fds = FDS.read().unwrap_or_else(PoisonError::into_inner);
        Self::holding(backend, cfg, app, Some(fds), None)
    }

    /// Starts a server holding `fds`, a share of the descriptors (`None`: its caller holds
    /// them all).
    fn holding(
        backend: &dyn Backend,
        cfg: ServerConfig,
        app: Arc<A>,
        fds: Option<RwLockReadGuard<'static, ()>>,
        worker: Option<WorkerSockets>,
    ) -> Self {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        // More than std's 128: the many-connections scenario connects in bursts.
        socket.listen(1024).unwrap();
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let sink: Arc<dyn EventSink> = app.clone();
        let server = backend.start(Arc::new(cfg), vec![listener.into()], sink, worker).unwrap();
        Self { server, app, addr, _fds: fds }
    }

    /// A connected TCP socket with timeouts.
    pub fn tcp(&self) -> TcpStream {
        with_timeouts(TcpStream::connect(self.addr).unwrap())
    }

    /// A tungstenite client on `path`.
    pub fn ws(&self, path: &str) -> WebSocket<TcpStream> {
        self.ws_request(path, |_| {}).0
    }

    /// A tungstenite client on `path`, with a request `edit` can change (headers).
    pub fn ws_request(
        &self,
        path: &str,
        edit: impl FnOnce(&mut Request),
    ) -> (WebSocket<TcpStream>, Response) {
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

    /// Waits until the server has no connection left.
    pub fn wait_idle(&self) {
        wait_until("every connection to close", || self.server.connection_count() == 0);
    }
}

impl<A: EventSink + 'static> Drop for TestServer<A> {
    fn drop(&mut self) {
        self.server.shutdown();
        let joined = self.server.join(IO_TIMEOUT);
        if !std::thread::panicking() {
            assert!(joined, "the server did not stop");
        }
    }
}

/// A directory of its own for one test, removed when dropped.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("zcasgi-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The path of `name` in the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `127.0.0.1` and its key, in PEM files of a [`TempDir`].
#[derive(Debug)]
pub struct TlsFiles {
    dir: TempDir,
    /// The certificate (DER), for the client's roots.
    pub cert_der: Vec<u8>,
}

impl TlsFiles {
    /// Makes the certificate and key (ECDSA P-256, by rcgen).
    pub fn new() -> Self {
        let dir = TempDir::new("tls");
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Self { dir, cert_der: cert.der().to_vec() }
    }

    /// `cfg` serving TLS with this certificate.
    pub fn config(&self, cfg: ServerConfig) -> ServerConfig {
        ServerConfig {
            ssl_certfile: Some(self.dir.join("cert.pem")),
            ssl_keyfile: Some(self.dir.join("key.pem")),
            ..cfg
        }
    }

    /// A TLS client over `tcp` that trusts only this certificate.
    pub fn client(
        &self,
        tcp: TcpStream,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.cert_der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }
}

impl Default for TlsFiles {
    fn default() -> Self {
        Self::new()
    }
}

/// Gives a socket the tests' read and write timeouts.
pub fn with_timeouts(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Polls `cond` until it holds; panics after [`IO_TIMEOUT`].
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + IO_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `msg` and expects it back (skipping pings and pongs, which tungstenite answers).
pub fn echo<S: Read + Write>(ws: &mut WebSocket<S>, msg: Message) {
    ws.send(msg.clone()).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => {}
            got => return assert_eq!(got, msg),
        }
    }
}

/// Closes a client politely and waits for the server's end of stream.
pub fn close_client<S: Read + Write>(mut ws: WebSocket<S>) {
    let _ = ws.close(None);
    read_until_closed(&mut ws);
}

/// Reads (answering the server's close frame on the way) until the server closed the stream.
pub fn read_until_closed<S: Read + Write>(ws: &mut WebSocket<S>) {
    let end = Instant::now() + IO_TIMEOUT;
    while Instant::now() < end {
        if ws.read().is_err() {
            return;
        }
    }
    panic!("the server did not finish the close handshake");
}

/// Reads until a close frame; returns its code and reason.
pub fn read_close<S: Read + Write>(ws: &mut WebSocket<S>) -> (u16, String) {
    loop {
        match ws.read().unwrap() {
            Message::Close(Some(frame)) => return (frame.code.into(), frame.reason.to_string()),
            Message::Close(None) => return (1005, String::new()),
            _ => {}
        }
    }
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

/// Reads everything until a clean end of stream; returns what arrived.
pub fn read_to_end(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("a clean end of stream");
    out
}

/// A client frame (masked) with `opcode` and `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xfe); // masked, 16-bit length
        out.extend_from_slice(&len.to_be_bytes());
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

/// The id of a connection that `seen` reports disconnected with `code`.
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

/// How many of `seen` match `pred`.
pub fn count(seen: &[Seen], pred: impl Fn(&Seen) -> bool) -> usize {
    seen.iter().filter(|s| pred(s)).count()
}
