//! The ASGI `websocket` protocol of one connection (ASGI websocket spec 2.5).
//!
//! # Theory of operation
//!
//! What the application sends moves one state machine; what it receives is a queue:
//!
//! ```text
//!   send:    Connecting ──websocket.accept──► Open ──websocket.close──► Closed
//!               │ ──websocket.close (403)────────────────────────────────►│
//!               └─websocket.http.response.start──► Responding ──body, more_body=False──►│
//!   receive: websocket.connect, then websocket.receive per message, then websocket.disconnect
//! ```
//!
//! Every operation goes to the I/O side through the typed [`ConnHandle`] calls, which count
//! the bytes of messages and denial bodies against the connection's send buffer. `send` after
//! the client left raises [`ClientDisconnected`] (an `OSError`), a second close is a no-op, and a
//! message the state does not allow is a `RuntimeError`. An application that returns without
//! accepting or closing gets a 500; one that returns with the socket open closes it with 1000.

use std::collections::VecDeque;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use zcasgi_core::backend::{ConnHandle, SendState};
use zcasgi_core::protocol::Message;

use super::buffer::{bytes_like, bytes_of_str};
use super::message::{field, headers, response_body, response_start};
use super::send_body;
use crate::access::{AccessLog, Outcome};
use crate::errors::ClientDisconnected;

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

/// The `websocket` protocol state of one connection.
#[derive(Debug)]
pub(super) struct WebSocket {
    state: AppState,
    connect_delivered: bool,
    inbox: VecDeque<Message>,
    /// `(code, reason)` once the I/O side has closed.
    disconnect: Option<(u16, String)>,
}

impl WebSocket {
    /// A connection waiting for the application's accept.
    pub(super) fn new() -> Self {
        Self {
            state: AppState::Connecting,
            connect_delivered: false,
            inbox: VecDeque::new(),
            disconnect: None,
        }
    }

    /// Queues a message from the client.
    pub(super) fn push_message(&mut self, message: Message) {
        self.inbox.push_back(message);
    }

    /// The connection is gone, with this close code and reason.
    pub(super) fn push_disconnect(&mut self, code: u16, reason: String) {
        self.disconnect = Some((code, reason));
    }

    /// The error a waiting sender gets once the client is gone.
    pub(super) fn gone(&self) -> Option<PyErr> {
        self.disconnect.as_ref().map(|_| ClientDisconnected::new_err("the client has disconnected"))
    }

    /// Takes the next ASGI receive event, if one is ready.
    pub(super) fn next_event(
        &mut self,
        py: Python<'_>,
        handle: &ConnHandle,
    ) -> PyResult<Option<Py<PyAny>>> {
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
            handle.message_taken(message.len());
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

    /// Applies an ASGI `send(message)` of type `kind`; returns whether the sender must wait
    /// for the send buffer to drain.
    pub(super) fn send(
        &mut self,
        handle: &ConnHandle,
        log: &mut AccessLog,
        kind: &str,
        message: &Bound<'_, PyDict>,
    ) -> PyResult<bool> {
        let py = message.py();
        match (self.state, kind) {
            (AppState::Open, "websocket.send") => {
                if self.disconnect.is_some() {
                    return Err(ClientDisconnected::new_err("the client has disconnected"));
                }
                let (text, payload) = send_payload(message)?;
                match handle.send(text, payload) {
                    SendState::Ready => Ok(false),
                    SendState::Full => Ok(handle.wait_writable()),
                    SendState::Closed => {
                        Err(ClientDisconnected::new_err("the client has disconnected"))
                    }
                }
            }
            (AppState::Connecting, "websocket.accept") => {
                let subprotocol: Option<String> =
                    field(message, intern!(py, "subprotocol"))?.map(|v| v.extract()).transpose()?;
                let headers = headers(message)?;
                self.state = AppState::Open;
                if self.disconnect.is_none() {
                    handle.accept(subprotocol, headers);
                    log.log(py, Outcome::Accepted);
                }
                Ok(false)
            }
            (AppState::Connecting | AppState::Open, "websocket.close") => {
                let code: u16 =
                    field(message, intern!(py, "code"))?.map_or(Ok(1000), |v| v.extract())?;
                let reason: String = field(message, intern!(py, "reason"))?
                    .map_or_else(|| Ok(String::new()), |v| v.extract())?;
                zcasgi_core::protocol::check_close(code, &reason)
                    .map_err(crate::errors::invalid_state)?;
                if self.state == AppState::Connecting {
                    log.log(py, Outcome::Status(403));
                }
                let open = self.state == AppState::Open;
                self.state = AppState::Closed;
                // An open WebSocket the I/O side has finished has nothing left to close: no
                // command, no wake-up of its thread.
                if !(open && self.disconnect.is_some()) {
                    handle.close(code, reason);
                }
                Ok(false)
            }
            (AppState::Closed, "websocket.close") => Ok(false),
            (AppState::Connecting, "websocket.http.response.start") => {
                let (status, headers) = response_start(message)?;
                self.state = AppState::Responding;
                log.log(py, Outcome::Status(status));
                handle.respond(status, headers);
                Ok(false)
            }
            (AppState::Responding, "websocket.http.response.body") => {
                let (body, more) = response_body(message)?;
                if !more {
                    self.state = AppState::Closed;
                }
                Ok(send_body(handle, body, more))
            }
            (AppState::Closed, "websocket.send") => {
                Err(ClientDisconnected::new_err("the websocket is closed"))
            }
            (state, kind) => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message '{kind}' in state {state:?}"
            ))),
        }
    }

    /// The application raised: close with 1011, or answer 500 before the accept.
    pub(super) fn abort(&mut self, py: Python<'_>, handle: &ConnHandle, log: &mut AccessLog) {
        if self.state == AppState::Connecting {
            log.log(py, Outcome::Status(500));
        }
        self.state = AppState::Closed;
        handle.abort();
    }

    /// The application returned: close normally if it left the socket open. Returning without
    /// accepting or closing is an error (500, as uvicorn); returns whether it was one.
    pub(super) fn finish(
        &mut self,
        py: Python<'_>,
        handle: &ConnHandle,
        log: &mut AccessLog,
    ) -> bool {
        let error = match self.state {
            AppState::Connecting | AppState::Responding => {
                if self.state == AppState::Connecting {
                    log.log(py, Outcome::Status(500));
                }
                handle.abort();
                true
            }
            AppState::Open => {
                // Once the I/O side has finished the WebSocket (the client closed it), there is
                // nothing to close: no command, no wake-up of its thread.
                if self.disconnect.is_none() {
                    handle.close(1000, String::new());
                }
                false
            }
            AppState::Closed => false,
        };
        self.state = AppState::Closed;
        error
    }
}

/// `websocket.send`'s payload: `(true, text)` or `(false, bytes)`, never copied when it is a
/// `str` or `bytes`.
fn send_payload(message: &Bound<'_, PyDict>) -> PyResult<(bool, Bytes)> {
    let py = message.py();
    if let Some(b) = field(message, intern!(py, "bytes"))? {
        let b = bytes_like(&b).ok_or_else(|| PyTypeError::new_err("'bytes' must be bytes"))?;
        return Ok((false, b));
    }
    if let Some(t) = field(message, intern!(py, "text"))? {
        let s = t.cast::<PyString>().map_err(|_| PyTypeError::new_err("'text' must be a str"))?;
        return Ok((true, bytes_of_str(s)?));
    }
    Err(PyValueError::new_err("websocket.send needs 'bytes' or 'text'"))
}
