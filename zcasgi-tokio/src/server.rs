//! The runtime, the accept loops and the [`RunningServer`] handle.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Runtime;
use tokio::sync::{watch, Semaphore};
use zcasgi_core::backend::{
    EventSink, Listener, LogLevel, RunningServer, ServerConfig, WorkerSockets,
};
use zcasgi_transport::accept::{AcceptError, BACKOFF};
use zcasgi_transport::batch::Batching;
use zcasgi_transport::{Accepted, Context, Guard};

use crate::conn;
use crate::shutdown::{Shutdown, Stop};

/// How long `join` lets the runtime's threads wind down after its tasks are done or aborted.
const RUNTIME_GRACE: Duration = Duration::from_secs(1);

/// What every task of one server shares.
struct Shared {
    /// What every backend's server shares; its tracker counts accept loops and connection
    /// tasks.
    ctx: Context,
    /// One permit per connection served; acquired before `accept`, so excess clients wait in
    /// the listen backlog.
    limit: Arc<Semaphore>,
    /// The shutdown signal as connections wait for it.
    stop: Stop,
}

/// Counts a connection as open until dropped, holding its permit and its task's guard.
pub(crate) struct ConnGuard {
    shared: Arc<Shared>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _task: Guard,
}

impl ConnGuard {
    /// What the server's connections share.
    pub(crate) fn ctx(&self) -> &Context {
        &self.shared.ctx
    }

    /// The server's shutdown signal.
    pub(crate) fn stop(&self) -> &Stop {
        &self.shared.stop
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.ctx.connection_closed();
    }
}

/// Builds the runtime and starts one accept loop per listener, and in a worker process the
/// loop of its inbox.
pub(crate) fn start(
    cfg: Arc<ServerConfig>,
    listeners: Vec<Listener>,
    sink: Arc<dyn EventSink>,
    worker: Option<WorkerSockets>,
) -> io::Result<Box<dyn RunningServer>> {
    if cfg.io_threads == 0 {
        // A tokio runtime cannot be turned a step at a time by another event loop.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "io_threads=0 (the I/O on the event loop's thread) needs backend mio",
        ));
    }
    let thread_no = AtomicUsize::new(0);
    // The application is woken once per batch of a worker's events: when the worker runs out
    // of tasks, or ends (it may drop tasks on its way out).
    let sink = Arc::new(Batching::new(sink));
    let (parking, stopping) = (sink.clone(), sink.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.io_threads)
        .thread_name_fn(move || {
            format!("zcasgi-tokio-{}", thread_no.fetch_add(1, Ordering::Relaxed))
        })
        .on_thread_start(Batching::enter)
        .on_thread_park(move || parking.before_wait())
        .on_thread_stop(move || stopping.before_wait())
        .enable_io()
        .enable_time()
        .build()?;
    let permits = cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        ctx: Context::new(cfg, sink, worker)?,
        limit: Arc::new(Semaphore::new(permits)),
        stop: Stop::default(),
    });
    let (listeners, inbox) = {
        // `AsyncFd` registers with the runtime's reactor.
        let _entered = runtime.enter();
        let listeners = listeners
            .into_iter()
            .map(|l| register(zcasgi_transport::Listener::new(l)?, Interest::READABLE))
            .collect::<io::Result<Vec<_>>>()?;
        let inbox = match shared.ctx.inbox() {
            Some(fd) => Some(register(fd.try_clone_to_owned()?, Interest::READABLE)?),
            None => None,
        };
        (listeners, inbox)
    };
    let (signal, rx) = watch::channel(false);
    for listener in listeners {
        let guard = shared.ctx.tracker().guard();
        runtime.spawn(accept_loop(listener, shared.clone(), Shutdown::new(rx.clone()), guard));
    }
    if let Some(inbox) = inbox {
        let guard = shared.ctx.tracker().guard();
        runtime.spawn(inbox_loop(inbox, shared.clone(), Shutdown::new(rx.clone()), guard));
    }
    Ok(Box::new(Server { shared, signal, runtime: Mutex::new(Some(runtime)) }))
}

/// Registers a socket (a listener, or a connection's [`socket2::Socket`]) with the current
/// runtime's reactor.
pub(crate) fn register<T: AsRawFd>(socket: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (a `socket2::Socket`, or a listener holding one), and
    // `as_raw_fd` returns that same descriptor until it is dropped: nothing swaps it out, since
    // `AsyncFd::get_mut` is never called.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

/// Accepts connections until shutdown, spawning one task per connection.
async fn accept_loop(
    listener: AsyncFd<zcasgi_transport::Listener>,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
    _guard: Guard,
) {
    loop {
        let Some(permit) = permit(&shared, &mut shutdown).await else { return };
        let accepted = loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.recv() => return,
                accepted = listener.async_io(Interest::READABLE, zcasgi_transport::Listener::accept) => accepted,
            };
            match accepted {
                Ok(accepted) => break accepted,
                Err(e) => match shared.ctx.accept_error(&e, Instant::now()) {
                    AcceptError::Skip => {}
                    AcceptError::Backoff => {
                        tokio::select! {
                            biased;
                            () = shutdown.recv() => return,
                            () = tokio::time::sleep(BACKOFF) => {}
                        }
                    }
                },
            }
        };
        spawn_conn(&shared, permit, accepted);
    }
}

/// A connection's permit, once one is free; `None` at shutdown.
async fn permit(
    shared: &Shared,
    shutdown: &mut Shutdown,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        () = shutdown.recv() => None,
        // The semaphore is never closed.
        permit = shared.limit.clone().acquire_owned() => permit.ok(),
    }
}

/// Takes the connections other workers hand over from the inbox until shutdown, spawning one
/// task per connection. At shutdown the inbox is left alone: what arrives later waits in it
/// for this worker's successor.
async fn inbox_loop(
    inbox: AsyncFd<OwnedFd>,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
    _guard: Guard,
) {
    let mut receiver = shared.ctx.receiver();
    loop {
        let Some(permit) = permit(&shared, &mut shutdown).await else { return };
        let accepted = loop {
            let received = tokio::select! {
                biased;
                () = shutdown.recv() => return,
                received = inbox.async_io(Interest::READABLE, |_| shared.ctx.receive(&mut receiver)) => received,
            };
            match received {
                Ok(Some(accepted)) => break accepted,
                // A message without a connection (logged).
                Ok(None) => {}
                Err(e) => {
                    shared.ctx.log(LogLevel::Error, format!("cannot receive hand-offs: {e}"));
                    return;
                }
            }
        };
        spawn_conn(&shared, permit, accepted);
    }
}

/// Serves a connection, accepted or handed over by another worker, on a task of its own.
fn spawn_conn(shared: &Arc<Shared>, permit: tokio::sync::OwnedSemaphorePermit, accepted: Accepted) {
    shared.ctx.connection_opened();
    let guard =
        ConnGuard { shared: shared.clone(), _permit: permit, _task: shared.ctx.tracker().guard() };
    let id = shared.ctx.next_id();
    if let Some(conn) = conn::open(&shared.ctx, id, accepted) {
        tokio::spawn(conn::run(conn, guard));
    }
}

/// A started [`crate::TokioBackend`] server.
struct Server {
    shared: Arc<Shared>,
    /// Set to `true` once, by `shutdown`.
    signal: watch::Sender<bool>,
    /// Taken by the first `join`.
    runtime: Mutex<Option<Runtime>>,
}

impl RunningServer for Server {
    fn shutdown(&self) {
        self.signal.send_replace(true);
        self.shared.stop.signal();
    }

    fn join(&self, timeout: Duration) -> bool {
        let done = self.shared.ctx.tracker().wait(timeout);
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(runtime) = runtime {
            // Drops the tasks still running (their connections report a disconnect), then waits
            // for the worker threads. A later `join` finds every task gone.
            stop_runtime(runtime, RUNTIME_GRACE);
        }
        done
    }

    fn connection_count(&self) -> usize {
        self.shared.ctx.connection_count()
    }

    fn is_finished(&self) -> bool {
        self.shared.ctx.tracker().live() == 0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal.send_replace(true);
        self.shared.stop.signal();
        let runtime = self.runtime.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

/// Shuts a runtime down without panicking when called from inside a runtime.
fn stop_runtime(runtime: Runtime, grace: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(grace);
    }
}

#[cfg(test)]
mod tests {
    use zcasgi_core::backend::Event;

    use super::*;

    struct Ignore;

    impl EventSink for Ignore {
        fn push(&self, _event: Event) {}
    }

    #[test]
    fn no_io_thread_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = Arc::new(ServerConfig { io_threads: 0, ..ServerConfig::default() });
        let Err(e) = start(cfg, vec![listener.into()], Arc::new(Ignore), None) else {
            panic!("a tokio server started with io_threads = 0");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("needs backend mio"), "{e}");
    }
}
