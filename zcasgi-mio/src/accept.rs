//! The acceptor thread: accepts on every listener and hands sockets to the reactors.
//!
//! One thread owns the listeners, in a `Poll` of its own. Each accepted socket gets
//! `TCP_NODELAY`, its local address, and goes to the reactor with the fewest connections
//! (ties taken round-robin) through that reactor's mailbox, so connections spread evenly over
//! the threads however they arrive, and the reactors never contend for a listener.
//!
//! The listeners are registered only while the acceptor wants connections. At
//! `max_connections` it deregisters them and the backlog waits in the kernel; the reactor that
//! closes a connection wakes it, and re-registering reports any pending connection at once.
//! Accept errors that name a resource (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) deregister the
//! listeners for [`BACKOFF`] and are logged at most once a second; errors that concern one
//! aborted connection are skipped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use zcasgi_core::backend::LogLevel;

use crate::reactor::{Accepted, WAKER};
use crate::ServerState;

/// Pause after a resource error from `accept`.
const BACKOFF: Duration = Duration::from_millis(100);

/// Shortest interval between two logged accept errors.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The acceptor thread's state.
pub(crate) struct Acceptor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    state: Arc<ServerState>,
    /// The listeners are registered with `poll`.
    registered: bool,
    /// Paused at `max_connections`.
    at_limit: bool,
    /// Paused after a resource error, until then.
    backoff: Option<Instant>,
    last_log: Option<Instant>,
    /// Accept errors not logged since the last log.
    suppressed: u64,
    /// Where the search for the least loaded reactor starts.
    next: usize,
}

impl Acceptor {
    /// An acceptor for `listeners`, polled by `poll` (whose waker is the state's).
    pub(crate) fn new(poll: Poll, listeners: Vec<TcpListener>, state: Arc<ServerState>) -> Self {
        Self {
            poll,
            listeners,
            state,
            registered: false,
            at_limit: false,
            backoff: None,
            last_log: None,
            suppressed: 0,
            next: 0,
        }
    }

    /// Accepts until the server stops.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            if self.state.stopping() {
                break;
            }
            let now = Instant::now();
            if self.backoff.is_some_and(|until| now >= until) {
                self.backoff = None;
            }
            if self.at_limit && !self.state.at_limit() {
                self.at_limit = false;
                self.state.set_accept_paused(false);
            }
            let want = !self.at_limit && self.backoff.is_none();
            if want != self.registered {
                self.set_registered(want);
            }
            let timeout = self.backoff.map(|until| until.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.state.log(LogLevel::Error, format!("acceptor poll failed: {e}"));
                break;
            }
            for ev in &events {
                if ev.token() != WAKER && self.registered {
                    self.accept_from(ev.token().0);
                }
            }
        }
        if self.registered {
            self.set_registered(false);
        }
        // Dropping the listeners closes them: new connections are refused from here on.
        self.listeners.clear();
    }

    fn set_registered(&mut self, on: bool) {
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            let registry = self.poll.registry();
            let result = if on {
                registry.register(listener, Token(i), Interest::READABLE)
            } else {
                registry.deregister(listener)
            };
            if let Err(e) = result {
                self.state.log(LogLevel::Error, format!("cannot (de)register a listener: {e}"));
            }
        }
        self.registered = on;
    }

    /// Accepts from listener `i` until it has nothing more, or the acceptor must pause.
    fn accept_from(&mut self, i: usize) {
        loop {
            if self.at_limit || self.backoff.is_some() {
                return;
            }
            if self.state.at_limit() {
                // Reactors wake us when a connection closes while this flag is set; the loop
                // checks the count again before it sleeps, so a close in between is not lost.
                self.state.set_accept_paused(true);
                self.at_limit = true;
                return;
            }
            match self.listeners[i].accept() {
                Ok((stream, peer)) => self.hand_off(stream, peer),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ if is_connection_error(&e) => {}
                    _ => {
                        self.back_off(&e);
                        return;
                    }
                },
            }
        }
    }

    fn hand_off(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.state.connection_opened();
        // Best effort: a socket that refuses these still works.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let reactors = &self.state.reactors;
        let n = reactors.len();
        let start = self.next;
        self.next = (start + 1) % n;
        let mut best = start;
        let mut best_load = reactors[start].load();
        for k in 1..n {
            let i = (start + k) % n;
            let load = reactors[i].load();
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        reactors[best].hand_off(Accepted { stream, peer, local });
    }

    fn back_off(&mut self, err: &io::Error) {
        let now = Instant::now();
        self.backoff = Some(now + BACKOFF);
        if self.last_log.is_some_and(|at| now.duration_since(at) < LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        let more = if suppressed > 0 { format!(" ({suppressed} more since the last)") } else {
            String::new()
        };
        self.state.log(
            LogLevel::Warning,
            format!("accept failed: {err}{more}; pausing accepts for {}ms", BACKOFF.as_millis()),
        );
        self.last_log = Some(now);
    }
}

/// Errors `accept` reports for one connection that was aborted before it was taken
/// (`accept(2)`: "Linux `accept()` passes already-pending network errors on the new socket as an
/// error code"): skip it and accept the next.
fn is_connection_error(err: &io::Error) -> bool {
    if err.kind() == io::ErrorKind::ConnectionAborted {
        return true;
    }
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP
                | libc::ETIMEDOUT
        )
    )
}
