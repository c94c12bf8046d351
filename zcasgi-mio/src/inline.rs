//! The reactor turned by its caller (`io_threads = 0`): no thread of its own.
//!
//! One [`Reactor`], as a reactor thread has, whose loop the caller runs a turn at a time
//! ([`InlineReactor`]): the caller's event loop watches the `Poll`'s epoll descriptor, which is
//! readable when a socket, a listener or the reactor's `Waker` is, and calls
//! [`InlineReactor::turn`] then, and at [`InlineReactor::next_deadline`]. A turn is the same
//! [`Reactor::turn`] a thread runs, with a `poll` that does not wait. Events go to the sink
//! during the turn, on the caller's thread.
//!
//! The application's operations reach the reactor as they do a thread: through its mailbox and
//! `Waker`, whose write makes the epoll descriptor readable, so the caller's loop turns the
//! reactor again on its next iteration; or, for operations made on the caller's own thread once
//! it gave a turn request ([`InlineReactor::set_turn_request`]), by asking the caller for that
//! turn directly, with no write and no wake-up of the descriptor.
//!
//! Better still, an operation made on the caller's thread between turns is served at once
//! ([`Reactor::serve_now`]): the first post of a connection since the last turn applies its
//! commands and writes its bytes then and there, so a reply is on the wire while the caller's
//! loop runs the other tasks of its iteration (a client waiting for it can work meanwhile),
//! instead of after all of them. Later posts of the same connection before the next turn, and
//! the posts of a busy iteration past its first few connections, go to the mailbox and are
//! written together.
//!
//! [`RunningServer::join`](zcasgi_core::backend::RunningServer::join) turns the reactor itself
//! ([`Inline::run_until`]), waiting for readiness, since its caller's loop waits meanwhile.
//!
//! The `Poll` (and so the descriptor) lives as long as the server, after the reactor finished
//! too: the caller's loop may still watch it, and its number must not be reused meanwhile.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use zcasgi_core::backend::{InlineReactor, TurnRequest};
use zcasgi_transport::Guard;

use crate::reactor::{Key, Reactor, Remote, ServeNow, Turn, Wait, EVENTS};

/// A reactor run by its caller's event loop.
pub(crate) struct Inline {
    /// The `Poll`'s epoll descriptor (the `Poll` is in `turning`, never dropped before `self`).
    fd: RawFd,
    turning: Arc<Mutex<Turning>>,
    remote: Arc<Remote>,
}

struct Turning {
    poll: Poll,
    events: Events,
    /// The reactor and the guard that counts it as live; `None` once it finished (or
    /// panicked).
    reactor: Option<(Reactor, Guard)>,
}

impl Inline {
    /// The inline reactor over `poll`, counted as live by `guard` until it finishes. Its
    /// listeners are registered at once, and its first turn is due at once.
    pub(crate) fn new(poll: Poll, remote: Arc<Remote>, mut reactor: Reactor, guard: Guard) -> Self {
        reactor.start();
        let events = Events::with_capacity(EVENTS);
        let turning = Turning { poll, events, reactor: Some((reactor, guard)) };
        Self { fd: turning.poll.as_raw_fd(), turning: Arc::new(Mutex::new(turning)), remote }
    }

    /// Turns the reactor, waiting for readiness, until it finished or `until` passed; returns
    /// whether it finished.
    pub(crate) fn run_until(&self, until: Instant) -> bool {
        let mut turning = self.lock();
        while turning.reactor.is_some() && Instant::now() < until {
            turning.turn(Wait::Until(until));
        }
        turning.reactor.is_none()
    }

    fn lock(&self) -> MutexGuard<'_, Turning> {
        self.turning.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How a post is served at once: unless the reactor is turning (a post made during a
    /// turn) or gone.
    fn serve_now(&self) -> ServeNow {
        let turning = Arc::downgrade(&self.turning);
        Arc::new(move |key: Key| {
            let Some(turning) = turning.upgrade() else { return false };
            let Ok(mut turning) = turning.try_lock() else { return false };
            turning.serve_now(key)
        })
    }
}

impl Turning {
    /// Serves `key` at once ([`Reactor::serve_now`]); a panic drops the reactor, as in a turn.
    fn serve_now(&mut self, key: Key) -> bool {
        let Some((reactor, _)) = &mut self.reactor else { return false };
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reactor.serve_now(key, Instant::now())
        }));
        if let Ok(served) = served {
            return served;
        }
        reactor.panicked();
        self.reactor = None;
        false
    }

    /// One turn; drops the reactor (and its guard) once it finished or panicked.
    fn turn(&mut self, wait: Wait) {
        let (poll, events) = (&mut self.poll, &mut self.events);
        let Some((reactor, _)) = &mut self.reactor else {
            // Finished: take what made the descriptor readable (a late wake-up), so that the
            // caller's loop, which may watch it a little longer, does not see it ready again.
            let _ = poll.poll(events, Some(Duration::ZERO));
            return;
        };
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reactor.turn(poll, events, wait)
        }));
        match turn {
            Ok(Turn::Running) => {}
            Ok(Turn::Finished) => self.reactor = None,
            Err(_) => {
                reactor.panicked();
                self.reactor = None;
            }
        }
    }
}

impl InlineReactor for Inline {
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is the descriptor of the `Poll` in `turning`, which is dropped only with
        // `self` (a finished reactor keeps its `Poll`), so it stays open while borrowed.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    fn turn(&self) {
        self.lock().turn(Wait::No);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.lock().reactor.as_ref().and_then(|(reactor, _)| reactor.next_deadline())
    }

    fn set_turn_request(&self, request: Option<TurnRequest>) {
        self.remote.set_serve_now(request.is_some().then(|| self.serve_now()));
        self.remote.set_turn_request(request);
    }
}
