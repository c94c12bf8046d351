//! Per-connection glue that both backends call: bytes in, events out, bytes out.
//!
//! A backend's loop for one connection is: read into [`Driver::read_buffer`] (or any buffer
//! passed to [`Driver::on_read`]), call the driver, write [`Driver::out_queue`] with vectored
//! writes and report them with [`Driver::on_written`], apply the application's commands with
//! [`Driver::on_commands`] when woken, call [`Driver::on_tick`] at [`Driver::deadline`], and
//! close the socket once [`Driver::is_finished`]. Each call is wrapped in
//! [`std::panic::catch_unwind`]: a panic closes that connection only.
//!
//! # Phases
//!
//! ```text
//! Request ──valid upgrade──► AwaitingApp ──Accept──► Open(Connection) ──► Done
//!  ▲  │                         │  Close/Abort/HttpResponse* (denial) ────►│
//!  │  │── plain request ──► Http ── response complete, keep-alive ──┐      │
//!  │  │                      └── not keep-alive / error / EOF ──────┼─────►│
//!  │  └── bad request / timeout / EOF (4xx response) ───────────────┼─────►│
//!  └──────────────────────── next request (pipelined) ──────────────┘
//! ```

use std::io::IoSlice;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::backend::{
    Command, ConnHandle, ConnId, ConnectInfo, Event, EventSink, LogLevel, Notify, ServerConfig,
};
use crate::frame::close_code;
use crate::handshake::{self, Upgrade};
use crate::http::{self, BodyDecoder, ResponseWriter};
use crate::outq::OutQueue;
use crate::protocol::{self, Connection};

/// Most bytes buffered from a client that sends data before the application accepted it, or
/// pipelined behind an HTTP request that is still being answered.
const MAX_EARLY_DATA: usize = 64 * 1024;

/// Most slices handed to one vectored write.
pub const MAX_IOVECS: usize = 64;

#[derive(Debug)]
enum Phase {
    /// Reading the request head.
    Request { buf: BytesMut, deadline: Instant },
    /// The application decides; early frames from the client wait in `early`.
    AwaitingApp { upgrade: Box<Upgrade>, early: BytesMut, eof: bool },
    /// Writing a denial response to a WebSocket handshake.
    Denying(ResponseWriter),
    /// Serving a plain HTTP request.
    Http(Box<Exchange>),
    /// The WebSocket is open (or closing).
    Open(Box<Connection>),
    /// Nothing more to do but write what is queued and close.
    Done,
}

/// One HTTP request and its response.
#[derive(Debug)]
struct Exchange {
    decoder: BodyDecoder,
    /// Received bytes not yet decoded: the rest of the body, then pipelined requests.
    buf: BytesMut,
    /// The final [`Event::HttpBody`] has been delivered.
    body_sent: bool,
    response: Option<ResponseWriter>,
    keep_alive: bool,
    head: bool,
    http_minor: u8,
}

/// One connection's protocol state, from the first byte to the close.
pub struct Driver {
    id: ConnId,
    cfg: Arc<ServerConfig>,
    sink: Arc<dyn EventSink>,
    handle: ConnHandle,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    phase: Phase,
    /// Output before the WebSocket opens (HTTP responses).
    out: OutQueue,
    /// The application has been told about this connection and awaits a disconnect.
    announced: bool,
    deadline: Option<Instant>,
    /// Once the application is done with the connection, the peer gets `close_timeout` from
    /// the last write progress to take what is left; then it is dropped.
    drain_deadline: Option<Instant>,
    /// The latest time passed in by the backend.
    now: Instant,
    commands: Vec<Command>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.id)
            .field("phase", &self.phase)
            .field("out", &self.out.len())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for a freshly accepted connection.
    pub fn new(
        id: ConnId,
        cfg: Arc<ServerConfig>,
        sink: Arc<dyn EventSink>,
        notify: Box<dyn Notify>,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        now: Instant,
    ) -> Self {
        let deadline = now + cfg.handshake_timeout;
        let handle = ConnHandle::new(id, &cfg, notify);
        Self {
            id,
            cfg,
            sink,
            handle,
            client,
            server,
            phase: Phase::Request { buf: BytesMut::new(), deadline },
            out: OutQueue::new(),
            announced: false,
            deadline: Some(deadline),
            drain_deadline: None,
            now,
            commands: Vec::new(),
        }
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// A buffer of the connection's own to read into, when it is mid-frame or mid-request.
    /// `None`: read into any buffer and pass it to [`Driver::on_read`].
    pub fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        match &mut self.phase {
            Phase::Open(conn) => conn.read_buffer(),
            Phase::Request { buf, .. } if !buf.is_empty() => Some(buf),
            Phase::Http(x) if !x.buf.is_empty() => Some(&mut x.buf),
            _ => None,
        }
    }

    /// Processes bytes read into `input` (which is emptied).
    pub fn on_read(&mut self, input: &mut BytesMut, now: Instant) {
        self.now = now;
        self.guard(|d| d.read(Some(input), now));
    }

    /// Processes bytes read into [`Driver::read_buffer`].
    pub fn on_read_buffered(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| d.read(None, now));
    }

    /// The peer closed its side of the stream.
    pub fn on_eof(&mut self) {
        self.guard(Self::eof);
    }

    /// The socket failed (reset, broken pipe): nothing more can be written.
    pub fn on_io_error(&mut self, err: &std::io::Error) {
        self.guard(|d| {
            d.log(LogLevel::Debug, format!("connection {}: {err}", d.id));
            d.eof();
            // Nothing queued will be written: release what the application's bytes held.
            let mut released = d.out.clear();
            if let Phase::Open(conn) = &mut d.phase {
                released += conn.out_queue().clear();
            }
            d.handle.release(released);
            d.phase = Phase::Done;
        });
    }

    /// Applies the commands the application queued through the [`ConnHandle`].
    pub fn on_commands(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| {
            let mut cmds = std::mem::take(&mut d.commands);
            d.handle.take_commands(&mut cmds);
            for cmd in cmds.drain(..) {
                d.apply(cmd, now);
            }
            d.commands = cmds;
            // A wake-up may also mean the application caught up: deliver buffered body.
            d.http_read();
        });
    }

    /// Advances timers to `now`.
    pub fn on_tick(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| d.tick(now));
    }

    /// Starts closing because the server shuts down.
    pub fn on_shutdown(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| match &mut d.phase {
            Phase::Open(conn) => {
                let _ = conn.send_close(d.cfg.shutdown_close_code, "");
                d.after_protocol(now);
            }
            Phase::Request { .. } => d.phase = Phase::Done,
            Phase::AwaitingApp { .. } => d.reject(503, "server shutting down"),
            // Let the request finish; the connection closes after its response.
            Phase::Http(x) => x.keep_alive = false,
            Phase::Denying(_) | Phase::Done => {}
        });
    }

    /// The bytes to write next.
    pub fn out_queue(&mut self) -> &mut OutQueue {
        match &mut self.phase {
            Phase::Open(conn) if self.out.is_empty() => conn.out_queue(),
            _ => &mut self.out,
        }
    }

    /// Fills `dst` with what to write next; returns how many slices it filled.
    pub fn io_slices<'a>(&'a mut self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out_queue().io_slices(dst)
    }

    /// Whether anything is waiting to be written.
    #[must_use]
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty() || matches!(&self.phase, Phase::Open(c) if c.has_output())
    }

    /// Reports `n` bytes written from [`Driver::io_slices`].
    pub fn on_written(&mut self, n: usize) {
        self.guard(|d| {
            let released = d.out_queue().advance(n);
            if n > 0 && d.drain_deadline.is_some() {
                d.drain_deadline = Some(d.now + d.cfg.protocol.close_timeout);
            }
            if d.handle.release(released) {
                d.sink.push(Event::Writable { id: d.id });
            }
            d.settle();
        });
    }

    /// Whether the backend should read from the socket now.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        match &self.phase {
            Phase::Request { .. } | Phase::Denying(_) => true,
            Phase::AwaitingApp { early, eof, .. } => !eof && early.len() < MAX_EARLY_DATA,
            Phase::Http(x) => {
                if x.decoder.is_done() {
                    // Keep reading (to notice a client that leaves), within a bound.
                    x.buf.len() < MAX_EARLY_DATA
                } else {
                    !self.handle.is_read_paused()
                }
            }
            // Once our close frame is out, the peer's reply must be read even if the
            // application stopped taking messages (data frames are discarded then).
            Phase::Open(conn) => {
                // Output the application did not send (pongs, close frames) must not grow
                // without bound because a peer sends pings and never reads.
                let unaccounted = conn.out_len().saturating_sub(self.handle.queued_bytes());
                !conn.is_closed()
                    && (!conn.is_open() || !self.handle.is_read_paused())
                    && unaccounted <= self.cfg.write_high_water
            }
            Phase::Done => false,
        }
    }

    /// Whether the connection is finished: everything is written and the socket can be closed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done) && !self.wants_write()
    }

    /// When [`Driver::on_tick`] should next be called.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        match (self.deadline, self.drain_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The application's handle on this connection.
    #[must_use]
    pub fn handle(&self) -> &ConnHandle {
        &self.handle
    }

    // ---- internals ----

    fn guard(&mut self, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            // The state may be inconsistent: drop it and close with 1011 (or 500).
            let was_open = matches!(self.phase, Phase::Open(_));
            self.out.clear();
            if was_open {
                self.out.push_bytes(Bytes::from_static(&[0x88, 0x02, 0x03, 0xf3]), 0);
            } else if !matches!(self.phase, Phase::Done | Phase::Denying(_))
                && !matches!(&self.phase, Phase::Http(x) if x.response.is_some())
            {
                let mut out = Vec::new();
                handshake::write_reject(&mut out, 500, "internal server error");
                self.out.push_bytes(Bytes::from(out), 0);
            }
            self.phase = Phase::Done;
            self.log(LogLevel::Error, format!("connection {}: panic on an I/O thread", self.id));
            self.disconnect(close_code::INTERNAL_ERROR, String::new());
        }
        if self.handle.is_closed() && self.wants_write() {
            if self.drain_deadline.is_none() {
                self.drain_deadline = Some(self.now + self.cfg.protocol.close_timeout);
            }
        } else {
            self.drain_deadline = None;
        }
    }

    fn log(&self, level: LogLevel, message: String) {
        self.sink.push(Event::Log { level, message });
    }

    fn disconnect(&mut self, code: u16, reason: String) {
        self.handle.mark_closed();
        if std::mem::take(&mut self.announced) {
            self.sink.push(Event::Disconnect { id: self.id, code, reason });
        }
    }

    fn read(&mut self, input: Option<&mut BytesMut>, now: Instant) {
        match &mut self.phase {
            Phase::Request { buf, .. } => {
                if let Some(input) = input {
                    if buf.is_empty() {
                        std::mem::swap(buf, input);
                    } else {
                        buf.extend_from_slice(input);
                        input.clear();
                    }
                }
                self.parse_request();
            }
            Phase::AwaitingApp { early, .. } => {
                if let Some(input) = input {
                    early.extend_from_slice(input);
                    input.clear();
                }
            }
            Phase::Http(x) => {
                if let Some(input) = input {
                    if x.buf.is_empty() {
                        std::mem::swap(&mut x.buf, input);
                    } else {
                        x.buf.extend_from_slice(input);
                        input.clear();
                    }
                }
                self.http_read();
            }
            Phase::Denying(_) | Phase::Done => {
                if let Some(input) = input {
                    input.clear();
                }
            }
            Phase::Open(conn) => {
                let result = match input {
                    Some(input) => conn.receive_data(input),
                    None => conn.receive_buffered(),
                };
                if let Err(e) = result {
                    self.log(LogLevel::Debug, format!("connection {}: {e}", self.id));
                }
                self.after_protocol(now);
            }
        }
    }

    fn parse_request(&mut self) {
        let Phase::Request { buf, .. } = &mut self.phase else { return };
        let parsed = match handshake::parse_request(buf, &self.cfg.handshake) {
            Ok(None) => return,
            Ok(Some(p)) => p,
            Err(e) => {
                self.log(LogLevel::Debug, format!("connection {}: {e}", self.id));
                self.reject(e.status(), &e.to_string());
                return;
            }
        };
        let (request, head_len) = parsed;
        let _ = buf.split_to(head_len);
        let rest = std::mem::take(buf);
        if !request.is_websocket_upgrade() {
            self.start_http(request, rest);
            return;
        }
        let upgrade = match handshake::validate_upgrade(&request) {
            Ok(u) => u,
            Err(e) => {
                self.log(LogLevel::Debug, format!("connection {}: {e}", self.id));
                self.reject(e.status(), &e.to_string());
                return;
            }
        };
        self.phase =
            Phase::AwaitingApp { upgrade: Box::new(upgrade.clone()), early: rest, eof: false };
        self.deadline = None;
        self.announced = true;
        let info = ConnectInfo {
            id: self.id,
            handle: self.handle.clone(),
            request,
            upgrade: Some(upgrade),
            client: self.client,
            server: self.server,
        };
        self.sink.push(Event::Connect(Box::new(info)));
    }

    fn start_http(&mut self, request: handshake::Request, rest: BytesMut) {
        let framing = http::request_framing(&request, self.cfg.http_max_body);
        let expect = http::expects_continue(&request);
        let (framing, expect) = match (framing, expect) {
            (Ok(f), Ok(e)) => (f, e),
            (Err(e), _) | (_, Err(e)) => {
                self.log(LogLevel::Debug, format!("connection {}: {e}", self.id));
                self.reject(e.status(), &e.to_string());
                return;
            }
        };
        if expect && framing != http::RequestFraming::Length(0) {
            self.out.push_bytes(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"), 0);
        }
        let exchange = Exchange {
            decoder: BodyDecoder::new(framing, self.cfg.http_max_body),
            buf: rest,
            body_sent: false,
            response: None,
            keep_alive: http::keep_alive(&request),
            head: request.method == "HEAD",
            http_minor: request.http_minor,
        };
        self.phase = Phase::Http(Box::new(exchange));
        self.deadline = None;
        self.announced = true;
        let info = ConnectInfo {
            id: self.id,
            handle: self.handle.clone(),
            request,
            upgrade: None,
            client: self.client,
            server: self.server,
        };
        self.sink.push(Event::HttpRequest(Box::new(info)));
        self.http_read();
    }

    /// Decodes what the current request's body has in the buffer and delivers it.
    fn http_read(&mut self) {
        loop {
            let Phase::Http(x) = &mut self.phase else { return };
            if x.body_sent || self.handle.is_read_paused() {
                return;
            }
            let (body, more) = match x.decoder.decode(&mut x.buf) {
                Ok(Some(body)) => (body, !x.decoder.is_done()),
                Ok(None) if x.decoder.is_done() => (Bytes::new(), false),
                Ok(None) => return,
                Err(e) => {
                    let started = x.response.is_some();
                    self.log(LogLevel::Debug, format!("connection {}: {e}", self.id));
                    if started {
                        self.phase = Phase::Done;
                        self.disconnect(close_code::ABNORMAL, String::new());
                    } else {
                        self.reject(e.status(), &e.to_string());
                    }
                    return;
                }
            };
            x.body_sent = !more;
            self.handle.message_delivered();
            self.sink.push(Event::HttpBody { id: self.id, body, more });
        }
    }

    /// The response is complete: serve the next request on this connection, or close.
    fn finish_exchange(&mut self, now: Instant) {
        let Phase::Http(x) = &mut self.phase else { return };
        let reuse = x.keep_alive
            && x.body_sent
            && x.response.as_ref().is_some_and(ResponseWriter::keep_alive);
        self.announced = false;
        if reuse {
            let buf = std::mem::take(&mut x.buf);
            self.phase = Phase::Request { buf, deadline: now + self.cfg.keep_alive_timeout };
            self.deadline = Some(now + self.cfg.keep_alive_timeout);
            self.parse_request();
        } else {
            self.phase = Phase::Done;
            self.deadline = None;
            self.handle.mark_closed();
        }
    }

    fn reject(&mut self, status: u16, message: &str) {
        let mut out = Vec::new();
        handshake::write_reject(&mut out, status, message);
        self.out.push_bytes(Bytes::from(out), 0);
        self.phase = Phase::Done;
        self.deadline = None;
        self.disconnect(close_code::ABNORMAL, String::new());
    }

    fn eof(&mut self) {
        match &mut self.phase {
            Phase::Open(conn) => {
                conn.receive_eof();
                self.drain_events();
                self.settle();
            }
            Phase::AwaitingApp { eof, .. } => {
                // The application still decides; it learns of the disconnect now.
                *eof = true;
                self.disconnect(close_code::ABNORMAL, String::new());
            }
            Phase::Request { buf, .. } if buf.is_empty() => {
                // An idle keep-alive connection closed by the client: nothing to report.
                self.phase = Phase::Done;
                self.handle.mark_closed();
            }
            _ => {
                self.phase = Phase::Done;
                self.disconnect(close_code::ABNORMAL, String::new());
            }
        }
    }

    fn apply(&mut self, cmd: Command, now: Instant) {
        match (&mut self.phase, cmd) {
            (Phase::Open(conn), Command::Send { text, payload }) => {
                let len = payload.len();
                if conn.send_message(text, payload, len).is_err() {
                    self.handle.release(len);
                }
            }
            (_, Command::Send { payload, .. }) => {
                // Not open (any more): the bytes will never be written.
                self.handle.release(payload.len());
            }
            (Phase::Open(conn), Command::Close { code, reason }) => {
                let (code, reason) = if protocol::check_close(code, &reason).is_ok() {
                    (code, reason)
                } else {
                    (close_code::INTERNAL_ERROR, String::new())
                };
                let _ = conn.send_close(code, &reason);
                self.after_protocol(now);
            }
            (Phase::Open(conn), Command::Abort) => {
                let _ = conn.send_close(close_code::INTERNAL_ERROR, "");
                self.after_protocol(now);
            }
            (Phase::AwaitingApp { .. }, Command::Accept { subprotocol, headers }) => {
                self.accept(subprotocol.as_deref(), &headers, now);
            }
            (Phase::AwaitingApp { .. }, Command::Close { .. }) => self.reject(403, "forbidden"),
            (Phase::AwaitingApp { .. }, Command::Abort) => {
                self.reject(500, "internal server error");
            }
            (Phase::AwaitingApp { .. }, Command::HttpResponseStart { status, headers }) => {
                let w = ResponseWriter::start(&mut self.out, status, &headers, false, false, 1);
                self.phase = Phase::Denying(w);
            }
            (Phase::Denying(w), Command::HttpResponseBody { body, more }) => {
                let len = body.len();
                let unqueued = w.body(&mut self.out, body, more, len);
                self.handle.release(unqueued);
                if w.is_finished() {
                    self.phase = Phase::Done;
                    self.disconnect(close_code::ABNORMAL, String::new());
                }
            }
            (Phase::Denying(_), Command::Abort) => {
                // The response is broken half way: all we can do is close.
                self.phase = Phase::Done;
                self.disconnect(close_code::ABNORMAL, String::new());
            }
            (Phase::Http(x), Command::HttpResponseStart { status, headers })
                if x.response.is_none() =>
            {
                x.response = Some(ResponseWriter::start(
                    &mut self.out,
                    status,
                    &headers,
                    x.keep_alive,
                    x.head,
                    x.http_minor,
                ));
            }
            (Phase::Http(x), Command::HttpResponseBody { body, more }) => {
                let len = body.len();
                let Some(w) = x.response.as_mut() else {
                    self.handle.release(len);
                    return;
                };
                let unqueued = w.body(&mut self.out, body, more, len);
                self.handle.release(unqueued);
                if w.is_finished() {
                    self.finish_exchange(now);
                }
            }
            (Phase::Http(x), Command::Abort) => {
                if x.response.is_none() {
                    self.reject(500, "internal server error");
                } else {
                    self.phase = Phase::Done;
                    self.disconnect(close_code::ABNORMAL, String::new());
                }
            }
            (_, Command::HttpResponseBody { body, .. }) => {
                self.handle.release(body.len());
            }
            // Anything else is a command that the state makes meaningless (a second close, an
            // accept after close): the bridge has already rejected the misuse in Python.
            _ => {}
        }
    }

    fn accept(&mut self, subprotocol: Option<&str>, headers: &[(Vec<u8>, Vec<u8>)], now: Instant) {
        let Phase::AwaitingApp { upgrade, early, eof } =
            std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        // RFC 7692 §5: accept the first permessage-deflate offer we can honour, if enabled.
        let deflate = if self.cfg.protocol.per_message_deflate {
            crate::deflate::negotiate(&upgrade.extensions)
        } else {
            None
        };
        let extensions = deflate.as_ref().map(crate::deflate::DeflateParams::to_header);
        let mut head = Vec::with_capacity(256);
        handshake::write_accept(&mut head, &upgrade, subprotocol, extensions.as_deref(), headers);
        self.out.push_bytes(Bytes::from(head), 0);
        let conn = match deflate {
            Some(params) => Connection::with_deflate(self.cfg.protocol.clone(), params),
            None => Connection::new(self.cfg.protocol.clone()),
        };
        self.phase = Phase::Open(Box::new(conn));
        if eof {
            // The client left before the accept: nothing will be read.
            self.eof();
            return;
        }
        if !early.is_empty() {
            let mut early = early;
            self.read(Some(&mut early), now);
        }
        self.tick(now);
    }

    fn tick(&mut self, now: Instant) {
        if self.drain_deadline.is_some_and(|at| now >= at) {
            // The peer stopped taking our output: give up on it.
            self.log(LogLevel::Debug, format!("connection {}: peer stopped reading", self.id));
            let mut released = self.out.clear();
            if let Phase::Open(conn) = &mut self.phase {
                released += conn.out_queue().clear();
            }
            self.handle.release(released);
            self.phase = Phase::Done;
            self.deadline = None;
            self.drain_deadline = None;
            return;
        }
        match &mut self.phase {
            Phase::Request { deadline, buf } => {
                if now >= *deadline && buf.is_empty() && !self.announced {
                    // An idle keep-alive connection: close without a response.
                    self.phase = Phase::Done;
                    self.deadline = None;
                    self.handle.mark_closed();
                } else if now >= *deadline {
                    self.log(LogLevel::Debug, format!("connection {}: handshake timeout", self.id));
                    self.reject(408, "request timeout");
                } else {
                    self.deadline = Some(*deadline);
                }
            }
            Phase::Open(conn) => {
                self.deadline = conn.on_tick(now);
                self.drain_events();
                self.settle();
            }
            _ => self.deadline = None,
        }
    }

    /// After the protocol state machine ran: deliver its events, re-arm its timers.
    fn after_protocol(&mut self, now: Instant) {
        self.drain_events();
        if let Phase::Open(conn) = &mut self.phase {
            self.deadline = conn.on_tick(now);
        }
        self.drain_events();
        self.settle();
    }

    fn drain_events(&mut self) {
        let Phase::Open(conn) = &mut self.phase else { return };
        while let Some(ev) = conn.next_event() {
            match ev {
                protocol::Event::Message(message) => {
                    self.handle.message_delivered();
                    self.sink.push(Event::Message { id: self.id, message });
                }
                protocol::Event::Closed { code, reason } => {
                    self.handle.mark_closed();
                    if std::mem::take(&mut self.announced) {
                        self.sink.push(Event::Disconnect { id: self.id, code, reason });
                    }
                }
                protocol::Event::Ping(_) | protocol::Event::Pong(_) => {}
            }
        }
    }

    /// Moves an open connection whose protocol has closed to `Done`, keeping its output.
    fn settle(&mut self) {
        if let Phase::Open(conn) = &mut self.phase {
            if conn.is_closed() {
                // Keep the bytes it still has to write (the close frame).
                let mut q = std::mem::take(conn.out_queue());
                self.out.append(&mut q);
                self.phase = Phase::Done;
                self.deadline = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SendState;
    use crate::frame::{apply_mask_bytes, FrameHeader, HeaderBytes, OpCode};
    use crate::protocol::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

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
        h.message_taken();
        assert_eq!(h.send(false, Bytes::from_static(b"pong")), SendState::Ready);
        d.on_commands(now);
        assert_eq!(output(&mut d), [0x82, 4, b'p', b'o', b'n', b'g']);
        assert_eq!(h.queued_bytes(), 0);
        read(&mut d, &client_frame(8, &[0x03, 0xe9]), now);
        assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xe9]);
        let events = sink.take();
        assert!(matches!(&events[..], [Event::Disconnect { id: 7, code: 1001, .. }]), "{events:?}");
        assert!(d.is_finished());
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

    #[test]
    fn bad_requests_get_statuses() {
        for (req, status) in [
            (&b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"[..], "426"),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", "413"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
            (b"BAD\x01 / HTTP/1.1\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ] {
            let (mut d, sink, _, now) = setup(ServerConfig::default());
            read(&mut d, req, now);
            let out = String::from_utf8(output(&mut d)).unwrap();
            assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
            assert!(d.is_finished());
            assert!(sink.take().iter().all(|e| matches!(e, Event::Log { .. })));
        }
    }

    #[test]
    fn handshake_timeout() {
        let (mut d, _sink, _, now) = setup(ServerConfig {
            handshake_timeout: Duration::from_millis(100),
            ..ServerConfig::default()
        });
        read(&mut d, b"GET / HTTP/1.1\r\n", now);
        assert_eq!(d.deadline(), Some(now + Duration::from_millis(100)));
        d.on_tick(now + Duration::from_millis(100));
        assert!(String::from_utf8(output(&mut d)).unwrap().starts_with("HTTP/1.1 408 "));
        assert!(d.is_finished());
    }

    #[test]
    fn back_pressure_both_ways() {
        let (mut d, sink, notified, now) = setup(ServerConfig {
            max_queue: 2,
            write_high_water: 10,
            write_low_water: 4,
            ..ServerConfig::default()
        });
        let h = connect(&mut d, &sink, now);
        h.accept(None, vec![]);
        d.on_commands(now);
        output(&mut d);
        // Inbound: the second undelivered message pauses reading; taking one resumes it.
        let mut two = client_frame(2, b"a");
        two.extend(client_frame(2, b"b"));
        read(&mut d, &two, now);
        assert!(!d.wants_read());
        let before = notified.load(Ordering::SeqCst);
        h.message_taken();
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

    #[test]
    fn shutdown_sends_1012_and_waits_for_the_peer() {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let h = connect(&mut d, &sink, now);
        h.accept(None, vec![]);
        d.on_commands(now);
        output(&mut d);
        d.on_shutdown(now);
        assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xf4]);
        assert!(!d.is_finished(), "waits for the client's close frame");
        read(&mut d, &client_frame(8, &[0x03, 0xf4]), now);
        assert!(d.is_finished());
        assert!(matches!(&sink.take()[..], [Event::Disconnect { code: 1012, .. }]));
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
        let h = connect(&mut d, &sink, now);
        h.accept(None, vec![]);
        d.on_commands(now);
        output(&mut d);
        read(&mut d, &[0x81, 0x00], now); // unmasked
        assert_eq!(output(&mut d), [0x88, 2, 0x03, 0xea]);
        assert!(d.is_finished());
        let events = sink.take();
        assert!(
            events.iter().any(|e| matches!(e, Event::Disconnect { code: 1002, .. })),
            "{events:?}"
        );
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
        let two =
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz";
        let (h, events) = http_request(&mut d, &sink, two, now);
        assert_eq!(body_of(&events), (vec![], true));
        h.message_taken();
        // The second request waits until the first response is complete.
        let out = respond(&mut d, &h, b"first", now);
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("5\r\nfirst\r\n0\r\n\r\n"),
            "{out}"
        );
        let mut events = sink.take();
        let Event::HttpRequest(info) = events.remove(0) else { panic!("{events:?}") };
        assert_eq!(info.request.path(), "/b");
        assert_eq!(body_of(&events), (b"xyz".to_vec(), true));
        h.message_taken();
        respond(&mut d, &h, b"second", now);
        assert!(!d.is_finished(), "kept alive");
        // Idle past the keep-alive timeout: closed without a response.
        d.on_tick(now + Duration::from_secs(5));
        assert!(d.is_finished());
        assert!(output(&mut d).is_empty());
    }

    #[test]
    fn http_chunked_upload_with_100_continue() {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let head =
            b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (h, events) = http_request(&mut d, &sink, head, now);
        assert!(events.is_empty());
        assert_eq!(output(&mut d), b"HTTP/1.1 100 Continue\r\n\r\n");
        read(&mut d, b"3\r\nabc\r\n0\r\n\r\n", now);
        let events = sink.take();
        assert_eq!(body_of(&events), (b"abc".to_vec(), true));
        for _ in &events {
            h.message_taken();
        }
        let out = respond(&mut d, &h, b"", now);
        assert!(out.ends_with("transfer-encoding: chunked\r\n\r\n0\r\n\r\n"), "{out}");
    }

    #[test]
    fn http_head_and_http10() {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let (h, _) = http_request(&mut d, &sink, b"HEAD / HTTP/1.0\r\n\r\n", now);
        h.message_taken();
        h.respond(200, vec![(b"content-length".to_vec(), b"5".to_vec())]);
        let _ = h.respond_body(Bytes::from_static(b"hello"), false);
        d.on_commands(now);
        let out = String::from_utf8(output(&mut d)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n");
        assert!(d.is_finished());
        assert_eq!(h.queued_bytes(), 0);
    }

    #[test]
    fn http_client_leaves_mid_body() {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let (_h, _) =
            http_request(&mut d, &sink, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", now);
        d.on_eof();
        let events = sink.take();
        assert!(matches!(events.last(), Some(Event::Disconnect { code: 1006, .. })), "{events:?}");
        assert!(d.is_finished());
    }

    #[test]
    fn http_app_failure() {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\n\r\n", now);
        h.abort();
        d.on_commands(now);
        let out = String::from_utf8(output(&mut d)).unwrap();
        assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
        assert!(d.is_finished());
        // After the response started, a failure can only close the connection.
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let (h, _) = http_request(&mut d, &sink, b"GET / HTTP/1.1\r\n\r\n", now);
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
        let (mut d, sink, _, now) = setup(ServerConfig { max_queue: 1, ..ServerConfig::default() });
        let (h, events) = http_request(
            &mut d,
            &sink,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n",
            now,
        );
        assert_eq!(body_of(&events), (b"a".to_vec(), false), "one piece, then reading pauses");
        assert!(!d.wants_read());
        h.message_taken();
        d.on_commands(now); // the backend's wake-up after message_taken
        assert_eq!(body_of(&sink.take()), (b"b".to_vec(), false));
    }

    #[test]
    fn peer_that_stops_reading_is_dropped_after_close_timeout() {
        let (mut d, sink, _, now) = setup(ServerConfig::default());
        let h = connect(&mut d, &sink, now);
        h.accept(None, vec![]);
        d.on_commands(now);
        output(&mut d);
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
            setup(ServerConfig { write_high_water: 1000, ..ServerConfig::default() });
        let h = connect(&mut d, &sink, now);
        h.accept(None, vec![]);
        d.on_commands(now);
        output(&mut d);
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
}
