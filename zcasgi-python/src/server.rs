//! The `Core` pyclass: a running backend and the loop-side dispatch of its events.

use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use zcasgi_core::backend::{Backend, ConnId, Event, LogLevel, RunningServer, ServerConfig};

use crate::bridge::{scope, wake, EventQueue, HttpConn, WsConn};

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

fn duration(name: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
    })
}

/// The application side of a connection: its current WebSocket or HTTP request.
enum Conn {
    Ws(Py<WsConn>),
    Http(Py<HttpConn>),
}

/// A backend serving on listening sockets, feeding the asyncio loop.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct Core {
    queue: Arc<EventQueue>,
    server: Option<Box<dyn RunningServer>>,
    conns: HashMap<ConnId, Conn>,
    on_connect: Py<PyAny>,
    event_loop: Py<PyAny>,
    logger: Py<PyAny>,
    access_log: Option<Py<PyAny>>,
    root_path: String,
    state: Option<Py<PyDict>>,
    batch: Vec<Event>,
    backend: &'static str,
}

#[pymethods]
impl Core {
    /// Starts `backend` on the listening sockets `fds` (they are duplicated, not taken).
    #[new]
    #[pyo3(signature = (
        backend, fds, *, on_connect, event_loop, logger, access_log, root_path, state,
        io_threads, max_connections, ws_max_size, ws_max_queue, ws_ping_interval,
        ws_ping_timeout, close_timeout, handshake_timeout, write_high_water,
        write_low_water, max_headers, max_head_bytes, shutdown_close_code, http_max_body,
        timeout_keep_alive, ws_per_message_deflate = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        backend: &str,
        fds: Vec<i32>,
        on_connect: Py<PyAny>,
        event_loop: Py<PyAny>,
        logger: Py<PyAny>,
        access_log: Option<Py<PyAny>>,
        root_path: String,
        state: Option<Py<PyDict>>,
        io_threads: usize,
        max_connections: usize,
        ws_max_size: usize,
        ws_max_queue: usize,
        ws_ping_interval: Option<f64>,
        ws_ping_timeout: Option<f64>,
        close_timeout: f64,
        handshake_timeout: f64,
        write_high_water: usize,
        write_low_water: usize,
        max_headers: usize,
        max_head_bytes: usize,
        shutdown_close_code: u16,
        http_max_body: u64,
        timeout_keep_alive: f64,
        ws_per_message_deflate: bool,
    ) -> PyResult<Self> {
        let be = backend_by_name(backend)?;
        if io_threads == 0 || max_connections == 0 || ws_max_queue == 0 || max_headers == 0 {
            return Err(PyValueError::new_err(
                "io_threads, max_connections, ws_max_queue and max_headers must be positive",
            ));
        }
        let cfg = ServerConfig {
            io_threads,
            max_connections,
            ws_max_size,
            ws_max_queue,
            ws_ping_interval: ws_ping_interval
                .map(|s| duration("ws_ping_interval", s))
                .transpose()?,
            ws_ping_timeout: ws_ping_timeout.map(|s| duration("ws_ping_timeout", s)).transpose()?,
            ws_per_message_deflate,
            ws_write_high_water: write_high_water,
            ws_write_low_water: write_low_water,
            handshake_timeout: duration("handshake_timeout", handshake_timeout)?,
            timeout_keep_alive: duration("timeout_keep_alive", timeout_keep_alive)?,
            http_max_body_size: http_max_body,
            close_timeout: duration("close_timeout", close_timeout)?,
            shutdown_close_code,
            max_headers,
            max_header_bytes: max_head_bytes,
        };
        let mut listeners = Vec::with_capacity(fds.len());
        for fd in fds {
            // SAFETY: dup has no memory-safety preconditions; the result is checked.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(PyOSError::new_err(std::io::Error::last_os_error().to_string()));
            }
            // SAFETY: `dup` is a fresh descriptor owned by nothing else; it is a listening
            // socket because the caller bound and listened on `fd`.
            let l = unsafe { std::net::TcpListener::from_raw_fd(dup) };
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
        let queue = Arc::new(EventQueue::new()?);
        let server = be.start(Arc::new(cfg), listeners, queue.clone())?;
        Ok(Self {
            queue,
            server: Some(server),
            conns: HashMap::new(),
            on_connect,
            event_loop,
            logger,
            access_log,
            root_path,
            state,
            batch: Vec::new(),
            backend: be.name(),
        })
    }

    /// The eventfd to register with `loop.add_reader(fd, core.drain)`.
    fn fileno(&self) -> i32 {
        self.queue.fd()
    }

    /// The backend's name.
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend
    }

    /// Dispatches every queued event: new connections, messages, disconnects, wake-ups, logs.
    fn drain(&mut self, py: Python<'_>) -> PyResult<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.queue.drain(&mut batch);
        let mut result = Ok(());
        for ev in batch.drain(..) {
            if let Err(e) = self.dispatch(py, ev) {
                // Keep draining: one failure must not strand the other connections.
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.batch = batch;
        result
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
        let Some(server) = self.server.take() else { return Ok(true) };
        let done = py.detach(|| server.join(timeout));
        Ok(done)
    }

    /// Number of connections the backend holds open.
    #[getter]
    fn connection_count(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.connection_count())
    }

    /// Number of connections the application side still tracks.
    #[getter]
    fn tracked(&self) -> usize {
        self.conns.len()
    }
}

impl Core {
    fn dispatch(&mut self, py: Python<'_>, ev: Event) -> PyResult<()> {
        match ev {
            Event::Message { id, message } => {
                if let Some(Conn::Ws(conn)) = self.conns.get(&id) {
                    let waiters = conn.bind(py).borrow_mut().push_message(message);
                    wake(py, waiters);
                }
            }
            Event::HttpBody { id, body, more } => {
                if let Some(Conn::Http(conn)) = self.conns.get(&id) {
                    let waiters = conn.bind(py).borrow_mut().push_body(body, more);
                    wake(py, waiters);
                }
            }
            Event::Connect(info) => {
                let state = self.state.as_ref().map(|s| s.bind(py));
                let scope = scope(py, &info, &self.root_path, state)?;
                let access = self.access_log.as_ref().map(|a| a.clone_ref(py));
                let conn = Py::new(py, WsConn::new(&info, self.event_loop.clone_ref(py), access))?;
                self.conns.insert(info.id, Conn::Ws(conn.clone_ref(py)));
                self.on_connect.call1(py, (conn, scope))?;
            }
            Event::HttpRequest(info) => {
                let state = self.state.as_ref().map(|s| s.bind(py));
                let scope = scope(py, &info, &self.root_path, state)?;
                let access = self.access_log.as_ref().map(|a| a.clone_ref(py));
                let conn =
                    Py::new(py, HttpConn::new(&info, self.event_loop.clone_ref(py), access))?;
                // A keep-alive connection's next request replaces the previous one.
                self.conns.insert(info.id, Conn::Http(conn.clone_ref(py)));
                self.on_connect.call1(py, (conn, scope))?;
            }
            Event::Disconnect { id, .. } if matches!(self.conns.get(&id), Some(Conn::Http(_))) => {
                if let Some(Conn::Http(conn)) = self.conns.remove(&id) {
                    let waiters = conn.bind(py).borrow_mut().push_disconnect();
                    wake(py, waiters);
                }
            }
            Event::Disconnect { id, code, reason } => {
                if let Some(Conn::Ws(conn)) = self.conns.remove(&id) {
                    let waiters = conn.bind(py).borrow_mut().push_disconnect(code, reason);
                    wake(py, waiters);
                }
            }
            Event::Writable { id } => {
                let waiter = match self.conns.get(&id) {
                    Some(Conn::Ws(conn)) => conn.bind(py).borrow_mut().writable(),
                    Some(Conn::Http(conn)) => conn.bind(py).borrow_mut().writable(),
                    None => None,
                };
                wake(py, waiter.into_iter().collect());
            }
            Event::Log { level, message } => {
                let level = match level {
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
}
