//! The application's `receive` and `send`: awaitables implemented once for both protocols.
//!
//! # Theory of operation
//!
//! An [`AsgiConn`] is one WebSocket connection or one HTTP request as the application sees it;
//! what differs between the two is their ASGI state machine ([`WebSocket`], [`HttpRequest`]),
//! and everything about awaiting is here:
//!
//! - `receive()` returns the connection itself, whose `__next__` raises `StopIteration(event)`
//!   at once when an event is queued: no future, no loop round trip. Only when nothing is queued
//!   does it yield a [`Waiter`] (a future-like object the garbage collector does not track),
//!   which the next delivered event wakes ([`wake`]).
//! - `send()` returns the one shared [`Ready`] awaitable below the high-water mark; above it, a
//!   [`SendWait`] that parks the task on a [`Waiter`] until a `Writable` event says the bytes
//!   went out, or the disconnect says they never will.
//!
//! Everything runs on the loop thread, under the GIL; the I/O threads only ever see the
//! [`ConnHandle`].

use bytes::Bytes;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use pyo3::IntoPyObjectExt;
use zcasgi_core::backend::{ConnHandle, ConnectInfo};

use crate::access::{AccessLog, Outcome};
use zcasgi_core::protocol::Message;

use super::http::HttpRequest;
use super::message::message_type;
use super::waiter::Waiter;
use super::ws::WebSocket;

/// The ASGI protocol of a connection.
#[derive(Debug)]
enum Protocol {
    WebSocket(WebSocket),
    Http(HttpRequest),
}

/// What the I/O side delivers to a connection.
#[derive(Debug)]
pub enum Inbound {
    /// A WebSocket message.
    Message(Message),
    /// A piece of the HTTP request body; `true` if more follow.
    Body(Bytes, bool),
    /// The connection is gone, with the close code and reason to report (WebSocket).
    Disconnect(u16, String),
}

/// One WebSocket connection or HTTP request as the application sees it: ASGI `receive` and
/// `send`.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct AsgiConn {
    handle: ConnHandle,
    protocol: Protocol,
    access: AccessLog,
    /// Tasks parked in `receive()`.
    recv_waiters: Vec<Py<Waiter>>,
    /// The task parked in `send()`.
    send_waiter: Option<Py<Waiter>>,
    /// The parked send was released by a `Writable` event (its bytes went out).
    send_released: bool,
    event_loop: Py<PyAny>,
}

impl AsgiConn {
    /// The application side of a `Connect` (WebSocket) or `HttpRequest` event, whose outcome
    /// goes to `access`.
    pub fn new(info: &ConnectInfo, event_loop: Py<PyAny>, access: AccessLog) -> Self {
        let protocol = if info.upgrade.is_some() {
            Protocol::WebSocket(WebSocket::new())
        } else {
            Protocol::Http(HttpRequest::new())
        };
        Self {
            handle: info.handle.clone(),
            protocol,
            access,
            recv_waiters: Vec::new(),
            send_waiter: None,
            send_released: false,
            event_loop,
        }
    }

    /// Delivers what the I/O side reported; returns the waiters to wake.
    pub fn deliver(&mut self, inbound: Inbound) -> Vec<Py<Waiter>> {
        let gone = matches!(inbound, Inbound::Disconnect(..));
        match (&mut self.protocol, inbound) {
            (Protocol::WebSocket(ws), Inbound::Message(m)) => ws.push_message(m),
            (Protocol::WebSocket(ws), Inbound::Disconnect(code, reason)) => {
                ws.push_disconnect(code, reason);
            }
            (Protocol::Http(http), Inbound::Body(body, more)) => http.push_body(body, more),
            (Protocol::Http(http), Inbound::Disconnect(..)) => http.push_disconnect(),
            // A message for the other protocol: nothing to deliver, nobody to wake.
            _ => return Vec::new(),
        }
        let mut waiters = std::mem::take(&mut self.recv_waiters);
        if gone {
            waiters.extend(self.send_waiter.take());
        }
        waiters
    }

    /// The server answered the request itself with `status` (it refused it): the access
    /// line, with the request line and client of the scope.
    pub fn refused(&mut self, py: Python<'_>, status: u16) {
        self.access.log(py, Outcome::Status(status));
    }

    /// The send side may resume; returns the waiter to wake.
    pub fn writable(&mut self) -> Option<Py<Waiter>> {
        let waiter = self.send_waiter.take();
        self.send_released = waiter.is_some();
        waiter
    }

    /// The next ASGI receive event, if one is ready.
    fn next_event(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &mut self.protocol {
            Protocol::WebSocket(ws) => ws.next_event(py, &self.handle),
            Protocol::Http(http) => http.next_event(py, &self.handle),
        }
    }

    /// The error a waiting sender gets once the client is gone (`None`: just return).
    fn gone(&self) -> Option<PyErr> {
        match &self.protocol {
            Protocol::WebSocket(ws) => ws.gone(),
            // ASGI http: sending to a client that left is a no-op, not an error.
            Protocol::Http(_) => None,
        }
    }
}

#[pymethods]
impl AsgiConn {
    /// ASGI `receive()`: the connection is its own awaitable, so nothing is allocated.
    fn receive(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// `conn()` is `conn.receive()`: the connection is handed to the application as its
    /// `receive` callable, so no bound method is made (and kept) per connection.
    fn __call__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The awaitable is its own iterator (`yield from receive().__await__()`, as
    /// `asyncio.ensure_future` and `asyncio.wait_for` do, needs one).
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// One step of awaiting `receive()`: the event if one is queued (as `StopIteration`'s
    /// value, without a loop round trip), else a waiter to park on.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<Waiter>> {
        if let Some(event) = self.next_event(py)? {
            return Err(PyStopIteration::new_err((event,)));
        }
        let waiter = Waiter::park(py, self.event_loop.clone_ref(py))?;
        self.recv_waiters.push(waiter.clone_ref(py));
        // Whatever the application sent in reply to what it took is queued by now.
        self.handle.receive_waiting();
        Ok(waiter)
    }

    /// ASGI `send(message)`.
    fn send(slf: Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let kind = message_type(message)?;
        let kind = kind.to_str()?;
        let must_wait = {
            let mut c = slf.borrow_mut();
            let c = &mut *c;
            match &mut c.protocol {
                Protocol::WebSocket(ws) => ws.send(&c.handle, &mut c.access, kind, message)?,
                Protocol::Http(http) => http.send(&c.handle, &mut c.access, kind, message)?,
            }
        };
        if must_wait {
            SendWait { conn: slf.unbind(), parked: false }.into_py_any(py)
        } else {
            ready(py)
        }
    }

    /// The application raised: see the protocol's `abort`.
    fn abort(&mut self, py: Python<'_>) {
        match &mut self.protocol {
            Protocol::WebSocket(ws) => ws.abort(py, &self.handle, &mut self.access),
            Protocol::Http(http) => http.abort(py, &self.handle, &mut self.access),
        }
    }

    /// The application returned; returns whether it left its protocol unfinished (an error).
    fn finish(&mut self, py: Python<'_>) -> bool {
        match &mut self.protocol {
            Protocol::WebSocket(ws) => ws.finish(py, &self.handle, &mut self.access),
            Protocol::Http(http) => http.finish(py, &self.handle, &mut self.access),
        }
    }

    /// Whether the connection is gone on the server's side (the client left, or it closed).
    #[getter]
    fn disconnected(&self) -> bool {
        self.handle.is_closed()
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

/// Wakes parked waiters (those already done, i.e. cancelled, are left as they are).
pub fn wake(py: Python<'_>, waiters: impl IntoIterator<Item = Py<Waiter>>) {
    for waiter in waiters {
        // Only `call_soon` can fail here (a closed loop): its task will never run anyway.
        let _ = Waiter::wake(waiter.bind(py));
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

    /// The awaitable is its own iterator (`yield from receive().__await__()`, as
    /// `asyncio.ensure_future` and `asyncio.wait_for` do, needs one).
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(_slf: PyRef<'_, Self>) -> Option<Py<PyAny>> {
        None
    }
}

/// The awaitable `send()` returns above the high-water mark.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct SendWait {
    conn: Py<AsgiConn>,
    parked: bool,
}

#[pymethods]
impl SendWait {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The awaitable is its own iterator (`yield from receive().__await__()`, as
    /// `asyncio.ensure_future` and `asyncio.wait_for` do, needs one).
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<Waiter>>> {
        let parked = std::mem::replace(&mut self.parked, true);
        let mut c = self.conn.bind(py).borrow_mut();
        if parked {
            // Woken by Writable: the bytes went out, go on (even if the client has left
            // since). Woken by the disconnect alone: they may never arrive.
            if std::mem::take(&mut c.send_released) {
                return Ok(None);
            }
            if let Some(err) = c.gone() {
                return Err(err);
            }
            if c.send_waiter.is_none() || !c.handle.wait_writable() {
                c.send_waiter = None;
                return Ok(None);
            }
        }
        let waiter = Waiter::park(py, c.event_loop.clone_ref(py))?;
        c.send_released = false;
        c.send_waiter = Some(waiter.clone_ref(py));
        Ok(Some(waiter))
    }
}
