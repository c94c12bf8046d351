//! The server's configuration: one [`ServerConfig`] whose fields are the options of
//! `zcasgi.Config`, under the same names.
//!
//! The Python binding reads a `zcasgi.Config` into this struct attribute by attribute, so an
//! option has one name everywhere: keyword argument, CLI flag, `ZCASGI_*` variable and field
//! here. Its [`Default`] holds the documented defaults; the WebSocket and request-head limits
//! that [`crate::protocol`] and [`crate::handshake`] take are derived from it
//! ([`ServerConfig::protocol`], [`ServerConfig::handshake`]).

use std::time::Duration;

use crate::handshake::HandshakeConfig;
use crate::protocol::ProtocolConfig;

/// Longest request line accepted, in bytes (a longer one gets 414), capped by
/// [`ServerConfig::max_header_bytes`].
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Everything a backend needs to know to serve connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Number of I/O threads.
    pub io_threads: usize,
    /// Most connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Largest WebSocket message accepted, in bytes (a larger one closes the connection with
    /// 1009); for a compressed message, the inflated size.
    pub ws_max_size: usize,
    /// Received messages per connection not yet taken by the application, above which the
    /// connection stops reading from its socket.
    pub ws_max_queue: usize,
    /// Interval between keepalive pings; `None` disables them.
    pub ws_ping_interval: Option<Duration>,
    /// How long to wait for the pong to a keepalive ping; `None` waits forever.
    pub ws_ping_timeout: Option<Duration>,
    /// Whether permessage-deflate offers (RFC 7692) are accepted.
    pub ws_per_message_deflate: bool,
    /// Unwritten bytes per connection above which the application's `send` waits.
    pub ws_write_high_water: usize,
    /// Unwritten bytes per connection below which a waiting `send` resumes.
    pub ws_write_low_water: usize,
    /// Time allowed from accepting the TCP connection to a complete request head.
    pub handshake_timeout: Duration,
    /// How long an idle keep-alive HTTP connection is kept between requests.
    pub timeout_keep_alive: Duration,
    /// Largest HTTP request body accepted, in bytes (a larger one gets 413).
    pub http_max_body_size: u64,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// Close code sent to every open WebSocket when the server shuts down.
    pub shutdown_close_code: u16,
    /// Most request headers accepted (more: 431).
    pub max_headers: usize,
    /// Largest request head accepted, in bytes (larger: 431).
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            io_threads: 1,
            max_connections: 100_000,
            ws_max_size: 16 * 1024 * 1024,
            ws_max_queue: 32,
            ws_ping_interval: Some(Duration::from_secs(20)),
            ws_ping_timeout: Some(Duration::from_secs(20)),
            ws_per_message_deflate: false,
            ws_write_high_water: 64 * 1024,
            ws_write_low_water: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            timeout_keep_alive: Duration::from_secs(5),
            http_max_body_size: 16 * 1024 * 1024,
            close_timeout: Duration::from_secs(10),
            shutdown_close_code: crate::frame::close_code::SERVICE_RESTART,
            max_headers: 100,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl ServerConfig {
    /// The limits and timers of each WebSocket connection.
    #[must_use]
    pub fn protocol(&self) -> ProtocolConfig {
        ProtocolConfig {
            max_message_size: self.ws_max_size,
            ping_interval: self.ws_ping_interval,
            ping_timeout: self.ws_ping_timeout,
            close_timeout: self.close_timeout,
            per_message_deflate: self.ws_per_message_deflate,
        }
    }

    /// The limits applied while reading a request head.
    #[must_use]
    pub fn handshake(&self) -> HandshakeConfig {
        HandshakeConfig {
            max_headers: self.max_headers,
            max_head_bytes: self.max_header_bytes,
            max_request_line: self.max_header_bytes.min(MAX_REQUEST_LINE),
        }
    }
}
