//! The sans-I/O protocol core of zcasgi.
//!
//! Everything about WebSocket (RFC 6455), HTTP/1.1 and Engine.IO framing lives here, and nothing about
//! sockets, threads or clocks: functions take bytes and return values or events; time is passed
//! in. The transport backends (`zcasgi-mio`, `zcasgi-tokio`) only move bytes between sockets and
//! these types, so both share every line of protocol logic and can be tested without a network.

#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod deflate;
pub mod driver;
pub mod engineio;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod outq;
pub mod protocol;
pub mod sticky;
pub mod utf8;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::ServerConfig;
pub use error::{ConfigError, HandshakeError, InvalidState, ProtocolError};
