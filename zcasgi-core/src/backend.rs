//! The seam between transport backends and the Python bridge.
//!
//! A [`Backend`] owns sockets, readiness, timers and threads (or, with none, lets its caller turn
//! its event loop: [`RunningServer::inline`], [`InlineReactor`]). Events flow from the I/O threads
//! to the application through an [`EventSink`]; the application talks back through a
//! [`ConnHandle`], whose typed operations ([`ConnHandle::accept`], [`ConnHandle::send`],
//! [`ConnHandle::close`], [`ConnHandle::respond`], [`ConnHandle::respond_body`],
//! [`ConnHandle::abort`]) queue commands for the connection's I/O side and wake it through the
//! backend's [`Notify`]. The commands themselves are private to the core: the handle does the
//! back-pressure accounting of every byte it queues, and the driver releases exactly those bytes,
//! so no caller can unbalance [`ConnHandle::queued_bytes`]. Everything a backend does with bytes
//! goes through [`crate::driver::Driver`], so the backends share all protocol logic.
//!
//! # Examples
//!
//! An in-memory sink, as the tests use:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use zcasgi_core::backend::{Event, EventSink};
//!
//! #[derive(Default)]
//! struct VecSink(Mutex<Vec<Event>>);
//!
//! impl EventSink for VecSink {
//!     fn push(&self, event: Event) {
//!         self.0.lock().unwrap().push(event);
//!     }
//! }
//!
//! let sink: Arc<dyn EventSink> = Arc::new(VecSink::default());
//! sink.push(Event::Writable { id: 7 });
//! ```

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use crate::config::ServerConfig;
use crate::error::ConfigError;
use crate::handshake::{Request, Upgrade};
use crate::protocol::{Message, Room};
use crate::sticky::WorkerSlot;

/// Identifies a connection for the lifetime of a server.
pub type ConnId = u64;

/// Severity of a log record produced on an I/O thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Each connection's open and close, and a summary of every WebSocket frame (uvicorn's
    /// `trace`, below debug).
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the server handled.
    Warning,
    /// A failure (a panic caught on an I/O thread).
    Error,
}

/// A listening socket handed to a backend: TCP or a Unix stream socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix stream listener (`--uds`, or one inherited by descriptor).
    Unix(std::os::unix::net::UnixListener),
}

impl From<std::net::TcpListener> for Listener {
    fn from(l: std::net::TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl From<std::os::unix::net::UnixListener> for Listener {
    fn from(l: std::os::unix::net::UnixListener) -> Self {
        Self::Unix(l)
    }
}

/// The local end of a connection, as the application sees it (ASGI `scope["server"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    /// An IP address and port.
    Inet(SocketAddr),
    /// The path of a Unix socket (ASGI: `[path, None]`).
    Unix(Arc<Path>),
}

/// What the TLS handshake of a connection established (the ASGI `tls` extension).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The TLS version, as on the wire (`0x0304` for TLS 1.3).
    pub version: u16,
    /// The IANA number of the cipher suite.
    pub cipher_suite: u16,
    /// The server's certificate (DER).
    pub server_cert: Option<Vec<u8>>,
    /// The client's certificate chain (DER), leaf first; empty when it presented none.
    pub client_cert_chain: Vec<Vec<u8>>,
}

/// A request for the application: a WebSocket upgrade waiting for its answer, or a plain HTTP
/// request.
#[derive(Debug)]
pub struct ConnectInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The application's way back to the connection.
    pub handle: ConnHandle,
    /// The request head.
    pub request: Request,
    /// What the WebSocket handshake negotiated so far (subprotocols offered, accept key);
    /// `None` for a plain HTTP request.
    pub upgrade: Option<Upgrade>,
    /// The peer's address, if known.
    pub client: Option<SocketAddr>,
    /// The local address, if known.
    pub server: Option<LocalAddr>,
    /// What TLS established, when the connection is over TLS.
    pub tls: Option<Arc<TlsInfo>>,
}

/// A request the server answered itself, without the application (a malformed or oversized
/// request, a timeout, an overload): what the access log says of it.
#[derive(Debug)]
pub struct Refusal {
    /// The connection.
    pub id: ConnId,
    /// The status the server answered with.
    pub status: u16,
    /// The request head, when one was parsed.
    pub request: Option<Request>,
    /// The peer's address, if known.
    pub client: Option<SocketAddr>,
    /// Whether the connection is over TLS.
    pub tls: bool,
}

/// Something the I/O side reports to the application.
#[derive(Debug)]
pub enum Event {
    /// A new WebSocket connection wants to be accepted.
    Connect(Box<ConnectInfo>),
    /// A plain HTTP request (ASGI `http` scope); its body follows as [`Event::HttpBody`].
    HttpRequest(Box<ConnectInfo>),
    /// A piece of the current HTTP request's body; the last one has `more: false`.
    HttpBody {
        /// The connection.
        id: ConnId,
        /// The piece (possibly empty).
        body: Bytes,
        /// Whether more pieces follow.
        more: bool,
    },
    /// A complete message arrived.
    Message {
        /// The connection.
        id: ConnId,
        /// The message.
        message: Message,
    },
    /// The connection is gone, or (plain HTTP) its request's response is complete; no more
    /// events follow for `id`, but for the next request of a keep-alive connection, which
    /// comes as a new [`Event::HttpRequest`].
    Disconnect {
        /// The connection.
        id: ConnId,
        /// The close code to report (1006 when there was no close frame).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Unwritten data fell below the low-water mark: a waiting `send` may resume.
    Writable {
        /// The connection.
        id: ConnId,
    },
    /// The server answered a request itself (see
    /// [`LogConfig::access`](crate::config::LogConfig::access)).
    Refused(Box<Refusal>),
    /// A log record from an I/O thread, to be logged by the application side.
    Log {
        /// Severity.
        level: LogLevel,
        /// The message.
        message: String,
    },
}

/// Where I/O threads deliver events. Implementations must not block for long.
///
/// A consumer woken per event would, on a core it shares with the I/O thread, take the core
/// after every event and handle one at a time. An I/O thread that says when it is about to
/// wait can deliver with [`EventSink::push_batched`] instead and call [`EventSink::flush`]
/// before it waits: the consumer then wakes once for the whole batch.
pub trait EventSink: Send + Sync {
    /// Delivers one event, waking the consumer if it needs waking.
    fn push(&self, event: Event);

    /// Delivers one event from a thread that calls [`EventSink::flush`] before it next waits
    /// (or within a bounded number of events); the consumer's wake-up may wait until then.
    /// The default is [`EventSink::push`].
    fn push_batched(&self, event: Event) {
        self.push(event);
    }

    /// Wakes the consumer for the events delivered with [`EventSink::push_batched`] that it
    /// has not taken yet. The default does nothing.
    fn flush(&self) {}
}

/// How the application side wakes a connection's I/O side. Supplied by the backend.
pub trait Notify: Send + Sync {
    /// Wakes the I/O side of the connection: it has commands to apply or may read again.
    fn notify(&self);
}

/// What the application asks of a connection; built only by [`ConnHandle`]'s operations.
///
/// Invariant: the payload of every [`Command::Send`] and [`Command::HttpResponseBody`] has been
/// added to [`ConnHandle::queued_bytes`] by the operation that queued it, and the driver
/// releases exactly its length (once written, or at once if it is never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Accept the WebSocket (ASGI `websocket.accept`).
    Accept { subprotocol: Option<String>, headers: Vec<(Vec<u8>, Vec<u8>)> },
    /// Send a message (ASGI `websocket.send`); `payload` is accounted.
    Send { text: bool, payload: Bytes },
    /// Close (ASGI `websocket.close`); before accept this rejects the handshake with 403.
    Close { code: u16, reason: String },
    /// Start an HTTP response (ASGI `http.response.start`, or before a WebSocket accept
    /// `websocket.http.response.start`: a denial).
    HttpResponseStart { status: u16, headers: Vec<(Vec<u8>, Vec<u8>)> },
    /// A piece of the response body; `body` is accounted.
    HttpResponseBody { body: Bytes, more: bool },
    /// The application failed: close with 1011 (or 500 before accept).
    Abort,
}

/// Whether a `send` may complete at once or has to wait for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Below the high-water mark.
    Ready,
    /// Above it: wait for [`Event::Writable`] (see [`ConnHandle::wait_writable`]).
    Full,
    /// The connection is gone.
    Closed,
}

#[derive(Debug, Default)]
struct Commands {
    queue: Vec<Command>,
}

/// State shared by the application side and the I/O side of one connection.
struct Shared {
    id: ConnId,
    commands: Mutex<Commands>,
    notify: Box<dyn Notify>,
    /// Bytes sent by the application and not yet written to the socket.
    queued_bytes: AtomicUsize,
    /// The application waits for [`Event::Writable`].
    want_writable: AtomicBool,
    /// Messages delivered to the application and not yet taken by it.
    inbound: AtomicUsize,
    /// Their bytes.
    inbound_bytes: AtomicUsize,
    /// The I/O side stopped reading because `inbound` or `inbound_bytes` reached its limit.
    read_paused: AtomicBool,
    /// Messages delivered to the application in all (counted by the I/O side).
    delivered: AtomicU64,
    /// Messages the application has taken in all (counted by the application side).
    taken: AtomicU64,
    /// One more than `taken` when the application last waited in `receive()` with nothing
    /// to take; 1 at first (nothing delivered, nothing to answer).
    waiting_at: AtomicU64,
    /// The I/O side wants a wake-up when the application next waits in `receive()`.
    want_waiting: AtomicBool,
    /// The I/O side is finished with the connection.
    closed: AtomicBool,
    high_water: usize,
    low_water: usize,
    max_queue: usize,
    max_queue_bytes: usize,
}

/// The application's handle on one connection; cheap to clone, safe to use from any thread.
#[derive(Clone)]
pub struct ConnHandle(Arc<Shared>);

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("id", &self.0.id)
            .field("queued_bytes", &self.0.queued_bytes.load(Ordering::Relaxed))
            .field("closed", &self.0.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ConnHandle {
    /// A handle for connection `id`, waking its I/O side through `notify`.
    #[must_use]
    pub(crate) fn new(id: ConnId, cfg: &ServerConfig, notify: Box<dyn Notify>) -> Self {
        Self(Arc::new(Shared {
            id,
            commands: Mutex::new(Commands::default()),
            notify,
            queued_bytes: AtomicUsize::new(0),
            want_writable: AtomicBool::new(false),
            inbound: AtomicUsize::new(0),
            inbound_bytes: AtomicUsize::new(0),
            read_paused: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            waiting_at: AtomicU64::new(1),
            want_waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            high_water: cfg.ws_write_high_water,
            low_water: cfg.ws_write_low_water.min(cfg.ws_write_high_water),
            max_queue: cfg.ws_max_queue.max(1),
            max_queue_bytes: cfg.ws_max_queue_bytes.max(1),
        }))
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.0.id
    }

    /// Accepts the WebSocket (ASGI `websocket.accept`) with an optional `subprotocol` and
    /// extra response `headers`.
    ///
    /// Ignored if the connection already left the handshake (closed, denied or accepted).
    pub fn accept(&self, subprotocol: Option<String>, headers: Vec<(Vec<u8>, Vec<u8>)>) {
        self.command(Command::Accept { subprotocol, headers });
    }

    /// Sends a WebSocket message (ASGI `websocket.send`): text (`true`, valid UTF-8) or
    /// binary. The payload is never copied; its bytes count against the high-water mark until
    /// written.
    ///
    /// Returns [`SendState::Full`] when the sender should wait ([`ConnHandle::wait_writable`]),
    /// [`SendState::Closed`] (and queues nothing) when the connection is gone.
    pub fn send(&self, text: bool, payload: Bytes) -> SendState {
        self.queue_accounted(payload.len(), Command::Send { text, payload })
    }

    /// Closes the WebSocket with `code` and `reason` (ASGI `websocket.close`); before the
    /// accept, rejects the handshake with 403.
    ///
    /// An invalid code or reason closes with 1011 instead; a second close is ignored.
    pub fn close(&self, code: u16, reason: String) {
        self.command(Command::Close { code, reason });
    }

    /// Starts an HTTP response with `status` and `headers`: the answer to a plain HTTP request
    /// (ASGI `http.response.start`), or before a WebSocket accept a denial
    /// (`websocket.http.response.start`). The body follows with [`ConnHandle::respond_body`].
    ///
    /// The core adds the framing headers (`content-length` or `transfer-encoding`,
    /// `connection`) the application left out.
    pub fn respond(&self, status: u16, headers: Vec<(Vec<u8>, Vec<u8>)>) {
        self.command(Command::HttpResponseStart { status, headers });
    }

    /// Sends a piece of the response body started by [`ConnHandle::respond`]; `more` is false
    /// for the last one (ASGI `http.response.body`, `websocket.http.response.body`).
    ///
    /// Accounted like [`ConnHandle::send`]: the body is never copied, counts against the
    /// high-water mark until written, and the same [`SendState`] says whether to wait.
    pub fn respond_body(&self, body: Bytes, more: bool) -> SendState {
        self.queue_accounted(body.len(), Command::HttpResponseBody { body, more })
    }

    /// The application failed: closes the WebSocket with 1011, answers 500 if no response
    /// started, or else drops the connection (a response cannot be taken back half way).
    pub fn abort(&self) {
        self.command(Command::Abort);
    }

    /// Registers interest in [`Event::Writable`]. Returns `false` if the queue already drained
    /// below the low-water mark (or the connection closed), so there is nothing to wait for.
    #[must_use]
    pub fn wait_writable(&self) -> bool {
        self.0.want_writable.store(true, Ordering::SeqCst);
        if self.0.queued_bytes.load(Ordering::SeqCst) <= self.0.low_water || self.is_closed() {
            self.0.want_writable.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Bytes sent and not yet written.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.0.queued_bytes.load(Ordering::Acquire)
    }

    /// Tells the I/O side that the application took one delivered message (or body piece) of
    /// `len` bytes: [`Message::len`](crate::protocol::Message::len), or the piece's length.
    pub fn message_taken(&self, len: usize) {
        self.0.taken.fetch_add(1, Ordering::Relaxed);
        let messages = self.0.inbound.fetch_sub(1, Ordering::SeqCst).wrapping_sub(1);
        let bytes = self.0.inbound_bytes.fetch_sub(len, Ordering::SeqCst).wrapping_sub(len);
        if !self.is_full(messages, bytes) && self.0.read_paused.swap(false, Ordering::SeqCst) {
            self.0.notify.notify();
        }
    }

    /// Tells the I/O side that the application waits in `receive()` with nothing left to take.
    ///
    /// Call it after the replies to what was taken have been sent (queued): a connection whose
    /// peer broke the protocol right after valid messages lets those replies out before it
    /// fails, and waits for this call (within `close_timeout`) to know they are queued.
    pub fn receive_waiting(&self) {
        let taken = self.0.taken.load(Ordering::Relaxed);
        self.0.waiting_at.store(taken + 1, Ordering::SeqCst);
        if self.0.want_waiting.load(Ordering::SeqCst)
            && self.0.want_waiting.swap(false, Ordering::SeqCst)
        {
            self.0.notify.notify();
        }
    }

    /// Whether the I/O side is finished with the connection.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Queues a command and wakes the I/O side if the queue was empty.
    fn command(&self, cmd: Command) {
        let was_empty = {
            let mut c = self.0.commands.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let was_empty = c.queue.is_empty();
            c.queue.push(cmd);
            was_empty
        };
        if was_empty {
            self.0.notify.notify();
        }
    }

    /// Counts `len` bytes against the send buffer and queues `cmd`, which carries them: the
    /// driver releases them (see [`Command`]).
    fn queue_accounted(&self, len: usize, cmd: Command) -> SendState {
        if self.is_closed() {
            return SendState::Closed;
        }
        let queued = self.0.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.command(cmd);
        if queued > self.0.high_water {
            SendState::Full
        } else {
            SendState::Ready
        }
    }

    // ---- I/O side ----

    pub(crate) fn take_commands(&self, into: &mut Vec<Command>) {
        let mut c = self.0.commands.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::swap(&mut c.queue, into);
    }

    /// Counts a delivered message (or body piece) of `len` bytes; returns `true` if reading
    /// must pause: the application holds `ws_max_queue` messages or `ws_max_queue_bytes`
    /// bytes it has not taken.
    pub(crate) fn message_delivered(&self, len: usize) -> bool {
        self.0.delivered.fetch_add(1, Ordering::Relaxed);
        let messages = self.0.inbound.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = self.0.inbound_bytes.fetch_add(len, Ordering::SeqCst) + len;
        if !self.is_full(messages, bytes) {
            return false;
        }
        self.0.read_paused.store(true, Ordering::SeqCst);
        // The application may have taken messages meanwhile: re-check (see message_taken).
        let messages = self.0.inbound.load(Ordering::SeqCst);
        let bytes = self.0.inbound_bytes.load(Ordering::SeqCst);
        if !self.is_full(messages, bytes) && self.0.read_paused.swap(false, Ordering::SeqCst) {
            return false;
        }
        true
    }

    /// How much more may be delivered before reading pauses (see
    /// [`ConnHandle::message_delivered`]).
    pub(crate) fn inbound_room(&self) -> Room {
        let messages = self.0.inbound.load(Ordering::SeqCst);
        let bytes = self.0.inbound_bytes.load(Ordering::SeqCst);
        Room {
            messages: self.0.max_queue.saturating_sub(messages),
            bytes: self.0.max_queue_bytes.saturating_sub(bytes),
        }
    }

    /// Whether `messages` untaken messages of `bytes` bytes fill the application's queue.
    fn is_full(&self, messages: usize, bytes: usize) -> bool {
        messages >= self.0.max_queue || bytes >= self.0.max_queue_bytes
    }

    /// Whether the application has taken every message delivered and waited in `receive()`
    /// since ([`ConnHandle::receive_waiting`]). If so, every command it queued before that wait
    /// is in the queue now; if not, its next wait wakes the I/O side.
    pub(crate) fn caught_up(&self) -> bool {
        // Asked before the check, answered after the store in `receive_waiting`: one of the two
        // sides sees the other, so a wait is never missed.
        self.0.want_waiting.store(true, Ordering::SeqCst);
        let delivered = self.0.delivered.load(Ordering::Relaxed);
        let caught_up = self.0.waiting_at.load(Ordering::SeqCst) == delivered + 1;
        if caught_up {
            self.0.want_waiting.store(false, Ordering::SeqCst);
        }
        caught_up
    }

    pub(crate) fn is_read_paused(&self) -> bool {
        self.0.read_paused.load(Ordering::SeqCst)
    }

    /// Releases written bytes; returns `true` if a waiting sender should be told.
    pub(crate) fn release(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return false;
        }
        let left = self.0.queued_bytes.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        left <= self.0.low_water && self.0.want_writable.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn mark_closed(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.want_writable.store(false, Ordering::SeqCst);
    }
}

/// A server started by a backend.
pub trait RunningServer: Send + Sync {
    /// Stops accepting and closes every connection (open WebSockets get
    /// [`ServerConfig::shutdown_close_code`]). Returns at once.
    fn shutdown(&self);
    /// Waits up to `timeout` for every connection and thread to finish; returns whether they did.
    /// Connections still open after it are dropped.
    fn join(&self, timeout: Duration) -> bool;
    /// Number of connections currently open.
    fn connection_count(&self) -> usize;
    /// Whether every thread, task and connection of the server has ended: after
    /// [`RunningServer::shutdown`], nothing is accepted or served any more. Returns at once.
    fn is_finished(&self) -> bool;
    /// The server's event loop when it has no thread of its own and its caller turns it
    /// ([`InlineReactor`]); `None` (the default) when the backend runs its own threads.
    fn inline(&self) -> Option<&dyn InlineReactor> {
        None
    }
}

/// A backend's event loop run on its caller's thread, folded into the caller's own event loop
/// (the mio backend with `io_threads = 0`, under asyncio).
///
/// The caller watches [`InlineReactor::fd`] for readability and calls
/// [`InlineReactor::turn`] when it is readable, and again at
/// [`InlineReactor::next_deadline`] (one timer, re-armed after every turn). Every event the
/// server reports is pushed to its [`EventSink`] during a turn, on the caller's thread, so the
/// caller can take them right after the turn and needs no wake-up of its own.
///
/// An application operation ([`ConnHandle`]) is applied on a later turn. Its [`Notify`] makes
/// `fd` readable, or, when it is made on the thread that called
/// [`InlineReactor::set_turn_request`], asks for that turn through the request (once per
/// batch). [`RunningServer::shutdown`] makes `fd` readable too, and the caller keeps turning
/// until [`RunningServer::is_finished`]; [`RunningServer::join`] turns the loop itself,
/// blocking, until it finishes or the timeout passes.
pub trait InlineReactor: Send + Sync {
    /// The descriptor that is readable when a turn has work (an epoll descriptor); open for
    /// the life of the server.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Runs one turn of the loop without blocking: readiness, application operations,
    /// deadlines and accepting, as far as each can go now.
    fn turn(&self);
    /// When the next turn is due without readiness (an instant already past: at once);
    /// `None`: only on readiness.
    fn next_deadline(&self) -> Option<Instant>;
    /// Application operations made on the calling thread ask for a turn through `request`
    /// instead of making `fd` readable (which they still do if it returns `false`); `None`
    /// undoes it.
    fn set_turn_request(&self, request: Option<TurnRequest>);
}

/// How an inline reactor asks its caller for a turn soon; `false`: it cannot.
pub type TurnRequest = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a worker process of a server with several workers brings to its backend: its slot and
/// the sockets on which connections are handed between workers ([`crate::sticky`]; the I/O is
/// `zcasgi_transport::handoff`'s).
#[derive(Debug)]
pub struct WorkerSockets {
    slot: WorkerSlot,
    inbox: OwnedFd,
    peers: Vec<OwnedFd>,
}

impl WorkerSockets {
    /// Worker `slot`'s sockets: `inbox`, the receiving end of its own inbox, and `peers`, the
    /// sending end of every worker's inbox by index (its own included, unused).
    ///
    /// # Errors
    /// [`ConfigError`] if the index is not below the count, or `peers` has not one socket per
    /// worker.
    pub fn new(slot: WorkerSlot, inbox: OwnedFd, peers: Vec<OwnedFd>) -> Result<Self, ConfigError> {
        if slot.index >= slot.count {
            return Err(ConfigError::WorkerIndex { index: slot.index, count: slot.count });
        }
        if peers.len() != usize::from(slot.count) {
            return Err(ConfigError::WorkerInboxes { inboxes: peers.len(), count: slot.count });
        }
        Ok(Self { slot, inbox, peers })
    }

    /// This worker's slot.
    #[must_use]
    pub fn slot(&self) -> WorkerSlot {
        self.slot
    }

    /// The receiving end of this worker's inbox.
    #[must_use]
    pub fn inbox(&self) -> &OwnedFd {
        &self.inbox
    }

    /// The sending end of worker `index`'s inbox.
    #[must_use]
    pub fn peer(&self, index: u16) -> Option<&OwnedFd> {
        self.peers.get(usize::from(index))
    }
}

/// A transport backend: an event model that serves connections through the driver.
pub trait Backend: Send + Sync {
    /// The name users select it by (`"mio"`, `"tokio"`).
    fn name(&self) -> &'static str;
    /// Starts serving on already-bound listeners, delivering events to `sink`; in a worker
    /// process of a server with several workers, `worker` holds its slot and inboxes, and
    /// connections also arrive from its inbox.
    ///
    /// # Errors
    /// If threads or the event loop cannot be created.
    fn start(
        &self,
        cfg: Arc<ServerConfig>,
        listeners: Vec<Listener>,
        sink: Arc<dyn EventSink>,
        worker: Option<WorkerSockets>,
    ) -> std::io::Result<Box<dyn RunningServer>>;
}
