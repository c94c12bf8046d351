//! The transport policy of zcasgi, written once for every backend.
//!
//! A backend (`zcasgi-mio`, `zcasgi-tokio`) is an event model: it decides *when* a socket is
//! read, written, accepted from or closed. *What* happens then is the same for every backend and
//! lives here, so that a feature that touches the transport (another kind of listener, TLS,
//! workers) is written once and a third backend needs only its event loop:
//!
//! - [`accept`]: which `accept` errors skip one connection and which pause accepting for
//!   [`accept::BACKOFF`], and the rate-limited log of the latter;
//! - [`batch`]: one wake-up of the application per batch of an I/O thread's events;
//! - [`Context`]: what one server's threads or tasks share — connection ids unique within the
//!   server, the accept error log, the open connection count and the [`Tracker`] of its
//!   threads or tasks, which `join` waits on from any thread;
//! - [`io`]: the read step and the vectored flush loop between a socket and the
//!   [`zcasgi_core::driver::Driver`], over socket calls that never raise `SIGPIPE`;
//! - [`listener`]: the kinds of listening socket (TCP, Unix stream, inherited descriptors) and
//!   accepting from them, so that a connection is a [`socket2::Socket`] whatever its kind;
//! - [`Session`]: one connection's byte path between its socket and its driver;
//! - [`tls`]: TLS with rustls inside that path, for both backends;
//! - [`linger`]: the close sequence — half-close, drain the peer's input for at most
//!   [`linger::LINGER`], close;
//! - [`handoff`]: in a worker process, the inboxes and the `sendmsg`/`recvmsg` calls that hand
//!   a connection, and the bytes read from it, to the worker that owns its Engine.IO session
//!   ([`Context::hand_off`], [`Context::receive`]);
//! - [`relay`]: a TLS connection cannot leave the process that holds its TLS state, so its
//!   owner gets one end of a socket pair instead, and this process relays the plaintext.
//!
//! It depends on no runtime: socket calls take a [`socket2::SockRef`], and the read and flush
//! steps take the socket call as a closure, so a readiness loop calls them directly and tokio
//! through `TcpStream::try_io`. Protocol decisions stay in the sans-I/O `zcasgi-core`.
//!
//! With the feature `testing`, `testing` holds the backend test matrix: every transport
//! scenario written once against `&dyn Backend`, and `backend_matrix!`, which turns each into
//! a `#[test]` of a backend's test suite, so that every backend runs every scenario.

#![deny(missing_docs)]

pub mod accept;
pub mod batch;
mod context;
pub mod handoff;
pub mod io;
pub mod linger;
pub mod listener;
pub mod relay;
mod session;
pub mod tls;
mod tracker;

#[cfg(feature = "testing")]
pub mod testing;

pub use context::{Context, HandOff};
pub use listener::{Accepted, Listener};
pub use session::Session;
pub use tracker::{Guard, Tracker};
