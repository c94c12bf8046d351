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
//! The driver is a router. Each phase of a connection is a state machine of its own, and the
//! driver feeds it bytes, commands and time, turns what it reports into [`Event`]s, and moves
//! the connection on to the next phase:
//!
//! - `Head` (module `head`): reading a request head, within a deadline;
//! - `Upgrade` (module `upgrade`): a WebSocket upgrade waits for the application to accept or
//!   deny it;
//! - `Http` ([`crate::http::Exchange`]): one plain HTTP request and its response, which decides
//!   whether the connection serves another;
//! - `Open` ([`crate::protocol::Connection`]): the WebSocket;
//! - `HandOff` (module `handoff`): the request names an Engine.IO session of another worker
//!   ([`crate::sticky`]); the connection goes to that worker with every byte read;
//! - `Done`: what is queued is written, then the socket closes (or, handed off, is only
//!   forgotten).
//!
//! ```text
//! Head ──valid upgrade──► Upgrade ──accept──► Open ───────────────────────► Done
//!  ▲  │                      └── close/abort (403/500), denial ──────────────►│
//!  │  │── plain request ──► Http ── response complete, keep-alive ──┐         │
//!  │  │                      └── not keep-alive / error / EOF ──────┼────────►│
//!  │  │── another worker's session ──► HandOff ── sent / 503 ───────┼────────►│
//!  │  └── bad request / timeout / EOF (4xx response or none) ───────┼────────►│
//!  └──────────────────────── next request (pipelined) ──────────────┘
//! ```
//!
//! # Logging
//!
//! Log records name the connection and its client (`connection 7 (127.0.0.1:5000): …`) and are
//! only made at or above [`LogConfig::level`]. A request the driver answers itself (400, 408,
//! 413, 414, 431, 503) is reported as an [`Event::Refused`] for the access log. At
//! [`LogLevel::Trace`] the driver also logs the connection's open ([`Driver::trace_open`]), a
//! summary of every WebSocket frame, and its close: the close code and reason, and who ended
//! it (client, server, application or a timeout), when the driver is dropped.
//!
//! # Sticky sessions
//!
//! In a worker process ([`Driver::set_worker`]), every request head is routed when it is
//! complete: the first of the connection and each later one on a keep-alive connection, so
//! always at a request boundary, with nothing of the connection in flight in the application.
//! A request for another worker's Engine.IO session moves the connection to `HandOff`: it reads
//! no more, writes what earlier requests still have queued, then [`Driver::handoff`] tells the
//! backend to pass the socket and the bytes read to the owner, and the backend reports with
//! [`Driver::on_handoff`]. The receiving worker starts its driver with those bytes
//! ([`Driver::on_handed_in`]) and serves that request without routing it again.
//!
//! # A peer that breaks the protocol after valid messages
//!
//! The open WebSocket holds its failures ([`Connection::hold_failures`]): when the peer breaks
//! the protocol, the messages that came before the violation have been delivered, but the
//! application's replies to them come back later, from another thread. So the driver stops
//! reading and keeps the close frame back until the application has caught up — it has taken
//! every message delivered and waits in `receive()` again ([`ConnHandle::receive_waiting`]),
//! so every reply it sent is queued, and commands are applied in order — or closes itself
//! (when it finishes), or `close_timeout` has passed. Then the connection fails with the
//! violation's code, behind those replies. An application that has nothing to answer is
//! caught up already, and the connection fails at once.
//!
//! # Accounting
//!
//! The bytes of every message and response body the application sends count against its send
//! buffer ([`ConnHandle::queued_bytes`]) from the moment it queues them. The driver releases
//! each such byte exactly once: when it is written, or at once if it never will be (the phase
//! had no use for it, the socket failed, or the peer stopped reading).

mod handoff;
mod head;
mod upgrade;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use self::handoff::HandOff;
use self::head::{Expired, Parsed, RequestHead};
use self::upgrade::{Accepted, PendingUpgrade};
use crate::backend::{
    Command, ConnHandle, ConnId, ConnectInfo, Event, EventSink, LocalAddr, LogLevel, Notify,
    Refusal, ServerConfig, TlsInfo,
};
#[cfg(doc)]
use crate::config::LogConfig;
use crate::frame::close_code;
use crate::handshake::{self, Request};
use crate::http::response::write_reject;
use crate::http::{Exchange, WallClock};
use crate::outq::OutQueue;
use crate::protocol::{self, Connection};
use crate::sticky::{Route, WorkerSlot};

/// Most bytes read after a request head that a hand-off carries along (a pipelined request
/// or the start of a body); a connection with more is answered 503 instead.
pub const MAX_HANDOFF_TAIL: usize = 64 * 1024;

/// Most bytes one hand-off carries with a configuration `cfg`: a request head at its limit
/// and [`MAX_HANDOFF_TAIL`].
#[must_use]
pub fn max_handoff_bytes(cfg: &ServerConfig) -> usize {
    cfg.max_header_bytes + MAX_HANDOFF_TAIL
}

/// The request head at the front of `bytes`, for the access log (`None` when `cfg` turns it
/// off).
fn request_in(cfg: &ServerConfig, bytes: &[u8]) -> Option<Request> {
    if !cfg.log.access {
        return None;
    }
    handshake::parse_request(bytes, &cfg.handshake()).ok().flatten().map(|(r, _)| r)
}

/// Most slices handed to one vectored write.
pub const MAX_IOVECS: usize = 64;

#[derive(Debug)]
enum Phase {
    /// Reading a request head.
    Head(RequestHead),
    /// A WebSocket upgrade waits for the application's answer, or is being denied.
    Upgrade(Box<PendingUpgrade>),
    /// Serving a plain HTTP request.
    Http(Box<Exchange>),
    /// The WebSocket is open (or closing).
    Open(Box<Connection>),
    /// The connection waits to be handed to the worker that owns the session it names.
    HandOff(Box<HandOff>),
    /// Nothing more to do but write what is queued and close.
    Done,
}

/// How a driver dispatches the next request head it parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Routed by the Engine.IO session it names (with workers), then served.
    Route,
    /// Served here whatever session it names: it was handed here. Later ones are routed.
    Here,
    /// Answered 503: the connection was accepted over `limit_concurrency`.
    Refuse,
}

/// Who ended a connection, as the trace log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// The client: its close frame, end of stream, or a reset.
    Client,
    /// The server: a request it refused, a protocol violation, the end of a non-keep-alive
    /// exchange, a shutdown.
    Server,
    /// The application: `websocket.close`, a denial, an exception.
    App,
    /// A deadline: handshake, keep-alive, request body, ping, close handshake, or a peer that
    /// stopped reading.
    Timeout,
}

impl Closer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::App => "app",
            Self::Timeout => "timeout",
        }
    }
}

/// One connection's protocol state, from the first byte to the close.
pub struct Driver {
    id: ConnId,
    cfg: Arc<ServerConfig>,
    sink: Arc<dyn EventSink>,
    handle: ConnHandle,
    client: Option<SocketAddr>,
    server: Option<LocalAddr>,
    /// What TLS established, for a connection over TLS (set before any byte is read).
    tls: Option<Arc<TlsInfo>>,
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
    /// The wall-clock time of the accept, for `date` headers.
    clock: WallClock,
    commands: Vec<Command>,
    /// This worker's place among the server's workers: routes requests for sessions.
    worker: Option<WorkerSlot>,
    /// How the next request head is dispatched.
    admission: Admission,
    /// The connection was handed to another worker: forget the socket, never close it.
    handed_off: bool,
    /// Requests completed on this connection: none means it was accepted for one that is
    /// still to come.
    completed: u32,
    /// When the server's shutdown reached this connection: the request already on its way is
    /// served, then the connection closes.
    shutdown_at: Option<Instant>,
    /// Who ended the connection (the first to, for the trace log).
    closer: Option<Closer>,
    /// The WebSocket's close code and reason, once closed (kept when tracing).
    ws_close: Option<(u16, String)>,
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

/// Moves the bytes of `input` to the end of `buf` (without a copy when `buf` is empty).
fn absorb(buf: &mut BytesMut, input: &mut BytesMut) {
    if buf.is_empty() {
        std::mem::swap(buf, input);
    } else {
        buf.extend_from_slice(input);
        input.clear();
    }
}

impl Driver {
    /// A driver for a connection accepted at `now` on the monotonic clock, which the wall clock
    /// read as `wall` (for `date` headers; the driver reads no clock, see
    /// [`WallClock`]).
    #[allow(clippy::too_many_arguments)] // each is an independent fact about the accept
    pub fn new(
        id: ConnId,
        cfg: Arc<ServerConfig>,
        sink: Arc<dyn EventSink>,
        notify: Box<dyn Notify>,
        client: Option<SocketAddr>,
        server: Option<LocalAddr>,
        now: Instant,
        wall: SystemTime,
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
            tls: None,
            phase: Phase::Head(RequestHead::new(BytesMut::new(), deadline)),
            out: OutQueue::new(),
            announced: false,
            deadline: Some(deadline),
            drain_deadline: None,
            now,
            clock: WallClock::new(now, wall),
            commands: Vec::new(),
            worker: None,
            admission: Admission::Route,
            handed_off: false,
            completed: 0,
            shutdown_at: None,
            closer: None,
            ws_close: None,
        }
    }

    /// Logs the connection's open at [`LogLevel::Trace`]: its client, its server address and
    /// `transport` (e.g. `tcp`, `unix+tls`).
    pub fn trace_open(&self, transport: &str) {
        if self.tracing() {
            let server = match &self.server {
                Some(LocalAddr::Inet(a)) => a.to_string(),
                Some(LocalAddr::Unix(path)) => path.display().to_string(),
                None => "-".to_owned(),
            };
            self.log(LogLevel::Trace, format_args!("open, server {server}, {transport}"));
        }
    }

    /// Answers every request of this connection 503 and closes it: it was accepted with more
    /// connections open than `limit_concurrency` allows.
    pub fn set_overloaded(&mut self) {
        self.admission = Admission::Refuse;
    }

    /// The next request head is served here, whatever session it names (unless refused).
    fn serve_next_here(&mut self) {
        if self.admission == Admission::Route {
            self.admission = Admission::Here;
        }
    }

    /// Makes this the driver of a connection in worker `slot`: requests for Engine.IO sessions
    /// of other workers are handed off ([`crate::sticky`]).
    pub fn set_worker(&mut self, slot: WorkerSlot) {
        self.worker = Some(slot);
    }

    /// Starts a connection another worker handed over, with the bytes it read, `input` (which
    /// is emptied): its first request is served here, whatever session it names.
    pub fn on_handed_in(&mut self, input: &mut BytesMut, now: Instant) {
        self.serve_next_here();
        self.on_read(input, now);
    }

    /// The hand-off to make now, if the connection waits for one: the owner's worker index and
    /// the bytes to pass along with the socket. Report the outcome with [`Driver::on_handoff`].
    #[must_use]
    pub fn handoff(&self) -> Option<(u16, &[u8])> {
        match &self.phase {
            Phase::HandOff(h) if self.out.is_empty() => h.ready(self.now),
            _ => None,
        }
    }

    /// Reports the outcome of the hand-off [`Driver::handoff`] asked for: `Ok` — the owner has
    /// the socket (the backend forgets it without closing it: [`Driver::is_handed_off`]);
    /// `WouldBlock` — the owner's inbox is full, try again at [`Driver::deadline`]; another
    /// error — the request is answered 503 here.
    pub fn on_handoff(&mut self, result: std::io::Result<()>, now: Instant) {
        self.now = now;
        self.guard(|d| {
            let Phase::HandOff(h) = &mut d.phase else { return };
            match result {
                Ok(()) => {
                    d.phase = Phase::Done;
                    d.deadline = None;
                    d.handed_off = true;
                    d.handle.mark_closed();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    h.busy(now);
                    d.deadline = Some(h.deadline());
                }
                Err(e) => {
                    let owner = h.owner();
                    let request = request_in(&d.cfg, h.bytes());
                    let why = format!("cannot hand a connection to worker {owner}: {e}");
                    d.handoff_failed(&why, request);
                }
            }
        });
    }

    /// Whether the connection was handed to another worker: the backend deregisters and drops
    /// its socket without shutting it down (the other worker serves it now).
    #[must_use]
    pub fn is_handed_off(&self) -> bool {
        self.handed_off
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Records what the TLS handshake established; every request of the connection reports it.
    pub fn set_tls(&mut self, info: Arc<TlsInfo>) {
        self.tls = Some(info);
    }

    /// What the TLS handshake established, for a connection over TLS (or relayed from one).
    #[must_use]
    pub fn tls(&self) -> Option<&Arc<TlsInfo>> {
        self.tls.as_ref()
    }

    /// The peer's address the application sees, if known.
    #[must_use]
    pub fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    /// The local address the application sees, if known.
    #[must_use]
    pub fn server(&self) -> Option<&LocalAddr> {
        self.server.as_ref()
    }

    /// A buffer of the connection's own to read into, when it is mid-frame or mid-request.
    /// `None`: read into any buffer and pass it to [`Driver::on_read`].
    pub fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        let buf = match &mut self.phase {
            Phase::Open(conn) => return conn.read_buffer(),
            Phase::Head(h) => h.buffer_mut(),
            Phase::Http(x) => x.buffer_mut(),
            _ => return None,
        };
        (!buf.is_empty()).then_some(buf)
    }

    /// Processes bytes read into `input` (which is emptied).
    pub fn on_read(&mut self, input: &mut BytesMut, now: Instant) {
        self.now = now;
        self.guard(|d| {
            d.read(Some(input), now);
            d.complete_held_failure(now);
        });
    }

    /// Processes bytes read into [`Driver::read_buffer`].
    pub fn on_read_buffered(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| {
            d.read(None, now);
            d.complete_held_failure(now);
        });
    }

    /// The peer closed its side of the stream.
    pub fn on_eof(&mut self) {
        self.closed_by(Closer::Client);
        self.guard(Self::eof);
    }

    /// The socket failed (reset, broken pipe): nothing more can be written.
    pub fn on_io_error(&mut self, err: &std::io::Error) {
        self.closed_by(Closer::Client);
        self.guard(|d| {
            d.log(LogLevel::Debug, format_args!("{err}"));
            d.eof();
            d.discard_output();
            d.phase = Phase::Done;
        });
    }

    /// Applies the commands the application queued through the [`ConnHandle`].
    pub fn on_commands(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| {
            d.apply_commands(now);
            // A wake-up may also mean the application caught up: deliver buffered body or
            // messages, or complete a held failure.
            d.http_read();
            d.arm_body_deadline(now, false);
            d.resume_parsing(now);
            d.complete_held_failure(now);
        });
    }

    /// Advances timers to `now`.
    pub fn on_tick(&mut self, now: Instant) {
        self.now = now;
        self.guard(|d| d.tick(now));
    }

    /// Starts closing because the server shuts down: an open WebSocket is sent a close frame
    /// with [`ServerConfig::shutdown_close_code`] and its application is told of the
    /// disconnect at once.
    ///
    /// A request already on its way is still answered, then the connection closes: one whose
    /// head has started to arrive, and the first one of a connection accepted before the
    /// shutdown (its client sent it, or is sending it, in good faith), due by the head's
    /// deadline. A WebSocket upgrade among them is refused with 503. A keep-alive connection
    /// idle between two requests is closed at once.
    pub fn on_shutdown(&mut self, now: Instant) {
        self.now = now;
        self.shutdown_at = Some(now);
        self.closed_by(Closer::Server);
        self.guard(|d| match &mut d.phase {
            Phase::Open(conn) => {
                let code = d.cfg.shutdown_close_code;
                let _ = conn.send_close(code, "");
                // The application learns of the close now (as under uvicorn), not when the
                // client answers: the close handshake goes on without it, up to close_timeout.
                d.disconnect(code, String::new());
                d.after_protocol(now);
                // The client's close frame may be among what was held back.
                d.resume_parsing(now);
            }
            Phase::Head(h) if h.is_idle() && d.completed > 0 => {
                // Between requests: close; the handle of the previous request must take no
                // more bytes.
                d.phase = Phase::Done;
                d.handle.mark_closed();
            }
            Phase::Upgrade(u) if u.is_awaiting() => {
                d.reject_request(503, "server shutting down", None);
            }
            Phase::HandOff(h) => {
                let request = request_in(&d.cfg, h.bytes());
                d.reject_request(503, "server shutting down", request);
            }
            // Let the request finish; the connection closes after its response.
            Phase::Http(x) => x.close_after_response(),
            // A head on its way is served when complete (`serve`), or dropped at its deadline.
            Phase::Head(_) | Phase::Upgrade(_) | Phase::Done => {}
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
            if d.out.is_empty() && matches!(d.phase, Phase::Open(_)) {
                // The 101 is out; an open WebSocket writes from its own queue, and most idle.
                d.out.shrink_to_fit();
            }
            if n > 0 && d.drain_deadline.is_some() {
                d.drain_deadline = Some(d.now + d.cfg.close_timeout);
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
            Phase::Head(_) => true,
            Phase::Upgrade(u) => u.wants_read(),
            Phase::Http(x) => x.wants_read(self.handle.is_read_paused()),
            // Once our close frame is out, the peer's reply must be read even if the
            // application stopped taking messages (data frames are discarded then).
            Phase::Open(conn) => {
                // Output the application did not send (pongs, close frames) must not grow
                // without bound because a peer sends pings and never reads.
                let unaccounted = conn.out_len().saturating_sub(self.handle.queued_bytes());
                // While a failure is held, nothing more is read.
                !conn.is_closed()
                    && !conn.is_failing()
                    && (!conn.is_open() || !self.handle.is_read_paused())
                    && unaccounted <= self.cfg.ws_write_high_water
            }
            Phase::HandOff(_) | Phase::Done => false,
        }
    }

    /// Bytes the connection cannot do without before it can make progress: the rest of the
    /// WebSocket frame being received ([`Connection::awaited_bytes`]), or 0. A backend may wait
    /// for that many bytes before it reads (a socket's receive low-water mark), so that a large
    /// payload arrives in a few large reads rather than many small ones.
    #[must_use]
    pub fn awaited_bytes(&self) -> usize {
        match &self.phase {
            Phase::Open(conn) if self.wants_read() => conn.awaited_bytes(),
            _ => 0,
        }
    }

    /// Whether the connection is finished: everything is written and the socket can be closed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done) && !self.wants_write()
    }

    /// Whether the connection is finished because the client closed its WebSocket: its close
    /// frame (or end of stream) ended it, not a violation, a timer or this side. Such a client
    /// sends nothing more (RFC 6455 §5.5.1), so once its input is drained the socket can be
    /// closed at once, without the half-close and linger (`zcasgi_transport::linger`).
    #[must_use]
    pub fn is_closed_by_client(&self) -> bool {
        self.closer == Some(Closer::Client)
            && matches!(self.phase, Phase::Done)
            && !self.handed_off
            && !self.wants_write()
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
            let can_answer = match &self.phase {
                Phase::Head(_) | Phase::HandOff(_) => true,
                Phase::Upgrade(u) => u.is_awaiting(),
                Phase::Http(x) => !x.is_response_started(),
                Phase::Open(_) | Phase::Done => false,
            };
            let was_open = matches!(self.phase, Phase::Open(_));
            self.out.clear();
            if was_open {
                self.out.push_bytes(Bytes::from_static(&[0x88, 0x02, 0x03, 0xf3]), 0);
            } else if can_answer {
                let mut out = Vec::new();
                write_reject(
                    &mut out,
                    500,
                    "internal server error",
                    self.cfg.default_headers(self.date()),
                );
                self.out.push_bytes(Bytes::from(out), 0);
            }
            self.phase = Phase::Done;
            self.closed_by(Closer::Server);
            self.log(LogLevel::Error, format_args!("panic on an I/O thread"));
            self.disconnect(close_code::INTERNAL_ERROR, String::new());
        }
        self.trace_frames();
        if self.handle.is_closed() && self.wants_write() {
            if self.drain_deadline.is_none() {
                self.drain_deadline = Some(self.now + self.cfg.close_timeout);
            }
        } else {
            self.drain_deadline = None;
        }
    }

    /// The wall-clock time now, for a response's `date`.
    fn date(&self) -> SystemTime {
        self.clock.at(self.now)
    }

    /// Whether log records are made at [`LogLevel::Trace`].
    fn tracing(&self) -> bool {
        self.cfg.log.level == LogLevel::Trace
    }

    /// Logs `what` about this connection, naming it and its client, if records of `level` are
    /// made at all ([`LogConfig::level`]).
    fn log(&self, level: LogLevel, what: std::fmt::Arguments<'_>) {
        if level >= self.cfg.log.level {
            let client = self.client.map_or_else(|| "-".to_owned(), |a| a.to_string());
            let message = format!("connection {} ({client}): {what}", self.id);
            self.sink.push(Event::Log { level, message });
        }
    }

    /// Records who ended the connection, unless someone did already.
    fn closed_by(&mut self, closer: Closer) {
        self.closer.get_or_insert(closer);
    }

    /// Logs the frames the open WebSocket received and sent since the last call (tracing).
    fn trace_frames(&mut self) {
        if !self.tracing() {
            return;
        }
        let Phase::Open(conn) = &mut self.phase else { return };
        for frame in conn.take_frames() {
            self.log(LogLevel::Trace, format_args!("{frame}"));
        }
    }

    fn disconnect(&mut self, code: u16, reason: String) {
        self.handle.mark_closed();
        if std::mem::take(&mut self.announced) {
            self.sink.push(Event::Disconnect { id: self.id, code, reason });
        }
    }

    /// Ends the connection without a response: what is queued is still written.
    fn close_abnormally(&mut self) {
        self.phase = Phase::Done;
        self.disconnect(close_code::ABNORMAL, String::new());
    }

    /// Drops everything queued (it will never be written) and releases what the application's
    /// bytes held.
    fn discard_output(&mut self) {
        let mut released = self.out.clear();
        if let Phase::Open(conn) = &mut self.phase {
            released += conn.out_queue().clear();
        }
        self.handle.release(released);
    }

    fn read(&mut self, input: Option<&mut BytesMut>, now: Instant) {
        match &mut self.phase {
            Phase::Head(h) => {
                if let Some(input) = input {
                    absorb(h.buffer_mut(), input);
                }
                self.parse_request();
            }
            Phase::Upgrade(u) => {
                if let Some(input) = input {
                    u.receive(input);
                }
            }
            Phase::Http(x) => {
                if let Some(input) = input {
                    absorb(x.buffer_mut(), input);
                }
                self.http_read();
                self.arm_body_deadline(now, true);
            }
            Phase::Done | Phase::HandOff(_) => {
                // A hand-off reads nothing more (see `wants_read`).
                if let Some(input) = input {
                    input.clear();
                }
            }
            Phase::Open(_) => {
                self.parse(input, now);
                self.resume_parsing(now);
            }
        }
    }

    fn parse_request(&mut self) {
        let Phase::Head(h) = &mut self.phase else { return };
        match h.parse(&self.cfg.handshake()) {
            Ok(None) => {}
            Ok(Some(parsed)) => {
                let handed_in = self.admission == Admission::Here;
                if handed_in {
                    self.admission = Admission::Route;
                }
                let route = match self.worker {
                    Some(slot) if !handed_in => slot.route(&parsed.request),
                    _ => Route::Local,
                };
                match route {
                    Route::Local => self.serve(parsed),
                    Route::Worker(owner) => self.hand_off(owner, parsed.into_bytes()),
                    Route::UnknownWorker(owner) => {
                        let count = self.worker.map_or(0, |slot| slot.count);
                        self.log(
                            LogLevel::Warning,
                            format_args!(
                                "a request for an Engine.IO session of worker {owner}, of \
                                 {count} workers (a session of an earlier run?)"
                            ),
                        );
                        let request = Some(parsed.request);
                        self.reject_request(400, "unknown engine.io session", request);
                    }
                }
            }
            Err(e) => self.refuse(e.status(), &e, None),
        }
    }

    /// Waits to hand the connection, and `bytes`, every byte read from it, to worker `owner`.
    fn hand_off(&mut self, owner: u16, bytes: BytesMut) {
        if bytes.len() > max_handoff_bytes(&self.cfg) {
            let why = format!("{} bytes read ahead, more than a hand-off carries", bytes.len());
            let request = request_in(&self.cfg, &bytes);
            self.handoff_failed(
                &format!("cannot hand a connection to worker {owner}: {why}"),
                request,
            );
            return;
        }
        let give_up = self.now + self.cfg.handshake_timeout;
        let h = HandOff::new(owner, bytes, give_up);
        self.deadline = Some(h.deadline());
        self.phase = Phase::HandOff(Box::new(h));
    }

    /// A hand-off of `request` cannot be made: answer it here with 503, and say why.
    fn handoff_failed(&mut self, why: &str, request: Option<Request>) {
        self.log(LogLevel::Warning, format_args!("{why}"));
        self.reject_request(503, "service unavailable", request);
    }

    /// Serves a request here: a WebSocket upgrade or a plain HTTP request.
    fn serve(&mut self, parsed: Parsed) {
        let Parsed { request, rest, .. } = parsed;
        if self.admission == Admission::Refuse {
            self.reject_request(503, "service unavailable", Some(request));
            return;
        }
        if request.is_websocket_upgrade() {
            if self.shutdown_at.is_some() {
                self.reject_request(503, "server shutting down", Some(request));
                return;
            }
            match handshake::validate_upgrade(&request) {
                Ok(upgrade) => {
                    let pending = PendingUpgrade::new(upgrade.clone(), rest);
                    self.phase = Phase::Upgrade(Box::new(pending));
                    self.announce(request, Some(upgrade));
                }
                Err(e) => self.refuse(e.status(), &e, Some(request)),
            }
        } else {
            match Exchange::start(&request, rest, self.cfg.http_max_body_size, &mut self.out) {
                Ok(mut exchange) => {
                    if self.shutdown_at.is_some() {
                        exchange.close_after_response();
                    }
                    self.phase = Phase::Http(Box::new(exchange));
                    self.announce(request, None);
                    self.http_read();
                    self.arm_body_deadline(self.now, true);
                }
                Err(e) => self.refuse(e.status(), &e, Some(request)),
            }
        }
    }

    /// Tells the application about a request: a WebSocket `upgrade`, or plain HTTP.
    fn announce(&mut self, request: Request, upgrade: Option<handshake::Upgrade>) {
        self.deadline = None;
        self.announced = true;
        let websocket = upgrade.is_some();
        let info = Box::new(ConnectInfo {
            id: self.id,
            handle: self.handle.clone(),
            request,
            upgrade,
            client: self.client,
            server: self.server.clone(),
            tls: self.tls.clone(),
        });
        self.sink.push(if websocket { Event::Connect(info) } else { Event::HttpRequest(info) });
    }

    /// Decodes what the current request's body has in the buffer and delivers it.
    fn http_read(&mut self) {
        loop {
            let Phase::Http(x) = &mut self.phase else { return };
            if self.handle.is_read_paused() {
                return;
            }
            match x.next_body() {
                Ok(Some((body, more))) => {
                    self.handle.message_delivered(body.len());
                    self.sink.push(Event::HttpBody { id: self.id, body, more });
                }
                Ok(None) => return,
                Err(e) if x.is_response_started() => {
                    self.log(LogLevel::Debug, format_args!("{e}"));
                    self.closed_by(Closer::Server);
                    self.close_abnormally();
                    return;
                }
                Err(e) => {
                    self.refuse(e.status(), &e, None);
                    return;
                }
            }
        }
    }

    /// Keeps the deadline of a request body that is still arriving: `handshake_timeout` after
    /// the last `progress` (bytes received), none while the application holds reading paused
    /// (the wait is then its own) or once the whole body is in.
    fn arm_body_deadline(&mut self, now: Instant, progress: bool) {
        let Phase::Http(x) = &self.phase else { return };
        let waiting = !x.is_body_received() && !self.handle.is_read_paused();
        self.deadline = match self.deadline {
            _ if !waiting => None,
            Some(at) if !progress => Some(at),
            _ => Some(now + self.cfg.handshake_timeout),
        };
    }

    /// The response is complete: serve the next request on this connection, or close.
    fn finish_exchange(&mut self, now: Instant) {
        let Phase::Http(x) = std::mem::replace(&mut self.phase, Phase::Done) else { return };
        self.completed = self.completed.saturating_add(1);
        self.deadline = None;
        // The request is over for the application (ASGI: `receive()` now gives
        // `http.disconnect`), so its side forgets it; a keep-alive connection's next request
        // is announced afresh. Without this, the application side kept the last request of
        // every connection, since no other event would ever name it again.
        if std::mem::take(&mut self.announced) {
            self.sink.push(Event::Disconnect {
                id: self.id,
                code: close_code::NORMAL,
                reason: String::new(),
            });
        }
        if let Some(buf) = x.into_next() {
            let deadline = now + self.cfg.timeout_keep_alive;
            self.phase = Phase::Head(RequestHead::new(buf, deadline));
            self.deadline = Some(deadline);
            self.parse_request();
        } else {
            self.closed_by(Closer::Server);
            self.handle.mark_closed();
        }
    }

    /// Answers a request that cannot be served with `status`, logging why.
    fn refuse(&mut self, status: u16, why: &dyn std::fmt::Display, request: Option<Request>) {
        self.log(LogLevel::Debug, format_args!("{why}"));
        self.reject_request(status, &why.to_string(), request);
    }

    /// Answers `request` (`None`: none was parsed, or the application has it) with `status`
    /// and `message` on the server's own behalf, and reports it to the access log.
    fn reject_request(&mut self, status: u16, message: &str, request: Option<Request>) {
        self.closed_by(Closer::Server);
        if self.cfg.log.access {
            let tls = self.tls.is_some();
            let (id, client) = (self.id, self.client);
            self.sink.push(Event::Refused(Box::new(Refusal { id, status, request, client, tls })));
        }
        self.reject(status, message);
    }

    fn reject(&mut self, status: u16, message: &str) {
        let mut out = Vec::new();
        write_reject(&mut out, status, message, self.cfg.default_headers(self.date()));
        self.out.push_bytes(Bytes::from(out), 0);
        self.deadline = None;
        self.close_abnormally();
    }

    fn eof(&mut self) {
        // What was read before the end, the application may still have room for.
        self.resume_parsing(self.now);
        match &mut self.phase {
            Phase::Open(conn) => {
                conn.receive_eof();
                self.drain_events();
                self.settle();
            }
            Phase::Upgrade(u) if u.is_awaiting() => {
                // The application still decides; it learns of the disconnect now.
                u.on_eof();
                self.disconnect(close_code::ABNORMAL, String::new());
            }
            Phase::Head(h) if h.is_idle() => {
                // An idle keep-alive connection closed by the client: nothing to report.
                self.phase = Phase::Done;
                self.handle.mark_closed();
            }
            _ => self.close_abnormally(),
        }
    }

    /// Feeds the open WebSocket `input` (or what is in its own buffer), as much as the
    /// application's queue has room for, and delivers what it finds.
    fn parse(&mut self, input: Option<&mut BytesMut>, now: Instant) {
        let Phase::Open(conn) = &mut self.phase else { return };
        conn.set_room(self.handle.inbound_room());
        let result = match input {
            Some(input) => conn.receive_data(input),
            None => conn.receive_buffered(),
        };
        if let Err(e) = result {
            self.log(LogLevel::Debug, format_args!("{e}"));
            self.closed_by(Closer::Server);
        }
        self.after_protocol(now);
    }

    /// Parses what the open WebSocket read but held back while the application's queue was
    /// full, once there is room (the application took messages) or none is needed (the
    /// connection is closing): the socket may have nothing more to say, so no read would.
    fn resume_parsing(&mut self, now: Instant) {
        while matches!(&self.phase, Phase::Open(conn) if conn.is_held_back()
            && (!conn.is_open() || !self.handle.is_read_paused()))
        {
            self.parse(None, now);
        }
    }

    /// Applies the commands the application has queued, in order.
    fn apply_commands(&mut self, now: Instant) {
        let mut cmds = std::mem::take(&mut self.commands);
        self.handle.take_commands(&mut cmds);
        let opening = !matches!(self.phase, Phase::Open(_));
        for cmd in cmds.drain(..) {
            self.apply(cmd, now);
        }
        if opening && matches!(self.phase, Phase::Open(_)) {
            // The accept's room is not kept: most WebSockets idle once open.
            cmds = Vec::new();
        }
        self.commands = cmds;
    }

    /// Completes a failure the connection holds once the application has caught up (see the
    /// module docs); its replies, queued before it came back to `receive()`, go out first.
    /// Called only at the end of an entry point, never while commands are being applied, so
    /// that commands stay in order.
    fn complete_held_failure(&mut self, now: Instant) {
        let Phase::Open(conn) = &self.phase else { return };
        if !conn.is_failing() || !self.handle.caught_up() {
            return;
        }
        self.apply_commands(now);
        if let Phase::Open(conn) = &mut self.phase {
            conn.complete_failure();
        }
        self.after_protocol(now);
    }

    /// Routes one command of the application to the phase it concerns.
    fn apply(&mut self, cmd: Command, now: Instant) {
        match (&mut self.phase, cmd) {
            // The open WebSocket.
            (Phase::Open(conn), Command::Send { text, payload }) => {
                let len = payload.len();
                if conn.send_message(text, payload, len).is_err() {
                    self.handle.release(len);
                }
            }
            (Phase::Open(conn), Command::Close { code, reason }) => {
                self.closer.get_or_insert(Closer::App);
                let (code, reason) = if protocol::check_close(code, &reason).is_ok() {
                    (code, reason)
                } else {
                    (close_code::INTERNAL_ERROR, String::new())
                };
                let _ = conn.send_close(code, &reason);
                self.after_protocol(now);
            }
            (Phase::Open(conn), Command::Abort) => {
                self.closer.get_or_insert(Closer::App);
                let _ = conn.send_close(close_code::INTERNAL_ERROR, "");
                self.after_protocol(now);
            }
            // The answer to a WebSocket upgrade.
            (Phase::Upgrade(u), Command::Accept { subprotocol, headers }) if u.is_awaiting() => {
                self.accept(subprotocol.as_deref(), &headers, now);
            }
            (Phase::Upgrade(u), Command::Close { .. }) if u.is_awaiting() => {
                self.closed_by(Closer::App);
                self.reject(403, "forbidden");
            }
            (Phase::Upgrade(u), Command::Abort) if u.is_awaiting() => {
                self.closed_by(Closer::App);
                self.reject(500, "internal server error");
            }
            (Phase::Upgrade(u), Command::HttpResponseStart { status, headers }) => {
                self.closer.get_or_insert(Closer::App);
                u.deny(
                    &mut self.out,
                    status,
                    &headers,
                    self.cfg.default_headers(self.clock.at(now)),
                );
            }
            (Phase::Upgrade(u), Command::HttpResponseBody { body, more }) => {
                let unqueued = u.deny_body(&mut self.out, body, more);
                let denied = u.is_denied();
                self.handle.release(unqueued);
                if denied {
                    self.close_abnormally();
                }
            }
            // A plain HTTP request.
            (Phase::Http(x), Command::HttpResponseStart { status, headers }) => {
                x.respond(
                    &mut self.out,
                    status,
                    &headers,
                    self.cfg.default_headers(self.clock.at(now)),
                );
            }
            (Phase::Http(x), Command::HttpResponseBody { body, more }) => {
                let unqueued = x.respond_body(&mut self.out, body, more);
                let complete = x.is_response_complete();
                self.handle.release(unqueued);
                if complete {
                    self.finish_exchange(now);
                }
            }
            (Phase::Http(x), Command::Abort) if !x.is_response_started() => {
                self.closed_by(Closer::App);
                self.reject(500, "internal server error");
            }
            // A response (or denial) broken half way: all we can do is close.
            (Phase::Http(_) | Phase::Upgrade(_), Command::Abort) => {
                self.closed_by(Closer::App);
                self.close_abnormally();
            }
            // Accounted bytes that no phase will write.
            (
                _,
                Command::Send { payload: bytes, .. }
                | Command::HttpResponseBody { body: bytes, .. },
            ) => {
                self.handle.release(bytes.len());
            }
            // Anything else is a command that the state makes meaningless (a second close, an
            // accept after close): the bridge has already rejected the misuse in Python.
            _ => {}
        }
    }

    fn accept(&mut self, subprotocol: Option<&str>, headers: &[(Vec<u8>, Vec<u8>)], now: Instant) {
        let Phase::Upgrade(u) = std::mem::replace(&mut self.phase, Phase::Done) else { return };
        let defaults = self.cfg.default_headers(self.date());
        let Accepted { mut conn, mut early, eof } =
            u.accept(&self.cfg.protocol(), subprotocol, headers, &mut self.out, defaults);
        conn.hold_failures();
        if self.tracing() {
            conn.trace_frames();
        }
        self.phase = Phase::Open(Box::new(conn));
        if eof {
            // The client left before the accept: nothing will be read.
            self.eof();
            return;
        }
        if !early.is_empty() {
            self.read(Some(&mut early), now);
        }
        self.tick(now);
    }

    fn tick(&mut self, now: Instant) {
        if self.drain_deadline.is_some_and(|at| now >= at) {
            // The peer stopped taking our output: give up on it.
            self.log(LogLevel::Debug, format_args!("peer stopped reading"));
            self.closed_by(Closer::Timeout);
            self.discard_output();
            self.phase = Phase::Done;
            self.deadline = None;
            self.drain_deadline = None;
            return;
        }
        match &mut self.phase {
            Phase::Head(h) => match h.expired(now) {
                Err(deadline) => self.deadline = Some(deadline),
                Ok(Expired::Idle) => {
                    // An idle keep-alive connection: close without a response.
                    self.closed_by(Closer::Timeout);
                    self.phase = Phase::Done;
                    self.deadline = None;
                    self.handle.mark_closed();
                }
                Ok(Expired::Incomplete) => {
                    self.log(LogLevel::Debug, format_args!("handshake timeout"));
                    self.closed_by(Closer::Timeout);
                    self.reject_request(408, "request timeout", None);
                }
            },
            Phase::Open(_) => {
                self.tick_open(now);
                self.drain_events();
                self.settle();
            }
            Phase::Http(x) if self.deadline.is_some_and(|at| now >= at) => {
                // The client stopped sending the body it announced.
                let started = x.is_response_started();
                self.log(LogLevel::Debug, format_args!("request body timeout"));
                self.closed_by(Closer::Timeout);
                if started {
                    self.deadline = None;
                    self.close_abnormally();
                } else {
                    self.reject_request(408, "request timeout", None);
                }
            }
            Phase::Http(_) => {}
            Phase::HandOff(h) if h.is_expired(now) => {
                let why = format!("worker {} took no connection for handshake_timeout", h.owner());
                let request = request_in(&self.cfg, h.bytes());
                self.handoff_failed(&format!("cannot hand a connection on: {why}"), request);
            }
            Phase::HandOff(h) => self.deadline = Some(h.deadline()),
            _ => self.deadline = None,
        }
    }

    /// After the protocol state machine ran: deliver its events, re-arm its timers.
    fn after_protocol(&mut self, now: Instant) {
        self.drain_events();
        self.tick_open(now);
        self.drain_events();
        self.settle();
    }

    /// Advances the open WebSocket's timers; a close they cause is a timeout's (ping, close
    /// handshake).
    fn tick_open(&mut self, now: Instant) {
        let Phase::Open(conn) = &mut self.phase else { return };
        let was_closed = conn.is_closed();
        self.deadline = conn.on_tick(now);
        if !was_closed && conn.is_closed() {
            self.closed_by(Closer::Timeout);
        }
    }

    fn drain_events(&mut self) {
        let tracing = self.tracing();
        let Phase::Open(conn) = &mut self.phase else { return };
        while let Some(ev) = conn.next_event() {
            match ev {
                protocol::Event::Message(message) => {
                    self.handle.message_delivered(message.len());
                    self.sink.push(Event::Message { id: self.id, message });
                }
                protocol::Event::Closed { code, reason } => {
                    // Not closed by this side, a violation or a timer: by the client.
                    self.closer.get_or_insert(Closer::Client);
                    if tracing {
                        self.ws_close = Some((code, reason.clone()));
                    }
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
                self.trace_frames();
                let Phase::Open(conn) = &mut self.phase else { return };
                // Keep the bytes it still has to write (the close frame).
                let mut q = std::mem::take(conn.out_queue());
                self.out.append(&mut q);
                self.phase = Phase::Done;
                self.deadline = None;
            }
        }
    }
}

impl Drop for Driver {
    /// Logs the close at [`LogLevel::Trace`]: who ended the connection, and a WebSocket's close
    /// code and reason.
    fn drop(&mut self) {
        if !self.tracing() {
            return;
        }
        if self.handed_off {
            self.log(LogLevel::Trace, format_args!("handed to the worker that owns its session"));
            return;
        }
        let by = self.closer.unwrap_or(Closer::Server).as_str();
        let requests = self.completed;
        if let Some((code, reason)) = &self.ws_close {
            self.log(
                LogLevel::Trace,
                format_args!("closed by {by}: code {code}, reason {reason:?}"),
            );
        } else {
            let s = if requests == 1 { "" } else { "s" };
            self.log(LogLevel::Trace, format_args!("closed by {by} after {requests} request{s}"));
        }
    }
}

#[cfg(test)]
mod tests;
