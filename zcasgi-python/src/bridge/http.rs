//! The ASGI `http` protocol of one request (ASGI HTTP spec 2.5).
//!
//! # Theory of operation
//!
//! ```text
//!   send:    NotStarted ──http.response.start──► Started ──http.response.body, more_body=False──► Complete
//!   receive: http.request per body piece (the last with more_body=False), then http.disconnect
//!            once the client has gone or the response is complete
//! ```
//!
//! Body pieces go to the I/O side through [`ConnHandle::respond_body`], which counts them
//! against the connection's send buffer: above the high-water mark the sender waits. Sending to
//! a client that left is a no-op (ASGI), never an error. An application that raises or returns
//! before its response is complete gets a 500 if nothing was sent yet, else its connection is
//! closed.

use std::collections::VecDeque;

use bytes::Bytes;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use zcasgi_core::backend::ConnHandle;

use super::message::{response_body, response_start};
use super::send_body;
use crate::access::{AccessLog, Outcome};

/// Where the application is in the ASGI http protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseState {
    NotStarted,
    Started,
    Complete,
}

/// The `http` protocol state of one request.
#[derive(Debug)]
pub(super) struct HttpRequest {
    inbox: VecDeque<(Bytes, bool)>,
    disconnected: bool,
    response: ResponseState,
    status: u16,
}

impl HttpRequest {
    /// A request whose body is still to come.
    pub(super) fn new() -> Self {
        Self {
            inbox: VecDeque::new(),
            disconnected: false,
            response: ResponseState::NotStarted,
            status: 0,
        }
    }

    /// Queues a piece of the request body.
    pub(super) fn push_body(&mut self, body: Bytes, more: bool) {
        self.inbox.push_back((body, more));
    }

    /// The client has gone.
    pub(super) fn push_disconnect(&mut self) {
        self.disconnected = true;
    }

    /// Takes the next ASGI receive event, if one is ready.
    pub(super) fn next_event(
        &mut self,
        py: Python<'_>,
        handle: &ConnHandle,
    ) -> PyResult<Option<Py<PyAny>>> {
        let done = self.disconnected || self.response == ResponseState::Complete;
        if self.inbox.is_empty() && !done {
            return Ok(None);
        }
        let d = PyDict::new(py);
        if let Some((body, more)) = self.inbox.pop_front() {
            handle.message_taken(body.len());
            d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            d.set_item(intern!(py, "body"), PyBytes::new(py, &body))?;
            d.set_item(intern!(py, "more_body"), more)?;
            return Ok(Some(d.into_any().unbind()));
        }
        // After the response, or once the client is gone, receive() reports the disconnect.
        d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
        Ok(Some(d.into_any().unbind()))
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
        match (self.response, kind) {
            (ResponseState::NotStarted, "http.response.start") => {
                let (status, headers) = response_start(message)?;
                self.response = ResponseState::Started;
                self.status = status;
                if !self.disconnected {
                    handle.respond(status, headers);
                }
                Ok(false)
            }
            (ResponseState::Started, "http.response.body") => {
                let (body, more) = response_body(message)?;
                if !more {
                    self.response = ResponseState::Complete;
                    log.log(message.py(), Outcome::Status(self.status));
                }
                if self.disconnected {
                    // ASGI: sending to a client that left is a no-op for http.
                    return Ok(false);
                }
                Ok(send_body(handle, body, more))
            }
            (state, kind) => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message '{kind}' in response state {state:?}"
            ))),
        }
    }

    /// The application raised: 500 if no response started, else close the connection.
    pub(super) fn abort(&mut self, py: Python<'_>, handle: &ConnHandle, log: &mut AccessLog) {
        if self.response == ResponseState::NotStarted {
            log.log(py, Outcome::Status(500));
        }
        if self.response != ResponseState::Complete {
            handle.abort();
        }
        self.response = ResponseState::Complete;
    }

    /// The application returned: an unfinished response is an error (500 or a closed
    /// connection); returns whether it was.
    pub(super) fn finish(
        &mut self,
        py: Python<'_>,
        handle: &ConnHandle,
        log: &mut AccessLog,
    ) -> bool {
        if self.response == ResponseState::Complete {
            return false;
        }
        self.abort(py, handle, log);
        true
    }
}
