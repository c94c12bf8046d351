//! The bridge between the backend's I/O threads and the asyncio event loop.
//!
//! # Theory of operation
//!
//! I/O threads push [`Event`]s into a lock-free queue ([`EventQueue`]). The loop is woken
//! through one eventfd registered with `loop.add_reader`, written only when the queue goes
//! from idle to busy, so one wake-up drains a whole batch; no `call_soon_threadsafe` per
//! message. The loop thread then dispatches the batch to the connections ([`WsConn`]).
//!
//! The application's `receive()` returns an awaitable implemented here that completes without
//! a loop round trip when a message is queued; only an empty queue parks the task on a future.
//! `send()` hands the application's own `bytes`/`str` object to the I/O thread inside a
//! [`Bytes`] that keeps it alive until written: the payload is never copied. It completes at once
//! below the connection's high-water mark and parks the task above it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};
use zcasgi_core::backend::{ConnHandle, ConnectInfo, Event, EventSink, SendState};
use zcasgi_core::protocol::Message;

use crate::errors::ClientDisconnected;

/// The queue of events from the I/O threads to the loop, with its eventfd wake-up.
pub struct EventQueue {
    queue: SegQueue<Event>,
    /// Set by the first push after a drain; the eventfd is written only on that transition.
    armed: AtomicBool,
    efd: OwnedFd,
}

impl EventQueue {
    /// A queue with a fresh non-blocking eventfd.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { queue: SegQueue::new(), armed: AtomicBool::new(false), efd })
    }

    /// The descriptor to register with `loop.add_reader`.
    pub fn fd(&self) -> i32 {
        self.efd.as_raw_fd()
    }

    /// Takes every queued event; re-arms the wake-up first so that none is missed.
    pub fn drain(&self, into: &mut Vec<Event>) {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer of 8; errors (EAGAIN) are harmless here.
        let _ = unsafe { libc::read(self.fd(), counter.as_mut_ptr().cast(), 8) };
        self.armed.store(false, Ordering::SeqCst);
        while let Some(ev) = self.queue.pop() {
            into.push(ev);
        }
    }
}

impl EventSink for EventQueue {
    fn push(&self, event: Event) {
        self.queue.push(event);
        if !self.armed.swap(true, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a buffer of 8 to our own eventfd.
            let _ = unsafe { libc::write(self.fd(), one.as_ptr().cast(), 8) };
        }
    }
}

/// A Python `bytes` or `str` whose (immutable) buffer is lent to the I/O thread.
struct PyBuffer {
    _owner: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer refers to the immutable buffer of a `bytes` object or the cached UTF-8
// buffer of a `str`, which live as long as the object; `_owner` keeps the object alive, and
// nothing writes to the buffer. Dropping a `Py` off the GIL defers the decref to PyO3's pool.
unsafe impl Send for PyBuffer {}

impl AsRef<[u8]> for PyBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: the buffer is alive and immutable while `self` is.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Wraps `bytes` without copying it.
fn bytes_of(obj: &Bound<'_, PyBytes>) -> Bytes {
    let data = obj.as_bytes();
    if data.is_empty() {
        return Bytes::new();
    }
    Bytes::from_owner(PyBuffer {
        ptr: data.as_ptr(),
        len: data.len(),
        _owner: obj.clone().into_any().unbind(),
    })
}

/// Wraps the UTF-8 buffer of a `str` without copying it.
fn bytes_of_str(obj: &Bound<'_, PyString>) -> PyResult<Bytes> {
    let s = obj.to_str()?;
    if s.is_empty() {
        return Ok(Bytes::new());
    }
    Ok(Bytes::from_owner(PyBuffer {
        ptr: s.as_ptr(),
        len: s.len(),
        _owner: obj.clone().into_any().unbind(),
    }))
}

/// Where the application is in the ASGI websocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppState {
    /// Before `websocket.accept`.
    Connecting,
    /// Sending a denial response.
    Responding,
    /// Accepted.
    Open,
    /// The application closed (or finished its denial response).
    Closed,
}

/// One WebSocket connection as the application sees it: ASGI `receive` and `send`.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct WsConn {
    handle: ConnHandle,
    /// The request path, for the access log.
    path: String,
    client: String,
    state: AppState,
    connect_delivered: bool,
    inbox: VecDeque<Message>,
    /// `(code, reason)` once the I/O side has closed.
    disconnect: Option<(u16, String)>,
    recv_waiters: Vec<Py<PyAny>>,
    send_waiter: Option<Py<PyAny>>,
    /// The parked send was released by a `Writable` event (its bytes went out).
    send_released: bool,
    event_loop: Py<PyAny>,
    access_log: Option<Py<PyAny>>,
}

impl WsConn {
    /// Creates the connection object for a `Connect` event.
    pub fn new(info: &ConnectInfo, event_loop: Py<PyAny>, access_log: Option<Py<PyAny>>) -> Self {
        let client = info.client.map_or_else(|| "-".to_owned(), |a| a.to_string());
        let mut path = String::from_utf8_lossy(&info.request.raw_path).into_owned();
        if !info.request.query_string.is_empty() {
            path.push('?');
            path.push_str(&String::from_utf8_lossy(&info.request.query_string));
        }
        Self {
            handle: info.handle.clone(),
            path,
            client,
            state: AppState::Connecting,
            connect_delivered: false,
            inbox: VecDeque::new(),
            disconnect: None,
            recv_waiters: Vec::new(),
            send_waiter: None,
            send_released: false,
            event_loop,
            access_log,
        }
    }

    /// Delivers a message from the I/O side; returns the futures to wake.
    pub fn push_message(&mut self, message: Message) -> Vec<Py<PyAny>> {
        self.inbox.push_back(message);
        std::mem::take(&mut self.recv_waiters)
    }

    /// Delivers the disconnect; returns the futures to wake.
    pub fn push_disconnect(&mut self, code: u16, reason: String) -> Vec<Py<PyAny>> {
        self.disconnect = Some((code, reason));
        let mut w = std::mem::take(&mut self.recv_waiters);
        w.extend(self.send_waiter.take());
        w
    }

    /// The send side may resume; returns the future to wake.
    pub fn writable(&mut self) -> Option<Py<PyAny>> {
        let waiter = self.send_waiter.take();
        self.send_released = waiter.is_some();
        waiter
    }

    fn log_access(&self, py: Python<'_>, what: &str) {
        if let Some(log) = &self.access_log {
            let msg = format!("{} - \"WebSocket {}\" {what}", self.client, self.path);
            let _ = log.call_method1(py, intern!(py, "info"), (msg,));
        }
    }

    /// Takes the next ASGI receive event, if one is ready.
    fn next_receive(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.connect_delivered && self.inbox.is_empty() && self.disconnect.is_none() {
            return Ok(None);
        }
        let d = PyDict::new(py);
        if !self.connect_delivered {
            self.connect_delivered = true;
            d.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
            return Ok(Some(d.into_any().unbind()));
        }
        if let Some(message) = self.inbox.pop_front() {
            self.handle.message_taken();
            d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
            match message {
                Message::Text(b) => {
                    // The core validated the UTF-8 already; this check is cheap and keeps the
                    // binding free of unsafe.
                    let s = std::str::from_utf8(&b)
                        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                    d.set_item(intern!(py, "text"), PyString::new(py, s))?;
                }
                Message::Binary(b) => d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?,
            }
            return Ok(Some(d.into_any().unbind()));
        }
        if let Some((code, reason)) = &self.disconnect {
            d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
            d.set_item(intern!(py, "code"), *code)?;
            d.set_item(intern!(py, "reason"), reason.as_str())?;
            return Ok(Some(d.into_any().unbind()));
        }
        Ok(None)
    }

    fn send_message(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without 'type'"))?;
        let kind =
            kind.cast::<PyString>().map_err(|_| PyTypeError::new_err("'type' must be a str"))?;
        let kind = kind.to_str()?;
        match (self.state, kind) {
            (AppState::Open, "websocket.send") => {
                if self.disconnect.is_some() {
                    return Err(ClientDisconnected::new_err("the client has disconnected"));
                }
                let (text, payload) = send_payload(py, message)?;
                match self.handle.send(text, payload) {
                    SendState::Ready => Ok(false),
                    SendState::Full => Ok(self.handle.wait_writable()),
                    SendState::Closed => {
                        Err(ClientDisconnected::new_err("the client has disconnected"))
                    }
                }
            }
            (AppState::Connecting, "websocket.accept") => {
                let subprotocol: Option<String> =
                    match message.get_item(intern!(py, "subprotocol"))? {
                        Some(v) if !v.is_none() => Some(v.extract()?),
                        _ => None,
                    };
                let headers = headers_of(message)?;
                self.state = AppState::Open;
                if self.disconnect.is_none() {
                    self.handle.accept(subprotocol, headers);
                    self.log_access(py, "[accepted]");
                }
                Ok(false)
            }
            (AppState::Connecting | AppState::Open, "websocket.close") => {
                let code: u16 = match message.get_item(intern!(py, "code"))? {
                    Some(v) if !v.is_none() => v.extract()?,
                    _ => 1000,
                };
                let reason: String = match message.get_item(intern!(py, "reason"))? {
                    Some(v) if !v.is_none() => v.extract()?,
                    _ => String::new(),
                };
                zcasgi_core::protocol::check_close(code, &reason)
                    .map_err(crate::errors::invalid_state)?;
                if self.state == AppState::Connecting {
                    self.log_access(py, "403");
                }
                self.state = AppState::Closed;
                self.handle.close(code, reason);
                Ok(false)
            }
            (AppState::Closed, "websocket.close") => Ok(false),
            (AppState::Connecting, "websocket.http.response.start") => {
                let status: u16 = message
                    .get_item(intern!(py, "status"))?
                    .ok_or_else(|| PyValueError::new_err("'status' is required"))?
                    .extract()?;
                if !(100..=599).contains(&status) {
                    return Err(PyValueError::new_err(format!("invalid HTTP status {status}")));
                }
                let headers = headers_of(message)?;
                self.state = AppState::Responding;
                self.log_access(py, &status.to_string());
                self.handle.respond(status, headers);
                Ok(false)
            }
            (AppState::Responding, "websocket.http.response.body") => {
                let body = match message.get_item(intern!(py, "body"))? {
                    Some(b) => b
                        .cast::<PyBytes>()
                        .map(bytes_of)
                        .map_err(|_| PyTypeError::new_err("'body' must be bytes"))?,
                    None => Bytes::new(),
                };
                let more: bool = match message.get_item(intern!(py, "more_body"))? {
                    Some(v) => v.is_truthy()?,
                    None => false,
                };
                if !more {
                    self.state = AppState::Closed;
                }
                match self.handle.respond_body(body, more) {
                    SendState::Ready | SendState::Closed => Ok(false),
                    SendState::Full => Ok(self.handle.wait_writable()),
                }
            }
            (AppState::Closed, "websocket.send") => {
                Err(ClientDisconnected::new_err("the websocket is closed"))
            }
            (state, kind) => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message '{kind}' in state {state:?}"
            ))),
        }
    }
}

fn send_payload(py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<(bool, Bytes)> {
    if let Some(b) = message.get_item(intern!(py, "bytes"))? {
        if !b.is_none() {
            if let Ok(b) = b.cast::<PyBytes>() {
                return Ok((false, bytes_of(b)));
            }
            // bytearray, memoryview: mutable, so copied.
            let v: Vec<u8> =
                b.extract().map_err(|_| PyTypeError::new_err("'bytes' must be bytes"))?;
            return Ok((false, Bytes::from(v)));
        }
    }
    if let Some(t) = message.get_item(intern!(py, "text"))? {
        if !t.is_none() {
            let s =
                t.cast::<PyString>().map_err(|_| PyTypeError::new_err("'text' must be a str"))?;
            return Ok((true, bytes_of_str(s)?));
        }
    }
    Err(PyValueError::new_err("websocket.send needs 'bytes' or 'text'"))
}

fn headers_of(message: &Bound<'_, PyDict>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let py = message.py();
    let Some(h) = message.get_item(intern!(py, "headers"))? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for item in h.try_iter()? {
        let (name, value): (Vec<u8>, Vec<u8>) = item?.extract()?;
        out.push((name, value));
    }
    Ok(out)
}

#[pymethods]
impl WsConn {
    /// ASGI `receive()`: the connection is its own awaitable, so nothing is allocated.
    fn receive(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        receive_step(self, py)
    }

    /// ASGI `send(message)`.
    fn send(slf: Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let must_wait = slf.borrow_mut().send_message(py, message)?;
        if must_wait {
            Ok(SendWait { conn: AppConn::Ws(slf.unbind()), parked: false }.into_py_any(py)?)
        } else {
            ready(py)
        }
    }

    /// The application raised: close with 1011, or answer 500 before the accept.
    fn abort(&mut self, py: Python<'_>) {
        if self.state == AppState::Connecting {
            self.log_access(py, "500");
        }
        self.state = AppState::Closed;
        self.handle.abort();
    }

    /// The application returned: close normally if it left the socket open. Returning without
    /// accepting or closing is an error (500, as uvicorn); returns whether it was one.
    fn finish(&mut self, py: Python<'_>) -> bool {
        let error = match self.state {
            AppState::Connecting | AppState::Responding => {
                if self.state == AppState::Connecting {
                    self.log_access(py, "500");
                }
                self.handle.abort();
                true
            }
            AppState::Open => {
                self.handle.close(1000, String::new());
                false
            }
            AppState::Closed => false,
        };
        self.state = AppState::Closed;
        error
    }

    /// The connection id.
    #[getter]
    fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Bytes sent and not yet written to the socket.
    #[getter]
    fn queued_bytes(&self) -> usize {
        self.handle.queued_bytes()
    }
}

/// The one `Ready` object every non-blocking `send()` returns.
static READY: PyOnceLock<Py<Ready>> = PyOnceLock::new();

fn ready(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let r = READY.get_or_try_init(py, || Py::new(py, Ready))?;
    Ok(r.clone_ref(py).into_any())
}

/// An awaitable that is already complete (`send` below the high-water mark).
#[pyclass(module = "zcasgi._zcasgi", frozen)]
pub struct Ready;

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(_slf: PyRef<'_, Self>) -> Option<Py<PyAny>> {
        None
    }
}

/// Where the application is in the ASGI http protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseState {
    NotStarted,
    Started,
    Complete,
}

/// One HTTP request as the application sees it: ASGI `receive` and `send`.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct HttpConn {
    handle: ConnHandle,
    /// `METHOD path HTTP/x` for the access log.
    request_line: String,
    client: String,
    inbox: VecDeque<(Bytes, bool)>,
    disconnected: bool,
    response: ResponseState,
    status: u16,
    recv_waiters: Vec<Py<PyAny>>,
    send_waiter: Option<Py<PyAny>>,
    /// The parked send was released by a `Writable` event (its bytes went out).
    send_released: bool,
    event_loop: Py<PyAny>,
    access_log: Option<Py<PyAny>>,
}

impl HttpConn {
    /// Creates the request object for an `HttpRequest` event.
    pub fn new(info: &ConnectInfo, event_loop: Py<PyAny>, access_log: Option<Py<PyAny>>) -> Self {
        let req = &info.request;
        let mut target = String::from_utf8_lossy(&req.raw_path).into_owned();
        if !req.query_string.is_empty() {
            target.push('?');
            target.push_str(&String::from_utf8_lossy(&req.query_string));
        }
        Self {
            handle: info.handle.clone(),
            request_line: format!("{} {target} HTTP/1.{}", req.method, req.http_minor),
            client: info.client.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            inbox: VecDeque::new(),
            disconnected: false,
            response: ResponseState::NotStarted,
            status: 0,
            recv_waiters: Vec::new(),
            send_waiter: None,
            send_released: false,
            event_loop,
            access_log,
        }
    }

    /// Delivers a piece of body; returns the futures to wake.
    pub fn push_body(&mut self, body: Bytes, more: bool) -> Vec<Py<PyAny>> {
        self.inbox.push_back((body, more));
        std::mem::take(&mut self.recv_waiters)
    }

    /// The client left; returns the futures to wake.
    pub fn push_disconnect(&mut self) -> Vec<Py<PyAny>> {
        self.disconnected = true;
        let mut w = std::mem::take(&mut self.recv_waiters);
        w.extend(self.send_waiter.take());
        w
    }

    /// The send side may resume; returns the future to wake.
    pub fn writable(&mut self) -> Option<Py<PyAny>> {
        let waiter = self.send_waiter.take();
        self.send_released = waiter.is_some();
        waiter
    }

    fn next_receive(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let done = self.disconnected || self.response == ResponseState::Complete;
        if self.inbox.is_empty() && !done {
            return Ok(None);
        }
        let d = PyDict::new(py);
        if let Some((body, more)) = self.inbox.pop_front() {
            self.handle.message_taken();
            d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            d.set_item(intern!(py, "body"), PyBytes::new(py, &body))?;
            d.set_item(intern!(py, "more_body"), more)?;
            return Ok(Some(d.into_any().unbind()));
        }
        // After the response, or once the client is gone, receive() reports the disconnect.
        if self.disconnected || self.response == ResponseState::Complete {
            d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
            return Ok(Some(d.into_any().unbind()));
        }
        Ok(None)
    }

    fn send_message(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without 'type'"))?;
        let kind =
            kind.cast::<PyString>().map_err(|_| PyTypeError::new_err("'type' must be a str"))?;
        match (self.response, kind.to_str()?) {
            (ResponseState::NotStarted, "http.response.start") => {
                let status: u16 = message
                    .get_item(intern!(py, "status"))?
                    .ok_or_else(|| PyValueError::new_err("'status' is required"))?
                    .extract()?;
                if !(100..=599).contains(&status) {
                    return Err(PyValueError::new_err(format!("invalid HTTP status {status}")));
                }
                let headers = headers_of(message)?;
                self.response = ResponseState::Started;
                self.status = status;
                if !self.disconnected {
                    self.handle.respond(status, headers);
                }
                Ok(false)
            }
            (ResponseState::Started, "http.response.body") => {
                let body = match message.get_item(intern!(py, "body"))? {
                    Some(b) if !b.is_none() => match b.cast::<PyBytes>() {
                        Ok(b) => bytes_of(b),
                        Err(_) => Bytes::from(
                            b.extract::<Vec<u8>>()
                                .map_err(|_| PyTypeError::new_err("'body' must be bytes"))?,
                        ),
                    },
                    _ => Bytes::new(),
                };
                let more: bool = match message.get_item(intern!(py, "more_body"))? {
                    Some(v) => v.is_truthy()?,
                    None => false,
                };
                if !more {
                    self.response = ResponseState::Complete;
                    if let Some(log) = &self.access_log {
                        let line =
                            format!("{} - \"{}\" {}", self.client, self.request_line, self.status);
                        let _ = log.call_method1(py, intern!(py, "info"), (line,));
                    }
                }
                if self.disconnected {
                    // ASGI: sending to a client that left is a no-op for http.
                    return Ok(false);
                }
                match self.handle.respond_body(body, more) {
                    SendState::Ready | SendState::Closed => Ok(false),
                    SendState::Full => Ok(self.handle.wait_writable()),
                }
            }
            (state, kind) => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message '{kind}' in response state {state:?}"
            ))),
        }
    }
}

#[pymethods]
impl HttpConn {
    /// ASGI `receive()`: the request is its own awaitable, so nothing is allocated.
    fn receive(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        receive_step(self, py)
    }

    /// ASGI `send(message)`.
    fn send(slf: Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let must_wait = slf.borrow_mut().send_message(py, message)?;
        if must_wait {
            Ok(SendWait { conn: AppConn::Http(slf.unbind()), parked: false }.into_py_any(py)?)
        } else {
            ready(py)
        }
    }

    /// The application raised: 500 if no response started, else close the connection.
    fn abort(&mut self, py: Python<'_>) {
        if self.response == ResponseState::NotStarted {
            if let Some(log) = &self.access_log {
                let line = format!("{} - \"{}\" 500", self.client, self.request_line);
                let _ = log.call_method1(py, intern!(py, "info"), (line,));
            }
        }
        if self.response != ResponseState::Complete {
            self.handle.abort();
        }
        self.response = ResponseState::Complete;
    }

    /// The application returned: an unfinished response is an error (500 or a closed
    /// connection); returns whether it was.
    fn finish(&mut self, py: Python<'_>) -> bool {
        if self.response == ResponseState::Complete {
            return false;
        }
        self.abort(py);
        true
    }

    /// Whether the response has been completely sent.
    #[getter]
    fn response_complete(&self) -> bool {
        self.response == ResponseState::Complete
    }
}

/// A new future on `event_loop`, marked so that a task awaiting it through `yield` parks.
fn park(py: Python<'_>, event_loop: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    let fut = event_loop.call_method0(py, intern!(py, "create_future"))?;
    fut.setattr(py, intern!(py, "_asyncio_future_blocking"), true)?;
    Ok(fut)
}

/// What `receive()`/`send()` awaitables need of a connection, WebSocket or HTTP.
trait Endpoint {
    /// The next ASGI receive event, if one is ready.
    fn next_event(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>>;
    /// Parks a receiver on `fut`.
    fn park_receiver(&mut self, fut: Py<PyAny>);
    /// The loop futures are created on.
    fn event_loop(&self) -> &Py<PyAny>;
    /// The shared handle.
    fn handle(&self) -> &ConnHandle;
    /// The parked sender's future, if any.
    fn send_waiter(&mut self) -> &mut Option<Py<PyAny>>;
    /// Whether a `Writable` event released the parked sender (and clears it).
    fn take_released(&mut self) -> bool;
    /// The error a waiting sender gets once the client is gone (`None`: just return).
    fn gone(&self) -> Option<PyErr>;
}

impl Endpoint for WsConn {
    fn take_released(&mut self) -> bool {
        std::mem::take(&mut self.send_released)
    }
    fn next_event(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.next_receive(py)
    }
    fn park_receiver(&mut self, fut: Py<PyAny>) {
        self.recv_waiters.push(fut);
    }
    fn event_loop(&self) -> &Py<PyAny> {
        &self.event_loop
    }
    fn handle(&self) -> &ConnHandle {
        &self.handle
    }
    fn send_waiter(&mut self) -> &mut Option<Py<PyAny>> {
        &mut self.send_waiter
    }
    fn gone(&self) -> Option<PyErr> {
        self.disconnect.as_ref().map(|_| ClientDisconnected::new_err("the client has disconnected"))
    }
}

impl Endpoint for HttpConn {
    fn take_released(&mut self) -> bool {
        std::mem::take(&mut self.send_released)
    }
    fn next_event(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.next_receive(py)
    }
    fn park_receiver(&mut self, fut: Py<PyAny>) {
        self.recv_waiters.push(fut);
    }
    fn event_loop(&self) -> &Py<PyAny> {
        &self.event_loop
    }
    fn handle(&self) -> &ConnHandle {
        &self.handle
    }
    fn send_waiter(&mut self) -> &mut Option<Py<PyAny>> {
        &mut self.send_waiter
    }
    fn gone(&self) -> Option<PyErr> {
        // ASGI http: sending to a client that left is a no-op, not an error.
        None
    }
}

/// The connection an awaitable belongs to.
enum AppConn {
    Ws(Py<WsConn>),
    Http(Py<HttpConn>),
}

impl AppConn {
    fn with<R>(&self, py: Python<'_>, f: impl FnOnce(&mut dyn Endpoint) -> R) -> R {
        match self {
            Self::Ws(c) => f(&mut *c.bind(py).borrow_mut()),
            Self::Http(c) => f(&mut *c.bind(py).borrow_mut()),
        }
    }
}

/// One step of awaiting `receive()`: the event if one is queued (as `StopIteration`'s value,
/// without a loop round trip), else a future to park on.
fn receive_step(c: &mut dyn Endpoint, py: Python<'_>) -> PyResult<Py<PyAny>> {
    if let Some(event) = c.next_event(py)? {
        return Err(PyStopIteration::new_err((event,)));
    }
    let fut = park(py, c.event_loop())?;
    c.park_receiver(fut.clone_ref(py));
    Ok(fut)
}

/// The awaitable `send()` returns above the high-water mark.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct SendWait {
    conn: AppConn,
    parked: bool,
}

#[pymethods]
impl SendWait {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let parked = self.parked;
        self.parked = true;
        self.conn.with(py, |c| {
            if parked {
                // Woken by Writable: the bytes went out, go on (even if the client has left
                // since). Woken by the disconnect alone: they may never arrive.
                if c.take_released() {
                    return Ok(None);
                }
                if let Some(err) = c.gone() {
                    return Err(err);
                }
                if c.send_waiter().is_none() || !c.handle().wait_writable() {
                    *c.send_waiter() = None;
                    return Ok(None);
                }
            }
            let fut = park(py, c.event_loop())?;
            c.take_released();
            *c.send_waiter() = Some(fut.clone_ref(py));
            Ok(Some(fut))
        })
    }
}

/// Wakes parked futures (skipping those already done, e.g. cancelled).
pub fn wake(py: Python<'_>, futures: Vec<Py<PyAny>>) {
    for fut in futures {
        // A future is only ever done here if its task was cancelled: set_result then raises
        // InvalidStateError, which is expected and dropped (cheaper than asking done() first).
        let _ = fut.call_method1(py, intern!(py, "set_result"), (py.None(),));
    }
}

/// Builds the ASGI `websocket` scope (or the `http` scope for a request without upgrade).
pub fn scope<'py>(
    py: Python<'py>,
    info: &ConnectInfo,
    root_path: &str,
    state: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    let req = &info.request;
    let websocket = info.upgrade.is_some();
    scope.set_item(intern!(py, "type"), if websocket { "websocket" } else { "http" })?;
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.5")?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "http_version"), if req.http_minor == 0 { "1.0" } else { "1.1" })?;
    scope.set_item(intern!(py, "scheme"), if websocket { "ws" } else { "http" })?;
    if !websocket {
        scope.set_item(intern!(py, "method"), req.method.as_str())?;
    }
    let path = req.path();
    scope.set_item(intern!(py, "path"), format!("{root_path}{path}"))?;
    let mut raw_path = root_path.as_bytes().to_vec();
    raw_path.extend_from_slice(&req.raw_path);
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &raw_path))?;
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, &req.query_string))?;
    scope.set_item(intern!(py, "root_path"), root_path)?;
    let headers = PyList::empty(py);
    for (name, value) in &req.headers {
        headers.append(PyTuple::new(py, [PyBytes::new(py, name), PyBytes::new(py, value)])?)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    let addr = |a: Option<std::net::SocketAddr>| -> PyResult<Py<PyAny>> {
        match a {
            Some(a) => (a.ip().to_string(), a.port()).into_py_any(py),
            None => Ok(py.None()),
        }
    };
    scope.set_item(intern!(py, "client"), addr(info.client)?)?;
    scope.set_item(intern!(py, "server"), addr(info.server)?)?;
    if let Some(upgrade) = &info.upgrade {
        scope.set_item(intern!(py, "subprotocols"), PyList::new(py, &upgrade.subprotocols)?)?;
        let ext = PyDict::new(py);
        ext.set_item("websocket.http.response", PyDict::new(py))?;
        scope.set_item(intern!(py, "extensions"), ext)?;
    }
    if let Some(state) = state {
        scope.set_item(intern!(py, "state"), state.copy()?)?;
    }
    Ok(scope)
}
