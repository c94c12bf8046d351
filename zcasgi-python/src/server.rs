//! The `Core` pyclass: a running backend and the loop-side dispatch of its events.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict};
use zcasgi_core::backend::{
    Backend, ConnId, ConnectInfo, Event, InlineReactor, LogLevel, Refusal, RunningServer,
    TurnRequest,
};
use zcasgi_core::handshake::Request;

use crate::access::{self, AccessLog, Kind, Outcome};
use crate::bridge::{wake, AsgiConn, EventQueue, Inbound, ScopeBuilder};
use crate::engineio::{EngineIO, EngineIoArg};
use crate::timer::LoopTimer;

/// uvicorn's `TRACE` logging level, below `DEBUG`.
const TRACE: i32 = 5;

/// The lowest [`LogLevel`] a Python logger of effective level `level` shows.
fn log_level(level: i32) -> LogLevel {
    match level {
        ..=TRACE => LogLevel::Trace,
        6..=10 => LogLevel::Debug,
        11..=20 => LogLevel::Info,
        21..=30 => LogLevel::Warning,
        _ => LogLevel::Error,
    }
}

/// The scope builder of events that carry no handshake.
fn no_scope<'py>(_: &ConnectInfo) -> PyResult<Bound<'py, PyDict>> {
    Err(pyo3::exceptions::PyRuntimeError::new_err("an Engine.IO handshake without its request"))
}

/// Applies `proxy_headers` to `scope` through `resolve`, if the request carries a header it
/// reads (`X-Forwarded-For`, `X-Forwarded-Proto`): without one, it would change nothing, so
/// most connections skip the call.
fn apply_proxy_headers(
    resolve: Option<&Py<PyAny>>,
    req: &Request,
    scope: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let Some(resolve) = resolve else { return Ok(()) };
    let forwarded =
        req.headers.iter().any(|(n, _)| n == b"x-forwarded-for" || n == b"x-forwarded-proto");
    if forwarded {
        resolve.call1(scope.py(), (scope,))?;
    }
    Ok(())
}

/// Names of the available backends, in the order they are listed to users.
pub const BACKENDS: [&str; 2] = ["mio", "tokio"];

/// Returns the backend called `name`.
///
/// # Errors
/// `ValueError` naming the valid backends.
pub fn backend_by_name(name: &str) -> PyResult<Box<dyn Backend>> {
    match name {
        "mio" => Ok(Box::new(zcasgi_mio::MioBackend)),
        "tokio" => Ok(Box::new(zcasgi_tokio::TokioBackend)),
        other => Err(PyValueError::new_err(format!(
            "unknown backend {other:?}; valid backends: {}",
            BACKENDS.join(", ")
        ))),
    }
}

/// A duplicate of the caller's listening socket `fd`, as the kind of listener it is.
///
/// # Errors
/// `OSError` if `fd` cannot be duplicated; `ValueError` if it is not a listening TCP or Unix
/// stream socket.
fn adopt(fd: i32) -> PyResult<zcasgi_core::backend::Listener> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("fd {fd} is not a descriptor")));
    }
    // SAFETY: the caller (`zcasgi.Server`) keeps `fd` open for this call; it is only borrowed
    // to be duplicated.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned: OwnedFd =
        borrowed.try_clone_to_owned().map_err(|e| PyOSError::new_err(e.to_string()))?;
    zcasgi_transport::listener::adopt(owned)
        .map_err(|e| PyValueError::new_err(format!("fd {fd} cannot be served: {e}")))
}

fn duration(name: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
    })
}

/// How a backend with no I/O thread asks for a turn when the application (on the loop's thread)
/// posts an operation: `loop.call_soon(core.drain)`, once per batch, instead of a write to the
/// backend's waker that the loop would see on its next poll (measured: 3-20 % less CPU per
/// echoed message, one syscall fewer per batch; docs/backends.md).
fn turn_request(core: &Bound<'_, Core>, event_loop: &Py<PyAny>) -> PyResult<TurnRequest> {
    let py = core.py();
    let call_soon = event_loop.getattr(py, intern!(py, "call_soon"))?;
    let drain = core.getattr(intern!(py, "drain"))?.unbind();
    Ok(Arc::new(move || Python::attach(|py| call_soon.call1(py, (drain.clone_ref(py),)).is_ok())))
}

/// A backend serving on listening sockets, feeding the asyncio loop.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct Core {
    queue: Arc<EventQueue>,
    server: Option<Box<dyn RunningServer>>,
    /// The application side of each connection: its WebSocket, or its current HTTP request.
    conns: HashMap<ConnId, Py<AsgiConn>>,
    on_connect: Py<PyAny>,
    event_loop: Py<PyAny>,
    logger: Py<PyAny>,
    access_log: Option<Py<PyAny>>,
    /// Applies `proxy_headers` to a scope (the client and scheme a trusted proxy forwarded).
    resolve_client: Option<Py<PyAny>>,
    /// Builds each connection's ASGI scope.
    scopes: ScopeBuilder,
    state: Option<Py<PyDict>>,
    batch: Vec<Event>,
    backend: &'static str,
    /// With no I/O thread (`io_threads = 0`): the loop timer at the reactor's next deadline.
    timer: LoopTimer,
    /// With no I/O thread: the backend asks for a turn with `call_soon` (set on the first
    /// `drain`, so on the loop's thread; undone by `join`).
    turn_requested: bool,
    /// The Engine.IO endpoint served in Rust (a `zcasgi.socketio` application), if any.
    engineio: Option<Py<EngineIO>>,
}

#[pymethods]
impl Core {
    /// Starts the backend `config.backend` with the options of `config` (a `zcasgi.Config`) on
    /// the listening sockets `fds` (they are duplicated, not taken); in a worker process,
    /// `worker` is `(index, count, inbox_fd, peer_fds)` (see `crate::workers`). The I/O threads
    /// make the log records of `logger`'s level and above, read now. `engineio` is
    /// `(path, options, handler)` when the application's Engine.IO endpoint is served in Rust
    /// (see `crate::engineio`).
    #[new]
    #[pyo3(signature = (config, fds, *, on_connect, event_loop, logger, access_log, state, worker=None, resolve_client=None, engineio=None))]
    #[allow(clippy::too_many_arguments)] // keyword arguments from Python
    fn new(
        config: &Bound<'_, PyAny>,
        fds: Vec<i32>,
        on_connect: Py<PyAny>,
        event_loop: Py<PyAny>,
        logger: Py<PyAny>,
        access_log: Option<Py<PyAny>>,
        state: Option<Py<PyDict>>,
        worker: Option<crate::workers::WorkerArg>,
        resolve_client: Option<Py<PyAny>>,
        engineio: Option<EngineIoArg>,
    ) -> PyResult<Self> {
        let py = config.py();
        let backend: String = config.getattr(intern!(py, "backend"))?.extract()?;
        let be = backend_by_name(&backend)?;
        let root_path: String = config.getattr(intern!(py, "root_path"))?.extract()?;
        let mut cfg = crate::config::extract(config)?;
        let level: i32 = logger.call_method0(py, intern!(py, "getEffectiveLevel"))?.extract(py)?;
        cfg.log.level = log_level(level);
        cfg.log.access = access_log.is_some();
        let worker_index = worker.as_ref().map(|w| w.0);
        let engineio = engineio
            .map(|arg| {
                let access = access_log.as_ref().map(|a| a.clone_ref(py));
                EngineIO::new(py, arg, event_loop.clone_ref(py), worker_index, access)
            })
            .transpose()?
            .map(|e| Py::new(py, e))
            .transpose()?;
        let worker = worker.map(crate::workers::worker_sockets).transpose()?;
        let mut listeners = Vec::with_capacity(fds.len());
        for fd in fds {
            listeners.push(adopt(fd)?);
        }
        // No I/O thread: the backend's loop is turned in `drain`, and its events taken right
        // after, on this thread, so nothing needs waking.
        let inline = cfg.io_threads == 0;
        let queue = Arc::new(if inline { EventQueue::unwoken() } else { EventQueue::new()? });
        let server = be.start(Arc::new(cfg), listeners, queue.clone(), worker)?;
        if inline && server.inline().is_none() {
            return Err(PyValueError::new_err(format!(
                "io_threads=0 (the I/O on the event loop's thread) needs backend mio, not {}",
                be.name()
            )));
        }
        Ok(Self {
            queue,
            server: Some(server),
            conns: HashMap::new(),
            on_connect,
            event_loop,
            logger,
            access_log,
            resolve_client,
            scopes: ScopeBuilder::new(py, root_path),
            state,
            batch: Vec::new(),
            backend: be.name(),
            timer: LoopTimer::default(),
            turn_requested: false,
            engineio,
        })
    }

    /// The descriptor to register with `loop.add_reader(fd, core.drain)`: the event queue's
    /// eventfd, or with no I/O thread the backend's own (its epoll descriptor).
    fn fileno(&self) -> i32 {
        match (self.queue.fd(), self.inline()) {
            (Some(fd), _) => fd,
            (None, Some(inline)) => inline.fd().as_raw_fd(),
            (None, None) => -1,
        }
    }

    /// The backend's name.
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend
    }

    /// Dispatches every queued event: new connections, messages, disconnects, wake-ups, logs.
    /// With no I/O thread, runs a turn of the backend's loop first, and arms the loop timer at
    /// its next deadline after.
    ///
    /// A failure to dispatch is logged (`zcasgi`, with its traceback) and the other events are
    /// dispatched all the same; only a `BaseException` that is not an `Exception`
    /// (`KeyboardInterrupt`) is raised.
    fn drain(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        if !this.turn_requested {
            if let Some(inline) = this.inline() {
                let request = turn_request(slf, &this.event_loop)?;
                inline.set_turn_request(Some(request.clone()));
                this.queue.set_request(Some(request));
            }
            this.turn_requested = true;
        }
        let inline = this.inline().is_some();
        if let Some(inline) = this.inline() {
            this.queue.begin_drain();
            inline.turn();
        }
        let mut batch = std::mem::take(&mut this.batch);
        this.queue.drain(&mut batch);
        let mut result = Ok(());
        for ev in batch.drain(..) {
            if let Err(e) = this.dispatch(py, ev) {
                // Keep draining: one failure must not strand the other connections.
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        this.batch = batch;
        if inline {
            // What the backend pushed while the events were dispatched (operations it served
            // at once) asks for the next drain.
            this.queue.end_drain();
        }
        if let Some(due) = this.inline().and_then(InlineReactor::next_deadline) {
            let this = &mut *this;
            let event_loop = this.event_loop.bind(py);
            let armed = this.timer.arm(event_loop, due, || slf.getattr(intern!(py, "_tick")));
            if result.is_ok() {
                result = armed;
            }
        }
        match result {
            Err(e) if e.is_instance_of::<PyException>(py) => {
                let message = "error while dispatching server events";
                let logged = this.logger.call_method(
                    py,
                    intern!(py, "error"),
                    (message,),
                    Some(&[(intern!(py, "exc_info"), e)].into_py_dict(py)?),
                );
                logged.map(drop)
            }
            other => other,
        }
    }

    /// The loop timer's callback (no I/O thread): a turn at the backend's deadline.
    fn _tick(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.borrow_mut().timer.fired();
        Self::drain(slf)
    }

    /// Stops accepting and closes every connection (WebSockets get the shutdown close code).
    fn shutdown(&self) {
        if let Some(s) = &self.server {
            s.shutdown();
        }
    }

    /// Waits up to `timeout` seconds for every connection and I/O thread to finish.
    fn join(&mut self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = duration("timeout", timeout)?;
        self.timer.cancel(py)?;
        if let Some(inline) = self.inline() {
            inline.set_turn_request(None);
        }
        self.queue.set_request(None);
        let Some(server) = self.server.take() else { return Ok(true) };
        let done = py.detach(|| server.join(timeout));
        Ok(done)
    }

    /// Number of connections the backend holds open.
    #[getter]
    fn connection_count(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.connection_count())
    }

    /// Whether the backend has ended every thread and connection (after `shutdown`: no event
    /// will come any more).
    #[getter]
    fn finished(&self) -> bool {
        self.server.as_ref().is_none_or(|s| s.is_finished())
    }

    /// The Engine.IO endpoint served in Rust, if the application has one.
    #[getter]
    fn engineio(&self, py: Python<'_>) -> Option<Py<EngineIO>> {
        self.engineio.as_ref().map(|e| e.clone_ref(py))
    }

    /// Number of connections the application side still tracks.
    #[getter]
    fn tracked(&self) -> usize {
        self.conns.len()
    }
}

impl Core {
    /// The backend's loop when the caller turns it (`io_threads = 0`).
    fn inline(&self) -> Option<&dyn InlineReactor> {
        self.server.as_ref().and_then(|s| s.inline())
    }

    fn dispatch(&mut self, py: Python<'_>, ev: Event) -> PyResult<()> {
        if let Some(engine) = &self.engineio {
            let engine = engine.clone_ref(py);
            if let Some(ev) = self.route_engineio(engine.bind(py), ev)? {
                return self.dispatch_asgi(py, ev);
            }
            return Ok(());
        }
        self.dispatch_asgi(py, ev)
    }

    /// Gives `engine` the event if it is its own (a request to its path, or an event of one of
    /// its connections); otherwise gives it back.
    fn route_engineio(
        &mut self,
        engine: &Bound<'_, EngineIO>,
        ev: Event,
    ) -> PyResult<Option<Event>> {
        let py = engine.py();
        let owned = |id| !self.conns.contains_key(&id) && engine.borrow().owns(id);
        match ev {
            Event::Connect(info) | Event::HttpRequest(info)
                if engine.borrow().routes(&info.request.path()) =>
            {
                if engine.borrow().logs_access() {
                    let websocket = info.upgrade.is_some();
                    let (tls, client) = (info.tls.is_some(), info.client);
                    let scope =
                        self.scopes.request_scope(py, &info.request, websocket, tls, client)?;
                    apply_proxy_headers(self.resolve_client.as_ref(), &info.request, &scope)?;
                    let kind = if websocket { Kind::WebSocket } else { Kind::Http };
                    engine.borrow_mut().remember(info.id, scope.unbind(), kind);
                }
                let state = self.state.as_ref().map(|s| s.bind(py).clone());
                let (scopes, resolve) = (&mut self.scopes, &self.resolve_client);
                EngineIO::feed(engine, |e, now| e.on_request(info, now), &mut |info| {
                    let scope = scopes.scope(py, info, state.as_ref())?;
                    apply_proxy_headers(resolve.as_ref(), &info.request, &scope)?;
                    Ok(scope)
                })?;
            }
            Event::Message { id, message } if owned(id) => {
                EngineIO::feed(engine, |e, now| e.on_message(id, message, now), &mut no_scope)?;
            }
            Event::HttpBody { id, body, more } if owned(id) => {
                EngineIO::feed(engine, |e, now| e.on_body(id, &body, more, now), &mut no_scope)?;
            }
            Event::Disconnect { id, .. } if owned(id) => {
                EngineIO::feed(engine, |e, now| e.on_disconnect(id, now), &mut no_scope)?;
                engine.borrow_mut().forget(id);
            }
            Event::Writable { id } if owned(id) => {}
            ev => return Ok(Some(ev)),
        }
        Ok(None)
    }

    fn dispatch_asgi(&mut self, py: Python<'_>, ev: Event) -> PyResult<()> {
        match ev {
            Event::Message { id, message } => self.deliver(py, id, Inbound::Message(message)),
            Event::HttpBody { id, body, more } => self.deliver(py, id, Inbound::Body(body, more)),
            Event::Connect(info) | Event::HttpRequest(info) => {
                let state = self.state.as_ref().map(|s| s.bind(py));
                let scope = self.scopes.scope(py, &info, state)?;
                apply_proxy_headers(self.resolve_client.as_ref(), &info.request, &scope)?;
                let logger = self.access_log.as_ref().map(|a| a.clone_ref(py));
                let kind = if info.upgrade.is_some() { Kind::WebSocket } else { Kind::Http };
                let access = AccessLog::new(logger, &scope, kind);
                let conn =
                    Py::new(py, AsgiConn::new(&info, self.event_loop.clone_ref(py), access))?;
                // A keep-alive connection's previous request left with its `Disconnect`.
                self.conns.insert(info.id, conn.clone_ref(py));
                self.on_connect.call1(py, (conn, scope))?;
            }
            Event::Disconnect { id, code, reason } => {
                if let Some(conn) = self.conns.remove(&id) {
                    let waiters =
                        conn.bind(py).borrow_mut().deliver(Inbound::Disconnect(code, reason));
                    wake(py, waiters);
                }
            }
            Event::Writable { id } => {
                if let Some(conn) = self.conns.get(&id) {
                    let waiter = conn.bind(py).borrow_mut().writable();
                    wake(py, waiter);
                }
            }
            Event::Refused(refusal) => self.refused(py, &refusal)?,
            Event::Log { level, message } => {
                let level = match level {
                    LogLevel::Trace => TRACE,
                    LogLevel::Debug => 10,
                    LogLevel::Info => 20,
                    LogLevel::Warning => 30,
                    LogLevel::Error => 40,
                };
                self.logger.call_method1(py, intern!(py, "log"), (level, message))?;
            }
        }
        Ok(())
    }

    /// Writes the access record of a request the server answered itself: its client is the
    /// one its scope would have had (`proxy_headers` applied). A request the application has
    /// already is logged from its scope.
    fn refused(&mut self, py: Python<'_>, refusal: &Refusal) -> PyResult<()> {
        let Some(logger) = &self.access_log else { return Ok(()) };
        if refusal.request.is_none() {
            if let Some(conn) = self.conns.get(&refusal.id) {
                // The application has the request (its scope tells the access line all).
                conn.bind(py).borrow_mut().refused(py, refusal.status);
                return Ok(());
            }
        }
        let (scope, kind) = if let Some(req) = &refusal.request {
            let websocket = req.is_websocket_upgrade();
            let kind = if websocket { Kind::WebSocket } else { Kind::Http };
            let (tls, client) = (refusal.tls, refusal.client);
            let scope = self.scopes.request_scope(py, req, websocket, tls, client)?;
            apply_proxy_headers(self.resolve_client.as_ref(), req, &scope)?;
            (scope, kind)
        } else {
            let scope = PyDict::new(py);
            let client = refusal.client.map(|a| (a.ip().to_string(), a.port()));
            scope.set_item(intern!(py, "client"), client)?;
            (scope, Kind::Unknown)
        };
        access::write(logger.bind(py), &scope, kind, Outcome::Status(refusal.status))
    }

    /// Hands an event to connection `id`'s application side and wakes whoever it unblocks.
    fn deliver(&self, py: Python<'_>, id: ConnId, inbound: Inbound) {
        if let Some(conn) = self.conns.get(&id) {
            // The borrow ends before any future is woken.
            let waiters = conn.bind(py).borrow_mut().deliver(inbound);
            wake(py, waiters);
        }
    }
}
