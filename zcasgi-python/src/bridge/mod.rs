//! The bridge between the backend's I/O threads and the asyncio event loop.
//!
//! # Theory of operation
//!
//! I/O threads push [`Event`](zcasgi_core::backend::Event)s into a lock-free queue
//! ([`EventQueue`], module `queue`). The loop is woken through one eventfd registered with
//! `loop.add_reader`, written only when the queue goes from idle to busy, so one wake-up drains a
//! whole batch; no `call_soon_threadsafe` per message. The loop thread then dispatches the batch
//! to the connections ([`AsgiConn`]), and builds each new connection's scope (module `scope`).
//!
//! The application's `receive()` returns an awaitable that completes without a loop round trip
//! when an event is queued; only an empty queue parks the task on a future. `send()` hands the
//! application's own `bytes`/`str` object to the I/O thread inside a
//! [`Bytes`](bytes::Bytes) that keeps it alive until written (module `buffer`): the payload is
//! never copied. It completes at once below the connection's high-water mark and parks the task
//! above it. That plumbing is written once (module `awaitable`); what `websocket` and `http`
//! mean by each message is their own state machine (modules `ws` and `http`), reading the
//! application's messages through module `message`.

mod awaitable;
mod buffer;
mod http;
mod message;
mod queue;
mod scope;
mod ws;

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use zcasgi_core::backend::{ConnHandle, ConnectInfo, SendState};

pub use awaitable::{wake, AsgiConn, Inbound, Ready, SendWait};
pub use queue::EventQueue;
pub use scope::scope;

/// The access log of one connection or request: `client - "request" outcome` lines.
struct AccessLog {
    logger: Option<Py<PyAny>>,
    client: String,
    /// `WebSocket /path?query`, or the HTTP request line.
    request: String,
}

impl AccessLog {
    /// The access log of the request in `info`, written to `logger` (`None`: disabled).
    fn new(info: &ConnectInfo, logger: Option<Py<PyAny>>) -> Self {
        let req = &info.request;
        let mut target = String::from_utf8_lossy(&req.raw_path).into_owned();
        if !req.query_string.is_empty() {
            target.push('?');
            target.push_str(&String::from_utf8_lossy(&req.query_string));
        }
        let request = if info.upgrade.is_some() {
            format!("WebSocket {target}")
        } else {
            format!("{} {target} HTTP/1.{}", req.method, req.http_minor)
        };
        let client = info.client.map_or_else(|| "-".to_owned(), |a| a.to_string());
        Self { logger, client, request }
    }

    /// Logs the request's `outcome` (a status, `[accepted]`) at INFO.
    fn log(&self, py: Python<'_>, outcome: &str) {
        if let Some(logger) = &self.logger {
            let line = format!("{} - \"{}\" {outcome}", self.client, self.request);
            let _ = logger.call_method1(py, intern!(py, "info"), (line,));
        }
    }
}

/// Sends a piece of a response body (HTTP, or a WebSocket denial); returns whether the sender
/// must wait for the send buffer to drain. Sending to a client that has gone is a no-op.
fn send_body(handle: &ConnHandle, body: Bytes, more: bool) -> bool {
    match handle.respond_body(body, more) {
        SendState::Ready | SendState::Closed => false,
        SendState::Full => handle.wait_writable(),
    }
}
