//! One reactor thread: a `mio::Poll`, a slab of connections, their deadlines and one read
//! buffer, driving every connection through [`Driver`].
//!
//! # Theory of operation
//!
//! Sockets are registered once, edge-triggered, for `READABLE | WRITABLE`. An edge only says
//! "something changed", so each connection keeps two flags, `readable` and `writable`, set by
//! events and cleared only when a call returns `WouldBlock` (or a short read proves the receive
//! queue empty). Work on a connection is always the same short routine, [`Reactor::service`]:
//!
//! 1. while `readable` and the driver [`wants_read`](zcasgi_core::driver::Driver::wants_read): read and feed the
//!    driver (at most [`READ_BUDGET`] reads per turn, then the connection waits for the next
//!    turn, so one fast sender cannot starve the others);
//! 2. while `writable` and the driver [`wants_write`](zcasgi_core::driver::Driver::wants_write): vectored writes
//!    of its out queue;
//! 3. once the driver [`is_finished`](zcasgi_core::driver::Driver::is_finished): half-close, linger, close;
//! 4. re-arm the connection's deadline.
//!
//! The same routine runs on a readiness event, when the application's [`Notify`] wakes the
//! thread (after [`Driver::on_commands`]), when a deadline fires (after [`Driver::on_tick`]),
//! and at shutdown (after [`Driver::on_shutdown`]). Because the `readable` flag survives a
//! pause, a connection whose application stops taking messages stops reading, and resumes
//! reading as soon as it is woken, although no new edge will come for bytes already queued.
//!
//! Writable interest is registered once rather than toggled: an edge-triggered `EPOLLOUT` only
//! fires after a write hit a full send buffer, so a connection that never blocks costs no
//! events, and a connection that does costs no `epoll_ctl` calls on the way in or out.
//!
//! # Buffers
//!
//! All connections of a thread read into one shared buffer, through the read step of
//! [`zcasgi_transport::io::read`]: the bytes read are split off it (no copy) and handed to
//! [`Driver::on_read`], which keeps the payloads it needs as views of that memory and copies
//! only an unfinished tail. A driver in the middle of a large frame has a buffer of its own
//! sized for it ([`Driver::read_buffer`]): that is read into directly, saving the copy. An idle
//! connection holds no read buffer at all.
//!
//! # Wake-ups
//!
//! The application reaches a reactor through its [`Remote`]: a mailbox of connections to look
//! at, and a `mio::Waker`. A poster wakes the thread only when the mailbox was empty, so one
//! wake-up serves a whole batch. A reactor that its caller turns (`crate::inline`) may instead
//! be given a turn request: a post made on the caller's own thread asks the caller for a turn
//! through it (the binding: `loop.call_soon`) rather than writing the waker, and such a
//! reactor looks at its mailbox every turn.
//!
//! The other way, a reactor thread delivers its events to the application without waking it,
//! and wakes it once before its next `poll` (or every [`zcasgi_transport::batch::MAX_BATCH`]
//! events): the loop takes each turn's events in one batch.
//!
//! Mailbox entries name a connection by slot and id; the id doubles as the generation, so a
//! stale entry for a slot that has been reused is recognised and skipped (timer entries
//! likewise). A reactor also accepts connections itself, from its own duplicates of the
//! listeners (see `accept.rs`).
//!
//! A connection's socket is a [`socket2::Socket`] of either kind (TCP, Unix), registered by its
//! descriptor; the read step and the flush loop are its [`Session`]'s.
//!
//! # Hand-offs
//!
//! In a worker process, a connection whose request names another worker's Engine.IO session
//! is handed to that worker (`zcasgi_transport::handoff`): step 2 of the routine above is
//! followed by [`Context::hand_off`](zcasgi_transport::Context::hand_off), and a connection
//! that went to its owner is deregistered and dropped at once, never half-closed (the socket
//! lives on in the owner). A hand-off the owner's inbox has no room for is retried at the
//! driver's deadline. Connections handed over by other workers arrive through the inbox, as
//! from a listener (see `accept.rs`).
//!
//! A TLS connection cannot leave the process (`zcasgi_transport::relay`): its hand-off gives
//! the reactor one end of a socket pair instead, registered with the connection's slot and the
//! [`PAIR`] bit as its token. From then on the routine above is replaced by the session's relay
//! pump, run on readiness events of either socket, at its deadline, and on the next turn when
//! it ran out of budget; once the relay is finished, the pair end is closed and the socket goes
//! through step 3 like any other.
//!
//! [`Driver`]: zcasgi_core::driver::Driver
//! [`Driver::wants_read`]: zcasgi_core::driver::Driver::wants_read
//! [`Driver::wants_write`]: zcasgi_core::driver::Driver::wants_write
//! [`Driver::is_finished`]: zcasgi_core::driver::Driver::is_finished
//! [`Driver::on_commands`]: zcasgi_core::driver::Driver::on_commands
//! [`Driver::on_tick`]: zcasgi_core::driver::Driver::on_tick
//! [`Driver::on_shutdown`]: zcasgi_core::driver::Driver::on_shutdown
//! [`Driver::on_read`]: zcasgi_core::driver::Driver::on_read
//! [`Driver::read_buffer`]: zcasgi_core::driver::Driver::read_buffer

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use socket2::{SockRef, Socket};
use zcasgi_core::backend::{ConnId, LogLevel, Notify, TurnRequest};
use zcasgi_transport::batch::Batching;
use zcasgi_transport::io::{abandon, discard, recv_into, Flush, Read};
use zcasgi_transport::linger::half_close;
use zcasgi_transport::relay::{Pump, Relay};
use zcasgi_transport::{Accepted, HandOff, Session};

use crate::accept::{Listeners, Step, ACCEPT_BUDGET};
use crate::timer::{Entry, Timers};
use crate::ServerState;

/// The token of a thread's `Waker`; connections use their slab slot, listeners count down
/// from just below this.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// The bit that marks a relay's pair end in a token (the rest is its connection's slot).
/// Listener tokens have it too, but are recognised first.
const PAIR: usize = 1 << (usize::BITS - 2);

/// Most reads on one connection per turn of the loop.
const READ_BUDGET: usize = 16;

/// Connections an inline reactor serves at once between two turns ([`Reactor::serve_now`]);
/// the others wait for the next turn and are written together. The first replies of a busy
/// loop iteration leave at once, so that the client works meanwhile, and the rest in one burst
/// rather than one write, and one wake-up of the client, each: at 1,000 saturated connections
/// 4 measured about 20 % less CPU per message than no limit (medians of 3 alternating runs),
/// with no change for a single connection.
const SERVE_NOW_PER_TURN: usize = 4;

/// Events taken per `poll`.
pub(crate) const EVENTS: usize = 1024;

/// A connection, named so that a reused slot is told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    slot: usize,
    /// The connection id, unique within the server: the slot's generation.
    id: ConnId,
}

/// A reactor thread as other threads see it.
pub(crate) struct Remote {
    waker: Waker,
    ready: Mutex<Mailbox>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("waker", &self.waker).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Mailbox {
    /// Connections whose application queued commands or resumed taking messages.
    keys: Vec<Key>,
    /// An inline reactor's caller's thread, and how a post made on it asks for a turn.
    request: Option<(ThreadId, TurnRequest)>,
    /// An inline reactor's caller's thread, and how a post made on it is served at once.
    serve: Option<(ThreadId, ServeNow)>,
}

/// Serves a posted connection at once, on an inline reactor's caller's thread; `false`: it
/// could not (the reactor is turning, or served it once already since its last turn), and the
/// post goes to the mailbox.
pub(crate) type ServeNow = Arc<dyn Fn(Key) -> bool + Send + Sync>;

impl Remote {
    /// A remote for the reactor that will poll `registry`.
    pub(crate) fn new(registry: &Registry) -> io::Result<Self> {
        Ok(Self { waker: Waker::new(registry, WAKER)?, ready: Mutex::new(Mailbox::default()) })
    }

    /// Posts made on the calling thread ask for a turn through `request` instead of the
    /// waker (`None`: no more).
    pub(crate) fn set_turn_request(&self, request: Option<TurnRequest>) {
        self.lock().request = request.map(|request| (thread::current().id(), request));
    }

    /// Posts made on the calling thread are first offered to `serve` (`None`: no more).
    pub(crate) fn set_serve_now(&self, serve: Option<ServeNow>) {
        self.lock().serve = serve.map(|serve| (thread::current().id(), serve));
    }

    /// Wakes the thread.
    pub(crate) fn wake(&self) {
        // A failed wake (the eventfd counter is full) still leaves the thread woken.
        let _ = self.waker.wake();
    }

    /// Puts a connection in the mailbox. If it was empty, asks for a turn: through the turn
    /// request when posted on the thread that set it (an inline reactor's caller), else (or
    /// if the request fails) with the waker.
    ///
    /// On an inline reactor's caller's thread, with the mailbox empty, the connection is first
    /// offered to the reactor to serve at once ([`Remote::set_serve_now`]): its commands are
    /// applied and its bytes written now, so that a reply leaves while the caller goes on with
    /// other work, rather than at the next turn.
    fn post(&self, key: Key) {
        let serve = {
            let ready = self.lock();
            let here = thread::current().id();
            ready
                .serve
                .as_ref()
                .filter(|(thread, _)| ready.keys.is_empty() && *thread == here)
                .map(|(_, serve)| serve.clone())
        };
        if serve.is_some_and(|serve| serve(key)) {
            return;
        }
        let request = {
            let mut ready = self.lock();
            ready.keys.push(key);
            if ready.keys.len() > 1 {
                return;
            }
            let here = |(thread, _): &&(ThreadId, TurnRequest)| *thread == thread::current().id();
            ready.request.as_ref().filter(here).map(|(_, request)| request.clone())
        };
        if !request.is_some_and(|request| request()) {
            self.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`Notify`] of one connection: puts its key in the mailbox of its thread.
struct ConnNotify {
    remote: Arc<Remote>,
    key: Key,
}

impl Notify for ConnNotify {
    fn notify(&self) {
        self.remote.post(self.key);
    }
}

/// One connection of a reactor.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // Independent readiness bits of an edge-triggered socket.
struct Conn {
    id: ConnId,
    /// The socket (TCP or Unix), registered through its descriptor.
    socket: Socket,
    /// The driver, and the steps between it and the socket.
    session: Session,
    /// A relayed TLS connection's end of its socket pair (registered with the [`PAIR`] bit).
    pair: Option<Socket>,
    /// The socket may have bytes to read: set by events, cleared by `WouldBlock`.
    readable: bool,
    /// The socket may take bytes: set by events, cleared by `WouldBlock`.
    writable: bool,
    /// An event reported the peer's half-close (or an error): read until end of stream.
    hup: bool,
    /// End of stream or a socket error was seen: never read again.
    read_closed: bool,
    /// Waiting in the deferred list for another turn.
    deferred: bool,
    /// Half-closed by us after the driver finished; close at this instant at the latest.
    linger: Option<Instant>,
    /// The deadline that has a live entry in the timer heap.
    armed: Option<Instant>,
    /// Served at once on a post since the last turn ([`Reactor::serve_now`]).
    served_now: bool,
}

impl Conn {
    /// The socket failed (the driver knows): nothing is read or written again.
    fn failed(&mut self) {
        self.read_closed = true;
        self.readable = false;
        self.writable = false;
    }

    /// Keeps the `readable` flag in line with a read (or discard) that returned data or
    /// `WouldBlock`.
    fn note_read(&mut self, read: Read) {
        if read.drained(self.hup) {
            self.readable = false;
        }
    }

    /// The next instant this connection needs attention.
    fn deadline(&self) -> Option<Instant> {
        if self.linger.is_some() {
            return self.linger;
        }
        self.session.deadline()
    }
}

/// How long a turn's `poll` may wait for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Until the next deadline (a reactor thread).
    UntilDue,
    /// Not at all (a turn run by the caller's event loop).
    No,
    /// Until the next deadline or this instant, whichever is first.
    Until(Instant),
}

/// What a turn left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The reactor goes on.
    Running,
    /// The server stopped and every connection is gone (or was dropped): the reactor is done.
    Finished,
}

/// One reactor's state. `run` is its loop on a thread of its own; `turn` is one step of it,
/// for a caller that runs the loop itself (`crate::inline`).
pub(crate) struct Reactor {
    index: usize,
    state: Arc<ServerState>,
    remote: Arc<Remote>,
    registry: Registry,
    listeners: Listeners,
    conns: Slab<Conn>,
    timers: Timers,
    /// The shared read buffer.
    buf: BytesMut,
    /// Connections that used up their read budget and go on next turn.
    deferred: Vec<Key>,
    /// The mailbox, swapped out under the lock (the vector is reused).
    inbox: Vec<Key>,
    /// Scratch list of due timers.
    due: Vec<Entry>,
    /// Connections served at once on a post since the last turn.
    served_now: Vec<Key>,
    /// `on_shutdown` has been applied to every connection.
    stopping: bool,
}

impl Reactor {
    /// A reactor for thread `index`, whose `Poll` has `registry`, accepting from `listeners`.
    pub(crate) fn new(
        index: usize,
        state: Arc<ServerState>,
        remote: Arc<Remote>,
        registry: Registry,
        listeners: Vec<zcasgi_transport::Listener>,
    ) -> Self {
        let inbox = state.ctx.inbox().map(|fd| (fd.as_raw_fd(), state.ctx.receiver()));
        Self {
            index,
            state,
            remote,
            registry,
            listeners: Listeners::new(listeners, inbox, WAKER.0 - 1),
            conns: Slab::new(),
            timers: Timers::default(),
            buf: BytesMut::with_capacity(zcasgi_transport::io::READ_BUF_SIZE),
            deferred: Vec::new(),
            inbox: Vec::new(),
            due: Vec::new(),
            served_now: Vec::new(),
            stopping: false,
        }
    }

    /// Wakes the application for the events this thread delivered since it last waited.
    fn before_wait(&self) {
        if let Some(batching) = &self.state.batching {
            batching.before_wait();
        }
    }

    /// Runs the loop until the server stops and every connection is gone (a reactor thread).
    pub(crate) fn run(mut self, mut poll: Poll) {
        let mut events = Events::with_capacity(EVENTS);
        Batching::enter();
        while self.turn(&mut poll, &mut events, Wait::UntilDue) == Turn::Running {}
        self.before_wait();
    }

    /// Registers the listeners, so that the first turn accepts (a reactor turned by its
    /// caller: its first turn is due at once, see [`Reactor::next_deadline`]).
    pub(crate) fn start(&mut self) {
        self.listeners.update(&self.registry, &self.state, Instant::now());
    }

    /// One turn of the loop: shutdown steps, one `poll` (waiting as `wait` says), then the
    /// connections it reported, the mailbox, the deferred connections, the deadlines due and
    /// the listeners. Returns [`Turn::Finished`], with the listeners closed, once the server
    /// stopped and every connection is gone.
    pub(crate) fn turn(&mut self, poll: &mut Poll, events: &mut Events, wait: Wait) -> Turn {
        let now = Instant::now();
        for key in self.served_now.drain(..) {
            if let Some(conn) = self.conns.get_mut(key.slot).filter(|c| c.id == key.id) {
                conn.served_now = false;
            }
        }
        if self.state.forced() {
            self.abort_all();
            return self.finished();
        }
        if self.state.stopping() && !self.stopping {
            self.begin_shutdown(now);
        }
        if self.stopping && self.conns.is_empty() {
            return self.finished();
        }
        self.listeners.update(&self.registry, &self.state, now);
        let timeout = match wait {
            Wait::UntilDue => self.next_deadline().map(|at| at.saturating_duration_since(now)),
            Wait::No => Some(Duration::ZERO),
            Wait::Until(at) => Some(
                self.next_deadline().map_or(at, |due| due.min(at)).saturating_duration_since(now),
            ),
        };
        self.before_wait();
        if let Err(e) = poll.poll(events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Turn::Running;
            }
            self.state.ctx.log(
                LogLevel::Error,
                format!("zcasgi-mio-{}: poll failed, dropping its connections: {e}", self.index),
            );
            self.abort_all();
            return self.finished();
        }
        let now = Instant::now();
        let mut woken = false;
        for ev in &*events {
            let token = ev.token();
            if token == WAKER {
                woken = true;
                continue;
            }
            if self.listeners.mark_pending(token) {
                continue;
            }
            if token.0 & PAIR != 0 {
                // A relay's pair end: the pump tries every direction.
                if self.conns.get(token.0 & !PAIR).is_some_and(|c| c.pair.is_some()) {
                    self.service(token.0 & !PAIR, now);
                }
                continue;
            }
            let Some(conn) = self.conns.get_mut(token.0) else { continue };
            // Stale events for a reused slot are harmless: they only make us try.
            let error = ev.is_error();
            if ev.is_readable() || ev.is_read_closed() || error {
                conn.readable = true;
            }
            if ev.is_read_closed() || error {
                conn.hup = true;
            }
            if ev.is_writable() || ev.is_write_closed() || error {
                conn.writable = true;
            }
            self.service(token.0, now);
        }
        // A reactor its caller turns may be asked for turns without its waker
        // (`Remote::set_turn_request`): it looks at its mailbox every turn.
        if woken || wait != Wait::UntilDue {
            self.drain_mailbox(now);
        }
        self.run_deferred(now);
        self.fire_timers(now);
        self.accept(now);
        Turn::Running
    }

    /// When the next turn is due without readiness: now if connections or listeners have
    /// work left over from the last turn, else the earliest deadline or accept back-off
    /// (`None`: only on readiness).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if !self.deferred.is_empty() || self.listeners.has_pending() {
            return Some(Instant::now());
        }
        [self.timers.next_deadline(), self.listeners.backoff()].into_iter().flatten().min()
    }

    /// Logs that a turn of this reactor panicked (it is dropped, and counted as finished).
    pub(crate) fn panicked(&self) {
        self.state.reactor_panicked(self.index);
    }

    /// The end of the loop: closes the listeners.
    fn finished(&mut self) -> Turn {
        self.listeners.close(&self.registry);
        Turn::Finished
    }

    /// Accepts up to [`ACCEPT_BUDGET`] connections.
    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            match self.listeners.accept(&self.state, now) {
                Step::Conn(accepted) => self.add(accepted, now),
                Step::Idle => return,
                Step::Paused => {
                    self.listeners.update(&self.registry, &self.state, now);
                    return;
                }
            }
        }
    }

    /// Reads, writes and closes as far as the connection in `slot` can go now.
    fn service(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.linger.is_some() {
            if self.discard(slot) {
                self.close(slot);
            } else {
                self.arm(slot);
            }
            return;
        }
        if let Some(pair) = &conn.pair {
            let more = conn.session.pump(&conn.socket, pair, now) == Pump::More;
            if conn.session.is_finished() {
                conn.read_closed |= conn.session.relay().is_some_and(Relay::is_client_done);
                self.finish(slot, now);
                return;
            }
            if more {
                self.defer(slot);
            }
            self.arm(slot);
            return;
        }
        let mut budget = READ_BUDGET;
        while conn.readable && !conn.read_closed && conn.session.wants_read() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let result = conn.session.read(&conn.socket, &mut self.buf, now);
            match result {
                Read::Eof => {
                    conn.readable = false;
                    conn.read_closed = true;
                }
                Read::Failed => conn.failed(),
                _ => conn.note_read(result),
            }
        }
        let more_to_read = budget == 0 && conn.readable && conn.session.wants_read();
        flush(conn);
        match self.state.ctx.hand_off(&mut conn.session, conn.socket.as_fd(), now) {
            HandOff::Stay => {}
            HandOff::Moved => {
                // The owner has the socket: forget it, without shutting it down.
                self.close(slot);
                return;
            }
            HandOff::Relay(pair) => {
                self.relay(slot, pair, now);
                return;
            }
        }
        if conn.session.wants_write() {
            // A hand-off that failed at once queued its answer (503).
            flush(conn);
        }
        if conn.session.is_finished() {
            self.finish(slot, now);
            return;
        }
        if more_to_read {
            self.defer(slot);
        }
        self.arm(slot);
    }

    /// Starts relaying the TLS connection in `slot` to its owner through `pair`.
    fn relay(&mut self, slot: usize, pair: Socket, now: Instant) {
        let token = Token(slot | PAIR);
        let source = &mut SourceFd(&pair.as_raw_fd());
        if let Err(e) =
            self.registry.register(source, token, Interest::READABLE | Interest::WRITABLE)
        {
            // The owner sees the end of its stream; the client, a closed connection.
            self.state.ctx.log(LogLevel::Warning, format!("cannot register a relay: {e}"));
            self.close(slot);
            return;
        }
        self.conns[slot].pair = Some(pair);
        self.service(slot, now);
    }

    /// The driver is done: close now if the peer is gone, or closed its WebSocket and has
    /// nothing unread (it may send nothing more), else half-close and linger until its end of
    /// stream (`zcasgi_transport::linger`). Closing at once spares the shutdown, and the wake-up
    /// and read for the peer's end of stream, of every WebSocket its client closes.
    fn finish(&mut self, slot: usize, now: Instant) {
        self.close_pair(slot);
        let conn = &mut self.conns[slot];
        let quiet =
            !conn.readable && !conn.session.is_tls() && conn.session.driver().is_closed_by_client();
        match half_close(SockRef::from(&conn.socket), conn.read_closed || quiet, now) {
            None => self.close(slot),
            Some(until) => {
                conn.linger = Some(until);
                self.service(slot, now);
            }
        }
    }

    /// Reads and drops input of a lingering connection; returns whether it can be closed.
    fn discard(&mut self, slot: usize) -> bool {
        let conn = &mut self.conns[slot];
        for _ in 0..READ_BUDGET {
            if !conn.readable {
                return false;
            }
            let socket = &conn.socket;
            match discard(&mut self.buf, |b| recv_into(socket, b)) {
                Read::Eof | Read::Failed => return true,
                result => conn.note_read(result),
            }
        }
        self.defer(slot);
        false
    }

    fn defer(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if !conn.deferred {
            conn.deferred = true;
            self.deferred.push(Key { slot, id: conn.id });
        }
    }

    fn run_deferred(&mut self, now: Instant) {
        if self.deferred.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.deferred);
        for key in &keys {
            if let Some(conn) = self.live(*key) {
                conn.deferred = false;
                self.service(key.slot, now);
            }
        }
        // Keep the allocation if nothing was deferred again meanwhile.
        if self.deferred.is_empty() {
            self.deferred = keys;
            self.deferred.clear();
        }
    }

    fn live(&mut self, key: Key) -> Option<&mut Conn> {
        self.conns.get_mut(key.slot).filter(|c| c.id == key.id)
    }

    /// Keeps the timer heap entry of the connection in line with its deadline.
    fn arm(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        let want = conn.deadline();
        if want == conn.armed {
            return;
        }
        conn.armed = want;
        if let Some(at) = want {
            self.timers.push(Entry { at, slot, id: conn.id });
            // Lazily deleted entries: drop them once they outnumber the live ones.
            if self.timers.len() > 2 * self.conns.len() + 64 {
                let conns = &self.conns;
                self.timers.retain(|e| {
                    conns.get(e.slot).is_some_and(|c| c.id == e.id && c.armed == Some(e.at))
                });
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.pop_due(now, &mut due);
        for e in due.drain(..) {
            let Some(conn) = self.live(Key { slot: e.slot, id: e.id }) else { continue };
            if conn.armed != Some(e.at) {
                continue;
            }
            conn.armed = None;
            if conn.linger.is_some_and(|at| now >= at) {
                self.close(e.slot);
                continue;
            }
            conn.session.driver_mut().on_tick(now);
            self.service(e.slot, now);
        }
        self.due = due;
    }

    /// Serves a connection whose application has news at once, between turns, as the mailbox
    /// would at the next turn (an inline reactor, on its caller's thread). Returns `false`,
    /// leaving the rest to the next turn, for a connection served this way since the last
    /// turn (so that a burst of sends on one connection is written in one batch, not one
    /// write each), once [`SERVE_NOW_PER_TURN`] connections were, or when serving it moved the
    /// reactor's next deadline earlier (the caller re-arms its timer after a turn).
    pub(crate) fn serve_now(&mut self, key: Key, now: Instant) -> bool {
        if self.served_now.len() >= SERVE_NOW_PER_TURN {
            return false;
        }
        let Some(conn) = self.live(key) else { return true };
        if conn.served_now {
            return false;
        }
        conn.served_now = true;
        if conn.linger.is_none() {
            conn.session.driver_mut().on_commands(now);
        }
        self.served_now.push(key);
        let before = self.timers.next_deadline();
        self.service(key.slot, now);
        let after = self.next_deadline();
        after.is_none_or(|after| before.is_some_and(|before| after >= before))
    }

    /// Serves the connections whose application has news.
    fn drain_mailbox(&mut self, now: Instant) {
        std::mem::swap(&mut self.remote.lock().keys, &mut self.inbox);
        let mut inbox = std::mem::take(&mut self.inbox);
        for key in inbox.drain(..) {
            if let Some(conn) = self.live(key) {
                if conn.linger.is_none() {
                    conn.session.driver_mut().on_commands(now);
                }
                self.service(key.slot, now);
            }
        }
        self.inbox = inbox;
    }

    fn add(&mut self, mut accepted: Accepted, now: Instant) {
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.registry.register(
            &mut SourceFd(&accepted.socket.as_raw_fd()),
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.state.ctx.log(LogLevel::Warning, format!("cannot register a connection: {e}"));
            drop(accepted);
            self.released();
            return;
        }
        let id = self.state.ctx.next_id();
        let notify = Box::new(ConnNotify { remote: self.remote.clone(), key: Key { slot, id } });
        let session = self.state.ctx.session(id, notify, &mut accepted, now);
        // Not readable or writable until told: registration reports the current state at once.
        entry.insert(Conn {
            id,
            socket: accepted.socket,
            session,
            pair: None,
            readable: false,
            writable: false,
            hup: false,
            read_closed: false,
            deferred: false,
            linger: None,
            armed: None,
            served_now: false,
        });
        self.arm(slot);
    }

    /// Deregisters and drops the pair end of a relayed connection (the owner reads its end of
    /// stream).
    fn close_pair(&mut self, slot: usize) {
        if let Some(pair) = self.conns[slot].pair.take() {
            let _ = self.registry.deregister(&mut SourceFd(&pair.as_raw_fd()));
        }
    }

    /// Deregisters and drops the connection in `slot`.
    fn close(&mut self, slot: usize) {
        self.close_pair(slot);
        let conn = self.conns.remove(slot);
        let _ = self.registry.deregister(&mut SourceFd(&conn.socket.as_raw_fd()));
        drop(conn);
        self.released();
    }

    fn released(&self) {
        self.state.connection_closed();
    }

    /// Stops accepting and starts the close of every connection (1012 for open WebSockets).
    fn begin_shutdown(&mut self, now: Instant) {
        self.stopping = true;
        self.listeners.close(&self.registry);
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let conn = &mut self.conns[slot];
            if conn.linger.is_none() {
                conn.session.driver_mut().on_shutdown(now);
            }
            self.service(slot, now);
        }
    }

    /// Drops every connection at once (join timed out, or the poll failed).
    fn abort_all(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            abandon(self.conns[slot].session.driver_mut());
            self.close(slot);
        }
    }
}

/// Writes the driver's out queue until it is empty or the socket is full.
fn flush(conn: &mut Conn) {
    if !conn.writable {
        return;
    }
    match conn.session.flush(&conn.socket) {
        Flush::Done => {}
        Flush::Blocked => conn.writable = false,
        Flush::Failed => conn.failed(),
    }
}
