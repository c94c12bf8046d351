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
mod waiter;
mod ws;

use bytes::Bytes;
use zcasgi_core::backend::{ConnHandle, SendState};

pub use awaitable::{wake, AsgiConn, Inbound, Ready, SendWait};
pub(crate) use buffer::bytes_of;
pub use queue::EventQueue;
pub use scope::ScopeBuilder;
pub use waiter::Waiter;

/// Sends a piece of a response body (HTTP, or a WebSocket denial); returns whether the sender
/// must wait for the send buffer to drain. Sending to a client that has gone is a no-op.
fn send_body(handle: &ConnHandle, body: Bytes, more: bool) -> bool {
    match handle.respond_body(body, more) {
        SendState::Ready | SendState::Closed => false,
        SendState::Full => handle.wait_writable(),
    }
}
