//! The runtime, the accept loops and the [`RunningServer`] handle.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{watch, Semaphore};
use zcasgi_core::backend::{ConnId, Event, EventSink, LogLevel, RunningServer, ServerConfig};

use crate::conn;
use crate::shutdown::{Shutdown, TaskGuard, Tracker};

/// Pause after an accept error such as `EMFILE` before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How long `join` lets the runtime's threads wind down after its tasks are done or aborted.
const RUNTIME_GRACE: Duration = Duration::from_secs(1);

/// Connection ids, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What every task of one server shares.
struct Shared {
    cfg: Arc<ServerConfig>,
    sink: Arc<dyn EventSink>,
    /// One permit per connection served; acquired before `accept`, so excess clients wait in
    /// the listen backlog.
    limit: Arc<Semaphore>,
    /// Accept loops and connection tasks still running.
    tracker: Arc<Tracker>,
    /// Connections currently open.
    connections: AtomicUsize,
}

impl Shared {
    fn log(&self, level: LogLevel, message: String) {
        self.sink.push(Event::Log { level, message });
    }
}

/// Counts a connection as open until dropped, holding its permit and its task's guard.
struct ConnGuard {
    shared: Arc<Shared>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _task: TaskGuard,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Builds the runtime and starts one accept loop per listener.
pub(crate) fn start(
    cfg: Arc<ServerConfig>,
    listeners: Vec<std::net::TcpListener>,
    sink: Arc<dyn EventSink>,
) -> io::Result<Box<dyn RunningServer>> {
    let thread_no = AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.io_threads.max(1))
        .thread_name_fn(move || {
            format!("zcasgi-tokio-{}", thread_no.fetch_add(1, Ordering::Relaxed))
        })
        .enable_io()
        .enable_time()
        .build()?;
    let listeners = {
        // `from_std` registers with the runtime's reactor.
        let _entered = runtime.enter();
        listeners
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
            .collect::<io::Result<Vec<_>>>()?
    };
    let permits = cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        cfg,
        sink,
        limit: Arc::new(Semaphore::new(permits)),
        tracker: Arc::new(Tracker::default()),
        connections: AtomicUsize::new(0),
    });
    let (signal, rx) = watch::channel(false);
    for listener in listeners {
        let guard = shared.tracker.guard();
        runtime.spawn(accept_loop(listener, shared.clone(), Shutdown::new(rx.clone()), guard));
    }
    Ok(Box::new(Server {
        shared,
        signal,
        runtime: Mutex::new(Some(runtime)),
        joined: Mutex::new(None),
    }))
}

/// Accepts connections until shutdown, spawning one task per connection.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
    _guard: TaskGuard,
) {
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.recv() => return,
            permit = shared.limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => return,
            },
        };
        let mut failing = false;
        let (stream, client) = loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.recv() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(pair) => break pair,
                // The client gave up before we accepted it.
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory: give other tasks time to free some. Only
                    // the first error of a streak is logged.
                    if !std::mem::replace(&mut failing, true) {
                        shared.log(LogLevel::Warning, format!("accept failed, retrying: {e}"));
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.recv() => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            shared.log(LogLevel::Debug, format!("cannot set TCP_NODELAY: {e}"));
        }
        shared.connections.fetch_add(1, Ordering::AcqRel);
        let guard =
            ConnGuard { shared: shared.clone(), _permit: permit, _task: shared.tracker.guard() };
        let id: ConnId = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let cfg = shared.cfg.clone();
        let sink = shared.sink.clone();
        let conn_shutdown = shutdown.listener();
        tokio::spawn(async move {
            conn::run(id, stream, client, cfg, sink, conn_shutdown).await;
            drop(guard);
        });
    }
}

/// Accept errors that concern one connection only, not the listener.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// A started [`crate::TokioBackend`] server.
struct Server {
    shared: Arc<Shared>,
    /// Set to `true` once, by `shutdown`.
    signal: watch::Sender<bool>,
    /// Taken by the first `join`.
    runtime: Mutex<Option<Runtime>>,
    /// The result of the first `join`.
    joined: Mutex<Option<bool>>,
}

impl RunningServer for Server {
    fn shutdown(&self) {
        self.signal.send_replace(true);
    }

    fn join(&self, timeout: Duration) -> bool {
        let mut joined = self.joined.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = *joined {
            return done;
        }
        let done = self.shared.tracker.wait_idle(timeout);
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(runtime) = runtime {
            // Drops the tasks still running (their connections report a disconnect), then waits
            // for the worker threads.
            stop_runtime(runtime, RUNTIME_GRACE);
        }
        *joined = Some(done);
        done
    }

    fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal.send_replace(true);
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
