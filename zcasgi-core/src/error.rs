//! Typed errors of the protocol core.
//!
//! Peer misbehaviour ([`ProtocolError`], [`HandshakeError`]) is kept apart from local API misuse
//! ([`InvalidState`]). Each peer error carries its own mapping to the wire: a close code for
//! protocol errors (RFC 6455 §7.4.1) and an HTTP status for handshake errors. The core does no
//! I/O, so there is no I/O variant here; backends wrap their own. A [`ConfigError`] names the
//! option a configuration cannot run with.

use crate::config::Amount;

/// A violation of RFC 6455 by the peer, or a configured limit it exceeded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV1-3 bits set without a negotiated extension that defines them (RFC 6455 §5.2).
    #[error("reserved bits set: {0:#05b}")]
    ReservedBitsSet(u8),
    /// An opcode reserved for future use (RFC 6455 §5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client-to-server frame without a mask (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A control frame with FIN clear (RFC 6455 §5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame payload longer than 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// A continuation frame with no fragmented message in progress (RFC 6455 §5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (RFC 6455 §5.4).
    #[error("data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set (RFC 6455 §5.2).
    #[error("payload length has the most significant bit set")]
    InvalidLength,
    /// A message (or frame) larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// Size the message has reached, or announced, in bytes.
        size: u64,
        /// The configured limit in bytes.
        max: u64,
    },
    /// A text message that is not valid UTF-8 (RFC 6455 §8.1).
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// A close frame reason that is not valid UTF-8 (RFC 6455 §5.5.1).
    #[error("invalid UTF-8 in close reason")]
    InvalidCloseReason,
    /// A close frame whose payload is exactly one byte long (RFC 6455 §5.5.1).
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// A close code that may not appear on the wire (RFC 6455 §7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A compressed message that does not inflate (RFC 7692 §6.2).
    #[error("compressed message does not inflate")]
    InvalidCompressedData,
    /// The peer did not answer a keepalive ping in time.
    #[error("keepalive ping timeout")]
    KeepaliveTimeout,
}

impl ProtocolError {
    /// The close code to send when failing the connection for this error (RFC 6455 §7.4.1).
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 | Self::InvalidCloseReason | Self::InvalidCompressedData => 1007,
            Self::MessageTooBig { .. } => 1009,
            Self::KeepaliveTimeout => 1011,
            Self::ReservedBitsSet(_)
            | Self::ReservedOpcode(_)
            | Self::UnmaskedFrame
            | Self::FragmentedControlFrame
            | Self::ControlFrameTooLong(_)
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::InvalidLength
            | Self::InvalidClosePayload
            | Self::InvalidCloseCode(_) => 1002,
        }
    }
}

/// A malformed, unsupported or oversized opening handshake (RFC 6455 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request is not syntactically valid HTTP/1.1.
    #[error("malformed HTTP request: {0}")]
    Malformed(&'static str),
    /// The request line is longer than the configured limit.
    #[error("request line too long")]
    RequestLineTooLong,
    /// The request head is larger than the configured limit.
    #[error("request headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    /// The request has more headers than the configured limit.
    #[error("more than {0} request headers")]
    TooManyHeaders(usize),
    /// The method is not GET (RFC 6455 §4.2.1 item 1).
    #[error("method must be GET, not {0}")]
    MethodNotAllowed(String),
    /// The HTTP version is older than 1.1 (RFC 6455 §4.2.1 item 1).
    #[error("HTTP/1.1 or later is required")]
    UnsupportedHttpVersion,
    /// No `Upgrade: websocket` and `Connection: upgrade` (RFC 6455 §4.2.1 items 3-4).
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// `Sec-WebSocket-Key` is missing or not 16 base64-encoded bytes (RFC 6455 §4.2.1 item 5).
    #[error("missing or invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing or not 13 (RFC 6455 §4.2.1 item 6).
    #[error("unsupported Sec-WebSocket-Version (13 is required)")]
    UnsupportedVersion,
    /// An HTTP/1.1 request without a `Host` header (RFC 9112 §3.2).
    #[error("missing Host header")]
    MissingHost,
    /// A request with more than one `Host` header (RFC 9112 §3.2).
    #[error("more than one Host header")]
    MultipleHosts,
    /// A request target that is neither a path (origin-form), an `http`/`https` URI with a host
    /// and no userinfo (absolute-form), nor `*` for OPTIONS (RFC 9112 §3.2, RFC 9110 §4.2).
    #[error("invalid request target")]
    InvalidTarget,
}

impl HandshakeError {
    /// The HTTP status to reject the request with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_)
            | Self::InvalidKey
            | Self::UnsupportedHttpVersion
            | Self::MethodNotAllowed(_)
            | Self::MissingHost
            | Self::MultipleHosts
            | Self::InvalidTarget => 400,
            Self::RequestLineTooLong => 414,
            Self::HeadersTooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::NotUpgrade | Self::UnsupportedVersion => 426,
        }
    }
}

/// A configuration value the server cannot run with; each names its option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value below the option's documented minimum.
    #[error("{option} must be >= {min}, got {value}")]
    TooSmall {
        /// The option.
        option: &'static str,
        /// The documented minimum.
        min: Amount,
        /// The value given.
        value: Amount,
    },
    /// A value above the option's documented maximum.
    #[error("{option} must be <= {max}, got {value}")]
    TooLarge {
        /// The option.
        option: &'static str,
        /// The documented maximum.
        max: Amount,
        /// The value given.
        value: Amount,
    },
    /// `ws_write_low_water` above `ws_write_high_water`.
    #[error("ws_write_low_water must not exceed ws_write_high_water")]
    LowWaterAboveHighWater,
    /// A `shutdown_close_code` that a server may not send (RFC 6455 §7.4.1).
    #[error("shutdown_close_code {0} may not be sent")]
    UnsendableCloseCode(u16),
    /// An option set without another it needs.
    #[error("{option} requires {requires}")]
    Requires {
        /// The option set.
        option: &'static str,
        /// The option it needs.
        requires: &'static str,
    },
    /// An extra response header (`headers`) that cannot be sent: its name is not an
    /// RFC 9110 §5.6.2 token, or its value holds a control character (RFC 9110 §5.5).
    #[error("headers: {name:?} {problem}")]
    InvalidHeader {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A worker index that is not below the worker count.
    #[error("worker index {index} must be below the worker count {count}")]
    WorkerIndex {
        /// The index given.
        index: u16,
        /// The worker count given.
        count: u16,
    },
    /// Not one inbox per worker.
    #[error("{inboxes} worker inboxes given for {count} workers")]
    WorkerInboxes {
        /// The inboxes given.
        inboxes: usize,
        /// The worker count given.
        count: u16,
    },
}

impl ConfigError {
    /// The option the error is about.
    #[must_use]
    pub fn option(&self) -> &'static str {
        match self {
            Self::TooSmall { option, .. }
            | Self::TooLarge { option, .. }
            | Self::Requires { option, .. } => option,
            Self::LowWaterAboveHighWater => "ws_write_low_water",
            Self::UnsendableCloseCode(_) => "shutdown_close_code",
            Self::InvalidHeader { .. } => "headers",
            Self::WorkerIndex { .. } | Self::WorkerInboxes { .. } => "worker",
        }
    }
}

/// A local API call that the connection's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidState {
    /// A message was sent after the close handshake started.
    #[error("the connection is closing or closed")]
    Closed,
    /// A close code that an endpoint may not send (RFC 6455 §7.4.1).
    #[error("close code {0} may not be sent")]
    UnsendableCloseCode(u16),
    /// A close reason longer than 123 bytes of UTF-8 (RFC 6455 §5.5).
    #[error("close reason longer than 123 bytes")]
    CloseReasonTooLong,
    /// A ping payload longer than 125 bytes (RFC 6455 §5.5).
    #[error("ping payload of {0} bytes exceeds 125")]
    PingTooLong(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(ProtocolError::InvalidCompressedData.close_code(), 1007);
        assert_eq!(ProtocolError::MessageTooBig { size: 2, max: 1 }.close_code(), 1009);
        assert_eq!(ProtocolError::KeepaliveTimeout.close_code(), 1011);
        for e in [
            ProtocolError::ReservedBitsSet(1),
            ProtocolError::ReservedOpcode(3),
            ProtocolError::UnmaskedFrame,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::ControlFrameTooLong(126),
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::InvalidLength,
            ProtocolError::InvalidClosePayload,
            ProtocolError::InvalidCloseCode(999),
        ] {
            assert_eq!(e.close_code(), 1002, "{e}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(HandshakeError::Malformed("x").status(), 400);
        assert_eq!(HandshakeError::InvalidKey.status(), 400);
        assert_eq!(HandshakeError::UnsupportedHttpVersion.status(), 400);
        assert_eq!(HandshakeError::MethodNotAllowed("POST".into()).status(), 400);
        assert_eq!(HandshakeError::RequestLineTooLong.status(), 414);
        assert_eq!(HandshakeError::HeadersTooLarge(1).status(), 431);
        assert_eq!(HandshakeError::TooManyHeaders(1).status(), 431);
        assert_eq!(HandshakeError::NotUpgrade.status(), 426);
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::MissingHost.status(), 400);
        assert_eq!(HandshakeError::MultipleHosts.status(), 400);
        assert_eq!(HandshakeError::InvalidTarget.status(), 400);
    }

    #[test]
    fn messages_are_lower_case() {
        assert_eq!(
            ProtocolError::MessageTooBig { size: 10, max: 5 }.to_string(),
            "message of 10 bytes exceeds the limit of 5 bytes"
        );
        assert_eq!(InvalidState::Closed.to_string(), "the connection is closing or closed");
    }
}
