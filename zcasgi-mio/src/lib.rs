//! The mio transport backend of zcasgi: hand-written readiness loops over `mio`.
//!
//! # Reactor structure
//!
//! ```text
//!                  listening socket: one dup per reactor, edge-triggered
//!                 ┌──────────────────┴──────────────────┐
//!      ┌──────────▼──────────┐               ┌──────────▼──────────┐
//!      │ zcasgi-mio-0        │               │ zcasgi-mio-1   ...  │
//!      │ Poll, Slab<Conn>,   │               │                     │
//!      │ timer heap,         │               │                     │
//!      │ one read buffer     │               │                     │
//!      └───▲────────────┬────┘               └─────────────────────┘
//!          │            │
//!   Notify: mailbox   EventSink::push
//!   + Waker           (events to the application)
//! ```
//!
//! * `io_threads` **reactor** threads and nothing else. Each owns a `mio::Poll`, a slab of
//!   connections, a heap of connection deadlines and one read buffer shared by all its
//!   connections. Sockets are registered once, edge-triggered, for reading and writing; each
//!   connection keeps `readable`/`writable` flags that only `WouldBlock` clears (`reactor.rs`).
//! * Each reactor **accepts** from its own duplicate of every listener and serves what it
//!   accepts: no acceptor thread, no hand-off. It pauses at `max_connections` and backs off on
//!   `EMFILE` (`accept.rs`).
//! * The **application** reaches a connection through its `ConnHandle`, whose `Notify` puts the
//!   connection in its reactor's mailbox and wakes the reactor only if the mailbox was empty:
//!   one wake-up per batch, however many connections it names.
//! * With `io_threads = 0` there is **no thread**: one reactor, the same loop, whose turns its
//!   caller runs from its own event loop, on readiness of the reactor's epoll descriptor and at
//!   its next deadline ([`RunningServer::inline`], `inline.rs`). The Python binding folds it
//!   into the asyncio loop: no thread hop, no event-queue wake-up.
//!
//! The backend has no protocol logic: every byte goes through [`zcasgi_core::driver::Driver`].
//! Nor does it have transport policy of its own: accept errors, connection ids, the read and
//! flush steps, the linger and the tracking of its threads are `zcasgi_transport`'s.
//!
//! # Shutdown
//!
//! [`RunningServer::shutdown`] has every reactor close its listeners (the listening socket
//! closes with the last of them) and call `on_shutdown` on its connections: open WebSockets get
//! the close code of `ServerConfig::shutdown_close_code`. A reactor exits once its slab is
//! empty.
//! [`RunningServer::join`] waits for that; past its timeout it makes the threads drop every
//! connection (the application is told 1006) and exit. With no thread, `join` turns the reactor
//! itself until then.

#![deny(missing_docs)]

mod accept;
mod inline;
mod reactor;
mod timer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Poll;
use zcasgi_core::backend::{
    Backend, EventSink, InlineReactor, Listener, LogLevel, RunningServer, ServerConfig,
    WorkerSockets,
};
use zcasgi_transport::batch::Batching;
use zcasgi_transport::Context;

use crate::inline::Inline;
use crate::reactor::{Reactor, Remote};

/// How long `join` waits for threads it forced to stop.
const FORCE_GRACE: Duration = Duration::from_secs(1);

/// The mio backend: `io_threads` reactor threads, each accepting and serving connections; with
/// `io_threads = 0`, one reactor turned by the caller ([`RunningServer::inline`]).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use zcasgi_core::backend::{Backend, Event, EventSink, ServerConfig};
/// use zcasgi_mio::MioBackend;
///
/// struct Ignore;
/// impl EventSink for Ignore {
///     fn push(&self, _event: Event) {}
/// }
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let cfg = Arc::new(ServerConfig { io_threads: 2, ..ServerConfig::default() });
/// let server = MioBackend.start(cfg, vec![listener.into()], Arc::new(Ignore), None)?;
/// server.shutdown();
/// assert!(server.join(Duration::from_secs(5)));
///
/// // No I/O thread: an event loop turns the reactor when `fd()` is readable and at
/// // `next_deadline()`.
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let cfg = Arc::new(ServerConfig { io_threads: 0, ..ServerConfig::default() });
/// let server = MioBackend.start(cfg, vec![listener.into()], Arc::new(Ignore), None)?;
/// let inline = server.inline().expect("a reactor to turn");
/// inline.turn();
/// server.shutdown();
/// assert!(server.join(Duration::from_secs(5))); // turns it until it has finished
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MioBackend;

impl Backend for MioBackend {
    fn name(&self) -> &'static str {
        "mio"
    }

    fn start(
        &self,
        cfg: Arc<ServerConfig>,
        listeners: Vec<Listener>,
        sink: Arc<dyn EventSink>,
        worker: Option<WorkerSockets>,
    ) -> std::io::Result<Box<dyn RunningServer>> {
        // `io_threads = 0`: one reactor, turned by the caller (`inline.rs`).
        let inline = cfg.io_threads == 0;
        let threads = cfg.io_threads.max(1);
        let mut polls = Vec::with_capacity(threads);
        let mut reactors = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new()?;
            reactors.push(Arc::new(Remote::new(poll.registry())?));
            polls.push(poll);
        }
        // Every reactor gets its own duplicate of every listener; the last one the originals.
        let listeners = listeners
            .into_iter()
            .map(zcasgi_transport::Listener::new)
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut per_thread = Vec::with_capacity(threads);
        for _ in 1..threads {
            let dups = listeners.iter().map(zcasgi_transport::Listener::try_clone);
            per_thread.push(dups.collect::<std::io::Result<Vec<_>>>()?);
        }
        per_thread.push(listeners);
        // Reactor threads wake the application once per turn's events, before they wait
        // (`zcasgi_transport::batch`); a reactor its caller turns hands its events over after
        // each turn anyway.
        let batching = (!inline).then(|| Arc::new(Batching::new(sink.clone())));
        let sink = batching.clone().map_or(sink, |b| b as Arc<dyn EventSink>);
        let state = Arc::new(ServerState {
            max_connections: cfg.max_connections.max(1),
            ctx: Context::new(cfg, sink, worker)?,
            batching,
            accept_paused: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            reactors,
        });
        let mut server =
            MioServer { state: state.clone(), threads: Mutex::new(Vec::new()), inline: None };

        for (index, (poll, listeners)) in polls.into_iter().zip(per_thread).enumerate() {
            let registry = poll.registry().try_clone()?;
            let remote = state.reactors[index].clone();
            let reactor = Reactor::new(index, state.clone(), remote, registry, listeners);
            let guard = state.ctx.tracker().guard();
            if inline {
                server.inline =
                    Some(Inline::new(poll, state.reactors[index].clone(), reactor, guard));
                continue;
            }
            let state = state.clone();
            let handle =
                std::thread::Builder::new().name(format!("zcasgi-mio-{index}")).spawn(move || {
                    let _guard = guard;
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reactor.run(poll)))
                        .is_err()
                    {
                        // What the reactor delivered before it panicked still wakes the loop.
                        if let Some(batching) = &state.batching {
                            batching.before_wait();
                        }
                        state.reactor_panicked(index);
                    }
                });
            server.spawned(handle)?;
        }
        Ok(Box::new(server))
    }
}

/// What every thread of one server shares.
pub(crate) struct ServerState {
    /// What every backend's server shares: configuration, sink, ids, counts, tracker.
    pub(crate) ctx: Context,
    max_connections: usize,
    /// A reactor stopped accepting at `max_connections` and waits to be woken.
    accept_paused: AtomicBool,
    /// `shutdown` was called.
    stopping: AtomicBool,
    /// `join` timed out: drop everything now.
    forced: AtomicBool,
    reactors: Vec<Arc<Remote>>,
    /// The sink's batching, on reactor threads (`None`: the reactor is turned by its caller).
    pub(crate) batching: Option<Arc<Batching>>,
}

impl ServerState {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn forced(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    pub(crate) fn at_limit(&self) -> bool {
        self.ctx.connection_count() >= self.max_connections
    }

    /// Asks the next connection to close to wake every reactor.
    pub(crate) fn set_accept_paused(&self) {
        self.accept_paused.store(true, Ordering::SeqCst);
    }

    /// Counts a closed connection; wakes every reactor if one stopped accepting at the limit.
    pub(crate) fn connection_closed(&self) {
        self.ctx.connection_closed();
        // SeqCst pairs with `Listeners::update`, which raises the flag, then reads the count.
        if self.accept_paused.load(Ordering::SeqCst)
            && self.accept_paused.swap(false, Ordering::SeqCst)
        {
            for reactor in &self.reactors {
                reactor.wake();
            }
        }
    }

    /// Logs that reactor `index` panicked (it is counted as finished).
    pub(crate) fn reactor_panicked(&self, index: usize) {
        self.ctx.log(LogLevel::Error, format!("zcasgi-mio-{index} panicked"));
    }

    /// Stops accepting and starts closing; `force` drops every connection at once.
    fn stop(&self, force: bool) {
        self.stopping.store(true, Ordering::Release);
        if force {
            self.forced.store(true, Ordering::Release);
        }
        for reactor in &self.reactors {
            reactor.wake();
        }
    }
}

/// A server started by [`MioBackend`].
struct MioServer {
    state: Arc<ServerState>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The reactor its caller turns (`io_threads = 0`), instead of threads.
    inline: Option<Inline>,
}

impl MioServer {
    /// Keeps a spawned thread, or stops everything if it could not be spawned.
    fn spawned(&self, handle: std::io::Result<JoinHandle<()>>) -> std::io::Result<()> {
        match handle {
            Ok(h) => {
                self.lock_threads().push(h);
                Ok(())
            }
            Err(e) => {
                self.state.stop(true);
                Err(e)
            }
        }
    }

    fn lock_threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RunningServer for MioServer {
    fn shutdown(&self) {
        self.state.stop(false);
    }

    fn join(&self, timeout: Duration) -> bool {
        if let Some(inline) = &self.inline {
            // Nobody else turns the reactor while its caller waits here: turn it.
            let until = Instant::now().checked_add(timeout);
            let finished = inline.run_until(until.unwrap_or_else(far_future));
            if !finished {
                self.state.stop(true);
                inline.turn();
            }
            return finished;
        }
        let tracker = self.state.ctx.tracker();
        let finished = tracker.wait(timeout);
        if !finished {
            self.state.stop(true);
            let _ = tracker.wait(FORCE_GRACE);
        }
        // Reap the threads that ended; any other is left detached.
        let mut threads = self.lock_threads();
        for h in std::mem::take(&mut *threads) {
            if h.is_finished() {
                let _ = h.join();
            } else {
                threads.push(h);
            }
        }
        finished
    }

    fn connection_count(&self) -> usize {
        self.state.ctx.connection_count()
    }

    fn is_finished(&self) -> bool {
        self.state.ctx.tracker().live() == 0
    }

    fn inline(&self) -> Option<&dyn InlineReactor> {
        self.inline.as_ref().map(|inline| inline as &dyn InlineReactor)
    }
}

/// An instant no timeout reaches (a year from now).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 60 * 60)
}

impl Drop for MioServer {
    fn drop(&mut self) {
        // Dropped while serving: nobody can stop the threads after this, so stop them now.
        if self.state.ctx.tracker().live() > 0 {
            self.state.stop(true);
            if let Some(inline) = &self.inline {
                // Its caller will not turn it again: drop the connections now.
                inline.turn();
            }
        }
    }
}
