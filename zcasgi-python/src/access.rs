//! The access log: one record per request, at INFO on `zcasgi.access`, as uvicorn writes it.
//!
//! A record's `args` are uvicorn's, `(client_addr, method, full_path, http_version,
//! status_code)`, so a formatter written for `uvicorn.access` (such as
//! `uvicorn.logging.AccessFormatter`) formats ours. Its message is uvicorn's line with the
//! status phrase after the code:
//!
//! ```text
//! 127.0.0.1:51234 - "GET /socket.io/?EIO=4 HTTP/1.1" 200 OK
//! 127.0.0.1:51234 - "WebSocket /socket.io/?EIO=4" [accepted]
//! 127.0.0.1:51234 - "WebSocket /chat" 403 Forbidden
//! 127.0.0.1:51234 - "-" 400 Bad Request
//! ```
//!
//! The phrase is part of the message template, not an argument, and a WebSocket record's
//! template shows only some of the arguments (`%.0s` prints an argument as nothing): the
//! arguments stay uvicorn's five. A WebSocket record's method is `WebSocket` and its status
//! 101 once accepted.
//!
//! Everything is read from the ASGI scope when the record is written, as uvicorn does: the
//! client is the one the application saw, after `proxy_headers` replaced the proxy's address
//! with the forwarded client.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use zcasgi_core::http::response::reason_phrase;

/// What a request is, for its access line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain HTTP request.
    Http,
    /// A WebSocket upgrade request.
    WebSocket,
    /// A request whose head was never parsed: only its client is known.
    Unknown,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The WebSocket was accepted.
    Accepted,
    /// The request was answered with this status.
    Status(u16),
}

/// The access log of one WebSocket connection or HTTP request.
pub struct AccessLog {
    logger: Option<Py<PyAny>>,
    scope: Option<Py<PyDict>>,
    kind: Kind,
}

impl AccessLog {
    /// The access log of the request whose ASGI scope is `scope`, written to `logger` (`None`:
    /// disabled).
    pub fn new(logger: Option<Py<PyAny>>, scope: &Bound<'_, PyDict>, kind: Kind) -> Self {
        let scope = logger.as_ref().map(|_| scope.clone().unbind());
        Self { logger, scope, kind }
    }

    /// Logs the request's outcome, once: a request has one access line, and a later outcome
    /// (the application's response to a request the server has answered already) is not
    /// logged. A logging failure is Python logging's to report.
    pub fn log(&mut self, py: Python<'_>, outcome: Outcome) {
        if let (Some(logger), Some(scope)) = (self.logger.take(), self.scope.take()) {
            let _ = write(logger.bind(py), scope.bind(py), self.kind, outcome);
        }
    }
}

/// Writes the access record of the request in `scope` to `logger`.
///
/// # Errors
/// What reading the scope or calling the logger raised.
pub fn write(
    logger: &Bound<'_, PyAny>,
    scope: &Bound<'_, PyDict>,
    kind: Kind,
    outcome: Outcome,
) -> PyResult<()> {
    let py = logger.py();
    let status = match outcome {
        Outcome::Accepted => 101,
        Outcome::Status(status) => status,
    };
    // The args are always uvicorn's five: `%.0s` prints one as nothing.
    let (request, method) = match kind {
        Kind::Http => ("\"%s %s HTTP/%s\"", None),
        Kind::WebSocket => ("\"%s %s%.0s\"", Some("WebSocket")),
        Kind::Unknown => ("\"%s%.0s%.0s\"", Some("-")),
    };
    let template = match outcome {
        Outcome::Accepted => format!("%s - {request} [accepted]%.0s"),
        Outcome::Status(status) => match reason_phrase(status) {
            "" => format!("%s - {request} %d"),
            // A phrase has no `%` to escape.
            phrase => format!("%s - {request} %d {phrase}"),
        },
    };
    let method = match method {
        Some(m) => PyString::new(py, m).into_any(),
        None => scope
            .get_item(intern!(py, "method"))?
            .unwrap_or_else(|| PyString::new(py, "-").into_any()),
    };
    let (full_path, http_version) = if kind == Kind::Unknown {
        (PyString::new(py, "").into_any(), PyString::new(py, "").into_any())
    } else {
        let version = scope
            .get_item(intern!(py, "http_version"))?
            .unwrap_or_else(|| PyString::new(py, "1.1").into_any());
        (PyString::new(py, &full_path(scope)?).into_any(), version)
    };
    let args = PyTuple::new(
        py,
        [
            PyString::new(py, &template).into_any(),
            PyString::new(py, &client_addr(scope)?).into_any(),
            method,
            full_path,
            http_version,
            status.into_pyobject(py)?.into_any(),
        ],
    )?;
    logger.call_method1(intern!(py, "info"), args)?;
    Ok(())
}

/// The scope's client as `host:port` (`[host]:port` for IPv6), `-` when unknown.
fn client_addr(scope: &Bound<'_, PyDict>) -> PyResult<String> {
    let py = scope.py();
    let Some(client) = scope.get_item(intern!(py, "client"))? else { return Ok("-".to_owned()) };
    if client.is_none() {
        return Ok("-".to_owned());
    }
    let host: String = client.get_item(0)?.str()?.extract()?;
    let port = client.get_item(1)?.str()?;
    if host.contains(':') {
        Ok(format!("[{host}]:{port}"))
    } else {
        Ok(format!("{host}:{port}"))
    }
}

/// The request target as sent: the scope's `raw_path` (or `path`) and its query string.
fn full_path(scope: &Bound<'_, PyDict>) -> PyResult<String> {
    let py = scope.py();
    let mut target = match scope.get_item(intern!(py, "raw_path"))? {
        Some(raw) if raw.is_instance_of::<PyBytes>() => {
            String::from_utf8_lossy(raw.cast::<PyBytes>()?.as_bytes()).into_owned()
        }
        _ => scope.get_item(intern!(py, "path"))?.map_or(Ok(String::new()), |p| p.extract())?,
    };
    if let Some(query) = scope.get_item(intern!(py, "query_string"))? {
        if let Ok(query) = query.cast::<PyBytes>() {
            if !query.as_bytes().is_empty() {
                target.push('?');
                target.push_str(&String::from_utf8_lossy(query.as_bytes()));
            }
        }
    }
    Ok(target)
}
