//! Accepting in the reactors: each reactor polls its own duplicate of every listener.
//!
//! Every reactor registers a `dup` of each listening socket in its own `Poll`, edge-triggered.
//! A new connection raises an edge in every reactor that listens; whichever gets to `accept`
//! first serves the connection on its own thread, with no hand-off. A busy reactor reaches its
//! listener later than an idle one, so new connections drift towards idle threads, and a turn
//! accepts at most [`ACCEPT_BUDGET`] connections, so a burst is shared out rather than taken by
//! the first thread to wake. (Measured against one acceptor thread handing sockets over
//! through the reactors' mailboxes: about 15% more handshakes per second, the same spread.)
//!
//! # Pausing
//!
//! At `max_connections` a reactor deregisters its listeners and raises the server's
//! `accept_paused` flag; the kernel keeps new connections in the backlog. The reactor that
//! closes a connection while the flag is up wakes every reactor, and each registers again
//! (registering reports a pending backlog at once). An accept error that pauses accepting
//! ([`AcceptError::Backoff`], the shared policy of `zcasgi_transport::accept`) deregisters the
//! reactor's listeners for [`BACKOFF`].
//!
//! # Hand-offs
//!
//! In a worker process, connections also arrive from the worker's inbox (other workers hand
//! over the connections of Engine.IO sessions this worker owns: `zcasgi_transport::handoff`).
//! Every reactor registers the inbox beside its listeners and takes hand-offs from it like
//! connections from a listener, under the same pause: at `max_connections` hand-offs wait in
//! the inbox.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use zcasgi_core::backend::LogLevel;
use zcasgi_transport::accept::{AcceptError, BACKOFF};
use zcasgi_transport::handoff::Receiver;
use zcasgi_transport::{Accepted, Listener as Socket};

use crate::ServerState;

/// Most connections one reactor accepts per turn of its loop.
pub(crate) const ACCEPT_BUDGET: usize = 32;

/// What one call to [`Listeners::accept`] gave.
#[derive(Debug)]
pub(crate) enum Step {
    /// A connection.
    Conn(Accepted),
    /// No listener has a connection waiting.
    Idle,
    /// Accepting stopped: at `max_connections`, or backing off after an error.
    Paused,
}

#[derive(Debug)]
struct Listener {
    /// A TCP or Unix listener (`zcasgi_transport::listener`).
    socket: Socket,
    /// Connections may be waiting: set by events, cleared by `WouldBlock`.
    pending: bool,
}

/// The worker's inbox, as one reactor polls it.
#[derive(Debug)]
struct Inbox {
    /// The receiving end (owned by the server's `Context`).
    fd: RawFd,
    /// Hand-offs may be waiting: set by events, cleared by `WouldBlock`.
    pending: bool,
    receiver: Receiver,
}

/// One reactor's duplicates of the server's listeners, and the worker's inbox.
#[derive(Debug)]
pub(crate) struct Listeners {
    sockets: Vec<Listener>,
    inbox: Option<Inbox>,
    /// The inbox's token; listener tokens are `first_token - 1 - i`, counting down below it.
    first_token: usize,
    registered: bool,
    /// Accepting paused after an error, until then.
    backoff: Option<Instant>,
}

impl Listeners {
    /// The reactor's listeners and the worker's inbox (`None` outside a worker process); the
    /// inbox uses token `first_token` and listener `i` token `first_token - 1 - i`.
    pub(crate) fn new(
        sockets: Vec<Socket>,
        inbox: Option<(RawFd, Receiver)>,
        first_token: usize,
    ) -> Self {
        let sockets =
            sockets.into_iter().map(|socket| Listener { socket, pending: true }).collect();
        let inbox = inbox.map(|(fd, receiver)| Inbox { fd, pending: true, receiver });
        Self { sockets, inbox, first_token, registered: false, backoff: None }
    }

    /// Notes an event on `token` if it is the inbox's or a listener's; returns whether it was.
    pub(crate) fn mark_pending(&mut self, token: Token) -> bool {
        if token.0 == self.first_token {
            if let Some(inbox) = &mut self.inbox {
                inbox.pending = true;
            }
            return true;
        }
        let Some(i) = (self.first_token - 1).checked_sub(token.0) else { return false };
        let Some(l) = self.sockets.get_mut(i) else { return false };
        l.pending = true;
        true
    }

    /// Whether a connection may be waiting and accepting is on.
    pub(crate) fn has_pending(&self) -> bool {
        let inbox = self.inbox.as_ref().is_some_and(|i| i.pending);
        self.registered && (inbox || self.sockets.iter().any(|l| l.pending))
    }

    /// When the back-off after an accept error ends.
    pub(crate) fn backoff(&self) -> Option<Instant> {
        self.backoff
    }

    /// Registers or deregisters the listeners as the server's state asks; call once per turn
    /// and after [`Step::Paused`].
    pub(crate) fn update(&mut self, registry: &Registry, state: &ServerState, now: Instant) {
        if self.sockets.is_empty() && self.inbox.is_none() {
            return;
        }
        if self.backoff.is_some_and(|until| now >= until) {
            self.backoff = None;
        }
        let mut want = self.backoff.is_none() && !state.at_limit();
        if !want && self.registered && self.backoff.is_none() {
            // At the limit. Raise the flag, then look again: a connection that closed before
            // the flag was up could not wake us (`ServerState::connection_closed`).
            state.set_accept_paused();
            want = !state.at_limit();
        }
        if want != self.registered {
            self.set_registered(registry, state, want);
        }
    }

    /// Accepts one connection from any listener with one waiting.
    pub(crate) fn accept(&mut self, state: &ServerState, now: Instant) -> Step {
        if !self.registered {
            return Step::Paused;
        }
        for l in &mut self.sockets {
            while l.pending {
                if state.at_limit() {
                    return Step::Paused;
                }
                match l.socket.accept() {
                    Ok(accepted) => {
                        state.ctx.connection_opened();
                        return Step::Conn(accepted);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => l.pending = false,
                    Err(e) => match state.ctx.accept_error(&e, now) {
                        AcceptError::Skip => {}
                        AcceptError::Backoff => {
                            self.backoff = Some(now + BACKOFF);
                            return Step::Paused;
                        }
                    },
                }
            }
        }
        self.receive(state)
    }

    /// Takes one connection handed over from the inbox, if one waits.
    fn receive(&mut self, state: &ServerState) -> Step {
        let Some(inbox) = &mut self.inbox else { return Step::Idle };
        while inbox.pending {
            if state.at_limit() {
                return Step::Paused;
            }
            match state.ctx.receive(&mut inbox.receiver) {
                Ok(Some(accepted)) => {
                    state.ctx.connection_opened();
                    return Step::Conn(accepted);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => inbox.pending = false,
                Err(e) => {
                    // Not expected of a socket pair the supervisor keeps open: stop polling
                    // it rather than spin.
                    state.ctx.log(LogLevel::Error, format!("cannot receive hand-offs: {e}"));
                    inbox.pending = false;
                }
            }
        }
        Step::Idle
    }

    /// Deregisters and closes the listeners (the socket closes with the last reactor's).
    pub(crate) fn close(&mut self, registry: &Registry) {
        if self.registered {
            for l in &mut self.sockets {
                let _ = registry.deregister(&mut SourceFd(&l.socket.as_raw_fd()));
            }
            if let Some(inbox) = &self.inbox {
                let _ = registry.deregister(&mut SourceFd(&inbox.fd));
            }
            self.registered = false;
        }
        self.sockets.clear();
        // Hand-offs that arrive from now on wait in the inbox for this worker's successor.
        self.inbox = None;
    }

    fn set_registered(&mut self, registry: &Registry, state: &ServerState, on: bool) {
        for (i, l) in self.sockets.iter_mut().enumerate() {
            let result = if on {
                // Whatever waits in the backlog is accepted on the next turn.
                l.pending = true;
                let token = Token(self.first_token - 1 - i);
                registry.register(&mut SourceFd(&l.socket.as_raw_fd()), token, Interest::READABLE)
            } else {
                registry.deregister(&mut SourceFd(&l.socket.as_raw_fd()))
            };
            if let Err(e) = result {
                state.ctx.log(LogLevel::Error, format!("cannot (de)register a listener: {e}"));
            }
        }
        if let Some(inbox) = &mut self.inbox {
            let mut source = SourceFd(&inbox.fd);
            let result = if on {
                inbox.pending = true;
                registry.register(&mut source, Token(self.first_token), Interest::READABLE)
            } else {
                registry.deregister(&mut source)
            };
            if let Err(e) = result {
                state.ctx.log(LogLevel::Error, format!("cannot (de)register the inbox: {e}"));
            }
        }
        self.registered = on;
    }
}
