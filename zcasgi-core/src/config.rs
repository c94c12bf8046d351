//! The server's configuration: one [`ServerConfig`] whose fields are the options of
//! `zcasgi.Config`, under the same names.
//!
//! The Python binding reads a `zcasgi.Config` into this struct attribute by attribute, so an
//! option has one name everywhere: keyword argument, CLI flag, `ZCASGI_*` variable and field
//! here. Its [`Default`] holds the documented defaults; the WebSocket and request-head limits
//! that [`crate::protocol`] and [`crate::handshake`] take are derived from it
//! ([`ServerConfig::protocol`], [`ServerConfig::handshake`]).
//!
//! Every numeric option has a documented range ([`ServerConfig::limits`]), checked by
//! [`ServerConfig::validate`]. The ranges keep everything the server computes from a valid
//! value in bounds: durations are at most [`MAX_DURATION`], so adding one to an `Instant`
//! cannot overflow; sizes are at most [`MAX_BYTES`].
//!
//! A new option the core takes is: a field here with its default (and, if numeric, its range in
//! [`ServerConfig::limits`]); its name in the binding's field list
//! (`zcasgi-python/src/config.rs`, the compiler asks for it); one line in `zcasgi.Config` that
//! checks its type; and its row in `docs/configuration.md` (a test compares the table with
//! `zcasgi.Config`). Python takes the default and the range from here. One field is not an
//! option: [`ServerConfig::log`], which the binding sets from the loggers it logs to.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::backend::LogLevel;
use crate::error::ConfigError;
use crate::frame::is_valid_close_code;
use crate::handshake::HandshakeConfig;
use crate::http::DefaultHeaders;
use crate::protocol::ProtocolConfig;

/// Longest duration any option accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Shortest keepalive ping interval and pong timeout accepted: a tenth of a second.
pub const MIN_PING: Duration = Duration::from_millis(100);

/// Largest byte size any option accepts: 1 TiB.
pub const MAX_BYTES: u64 = 1 << 40;

/// Longest request line accepted, in bytes (a longer one gets 414), capped by
/// [`ServerConfig::max_header_bytes`].
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Everything a backend needs to know to serve connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Number of I/O threads; 0: none, the backend's loop runs on the caller's thread, turned
    /// by the caller's event loop ([`RunningServer::inline`], the mio backend only).
    ///
    /// [`RunningServer::inline`]: crate::backend::RunningServer::inline
    pub io_threads: usize,
    /// Most connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections above which a new connection's requests are answered 503 (uvicorn's
    /// `--limit-concurrency`); `None`: no such limit.
    pub limit_concurrency: Option<usize>,
    /// Largest WebSocket message accepted, in bytes (a larger one closes the connection with
    /// 1009); for a compressed message, the inflated size.
    pub ws_max_size: usize,
    /// Received messages per connection not yet taken by the application, above which the
    /// connection stops reading from its socket.
    pub ws_max_queue: usize,
    /// Bytes per connection of received messages (counted inflated) and request body pieces
    /// not yet taken by the application, at which the connection stops reading from its
    /// socket. A larger message is still delivered when nothing else waits: what waits is at
    /// most this plus one message (`ws_max_size`).
    pub ws_max_queue_bytes: usize,
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
    /// Time allowed from accepting the TCP connection to a complete request head; also the
    /// longest a request body may go without a byte arriving (a stalled body gets 408).
    pub handshake_timeout: Duration,
    /// How long an idle keep-alive HTTP connection is kept between requests.
    pub timeout_keep_alive: Duration,
    /// Largest HTTP request body accepted, in bytes (a larger one gets 413).
    pub http_max_body_size: u64,
    /// How long to wait for the peer's close frame after sending ours; also the longest a
    /// failure is held for the application's replies (see [`crate::driver`]).
    pub close_timeout: Duration,
    /// Close code sent to every open WebSocket when the server shuts down.
    pub shutdown_close_code: u16,
    /// Most request headers accepted (more: 431).
    pub max_headers: usize,
    /// Largest request head accepted, in bytes (larger: 431).
    pub max_header_bytes: usize,
    /// The TLS certificate chain (PEM), leaf first; `None` serves plain TCP. The core only
    /// carries the TLS options: `zcasgi-transport` loads and uses them.
    pub ssl_certfile: Option<PathBuf>,
    /// The private key (PEM); `None`: it is in `ssl_certfile`.
    pub ssl_keyfile: Option<PathBuf>,
    /// The password of an encrypted (PKCS#8) `ssl_keyfile`.
    pub ssl_keyfile_password: Option<Password>,
    /// CA certificates (PEM) that client certificates are verified against.
    pub ssl_ca_certs: Option<PathBuf>,
    /// Whether clients present a certificate, with uvicorn's numbers (Python's
    /// `ssl.CERT_*`): 0 none is asked for, 1 optional, 2 required.
    pub ssl_cert_reqs: u8,
    /// Whether responses carry `server: zcasgi` (unless the application sends its own).
    pub server_header: bool,
    /// Whether responses carry a `date` header (unless the application sends its own).
    pub date_header: bool,
    /// Extra headers, `(name, value)`, on every response and WebSocket accept (uvicorn's
    /// `--header`); the application's header of the same name wins.
    pub headers: Vec<(String, String)>,
    /// What the I/O side logs: not an option, the binding sets it from the loggers it logs to.
    pub log: LogConfig,
}

/// What the I/O side logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// The lowest severity of the log records made: those below it are never built (the
    /// application side's logger level, read once when the server starts).
    pub level: LogLevel,
    /// Whether requests the server answers itself are reported ([`Event::Refused`]).
    ///
    /// [`Event::Refused`]: crate::backend::Event::Refused
    pub access: bool,
}

impl Default for LogConfig {
    /// Every record, and no refusals.
    fn default() -> Self {
        Self { level: LogLevel::Debug, access: false }
    }
}

/// A secret string (a key's password) that `Debug` does not show.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            io_threads: 1,
            max_connections: 100_000,
            limit_concurrency: None,
            ws_max_size: 16 * 1024 * 1024,
            ws_max_queue: 32,
            ws_max_queue_bytes: 1024 * 1024,
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
            ssl_certfile: None,
            ssl_keyfile: None,
            ssl_keyfile_password: None,
            ssl_ca_certs: None,
            ssl_cert_reqs: 0,
            server_header: true,
            date_header: true,
            headers: Vec::new(),
            log: LogConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Every numeric option with its documented range and its value (`None`: disabled), in
    /// the order of the fields.
    #[must_use]
    pub fn limits(&self) -> Vec<(Limit, Option<Amount>)> {
        let timeout = |option, value| seconds(option, Some(value), Duration::ZERO);
        vec![
            count("io_threads", self.io_threads, 0, 1024),
            count("max_connections", self.max_connections, 1, 10_000_000),
            optional_count("limit_concurrency", self.limit_concurrency, 1, 10_000_000),
            count("ws_max_size", self.ws_max_size, 1, MAX_BYTES),
            count("ws_max_queue", self.ws_max_queue, 1, 1 << 20),
            count("ws_max_queue_bytes", self.ws_max_queue_bytes, 1, MAX_BYTES),
            seconds("ws_ping_interval", self.ws_ping_interval, MIN_PING),
            seconds("ws_ping_timeout", self.ws_ping_timeout, MIN_PING),
            count("ws_write_high_water", self.ws_write_high_water, 1, MAX_BYTES),
            count("ws_write_low_water", self.ws_write_low_water, 0, MAX_BYTES),
            timeout("handshake_timeout", self.handshake_timeout),
            timeout("timeout_keep_alive", self.timeout_keep_alive),
            count("http_max_body_size", self.http_max_body_size, 0, MAX_BYTES),
            timeout("close_timeout", self.close_timeout),
            count("shutdown_close_code", self.shutdown_close_code, 1000, 4999),
            count("max_headers", self.max_headers, 1, 10_000),
            count("max_header_bytes", self.max_header_bytes, 256, 1 << 20),
            count("ssl_cert_reqs", self.ssl_cert_reqs, 0, 2),
        ]
    }

    /// Checks every option against its documented range, and the rules between options.
    ///
    /// # Errors
    /// The first option found out of range or unusable, named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (limit, value) in self.limits() {
            if let Some(value) = value {
                limit.check(value)?;
            }
        }
        if self.ws_write_low_water > self.ws_write_high_water {
            return Err(ConfigError::LowWaterAboveHighWater);
        }
        if !is_valid_close_code(self.shutdown_close_code) {
            return Err(ConfigError::UnsendableCloseCode(self.shutdown_close_code));
        }
        if self.ssl_certfile.is_none() {
            let tls_only = [
                ("ssl_keyfile", self.ssl_keyfile.is_some()),
                ("ssl_keyfile_password", self.ssl_keyfile_password.is_some()),
                ("ssl_ca_certs", self.ssl_ca_certs.is_some()),
                ("ssl_cert_reqs", self.ssl_cert_reqs != 0),
            ];
            if let Some((option, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::Requires { option, requires: "ssl_certfile" });
            }
        }
        for (name, value) in &self.headers {
            let problem = if name.is_empty() || !name.bytes().all(is_token_byte) {
                Some("has a name that is not an HTTP token")
            } else if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                Some("has a control character in its value")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ConfigError::InvalidHeader { name: name.clone(), problem });
            }
        }
        if self.ssl_cert_reqs != 0 && self.ssl_ca_certs.is_none() {
            return Err(ConfigError::Requires {
                option: "ssl_cert_reqs",
                requires: "ssl_ca_certs",
            });
        }
        Ok(())
    }

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

    /// The headers added to a response written at the wall-clock time `date`.
    #[must_use]
    pub fn default_headers(&self, date: SystemTime) -> DefaultHeaders<'_> {
        DefaultHeaders {
            date: self.date_header.then_some(date),
            server: self.server_header,
            extra: &self.headers,
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

/// Whether `b` may appear in an HTTP token (RFC 9110 §5.6.2 `tchar`), as a header name must.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A value of a numeric option: a count (of bytes, messages, threads ...) or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Amount {
    /// A count.
    Count(u64),
    /// A duration.
    Seconds(Duration),
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Seconds(d) => write!(f, "{} seconds", d.as_secs_f64()),
        }
    }
}

/// The documented range of a numeric option, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The option's name.
    pub option: &'static str,
    /// The smallest value accepted.
    pub min: Amount,
    /// The largest value accepted.
    pub max: Amount,
}

impl Limit {
    /// Checks `value` against the range.
    ///
    /// # Errors
    /// [`ConfigError::TooSmall`] or [`ConfigError::TooLarge`], naming the option.
    pub fn check(&self, value: Amount) -> Result<(), ConfigError> {
        let option = self.option;
        if value < self.min {
            return Err(ConfigError::TooSmall { option, min: self.min, value });
        }
        if value > self.max {
            return Err(ConfigError::TooLarge { option, max: self.max, value });
        }
        Ok(())
    }
}

/// A count option's range and value; values past `u64` saturate, and fail the check.
fn count(
    option: &'static str,
    value: impl TryInto<u64>,
    min: u64,
    max: u64,
) -> (Limit, Option<Amount>) {
    let value = value.try_into().unwrap_or(u64::MAX);
    (Limit { option, min: Amount::Count(min), max: Amount::Count(max) }, Some(Amount::Count(value)))
}

/// An optional count's range and value (`None`: disabled).
fn optional_count(
    option: &'static str,
    value: Option<usize>,
    min: u64,
    max: u64,
) -> (Limit, Option<Amount>) {
    let (limit, amount) = count(option, value.unwrap_or_default(), min, max);
    (limit, value.and(amount))
}

/// A duration option's range (`min..=MAX_DURATION`) and value.
fn seconds(
    option: &'static str,
    value: Option<Duration>,
    min: Duration,
) -> (Limit, Option<Amount>) {
    let limit = Limit { option, min: Amount::Seconds(min), max: Amount::Seconds(MAX_DURATION) };
    (limit, value.map(Amount::Seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(cfg: &ServerConfig) -> String {
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn extra_headers_are_checked() {
        let with = |name: &str, value: &str| ServerConfig {
            headers: vec![(name.to_owned(), value.to_owned())],
            ..ServerConfig::default()
        };
        assert_eq!(with("x-frame-options", "DENY\tnow").validate(), Ok(()));
        assert_eq!(
            error(&with("x frame", "1")),
            r#"headers: "x frame" has a name that is not an HTTP token"#
        );
        assert_eq!(error(&with("", "1")), r#"headers: "" has a name that is not an HTTP token"#);
        let err = with("x-a", "1\r\nset-cookie: a=b").validate().unwrap_err();
        assert_eq!(err.to_string(), r#"headers: "x-a" has a control character in its value"#);
        assert_eq!(err.option(), "headers");
    }

    #[test]
    fn default_headers_follow_the_options() {
        let date = SystemTime::UNIX_EPOCH;
        let cfg =
            ServerConfig { server_header: false, date_header: false, ..ServerConfig::default() };
        assert_eq!(
            cfg.default_headers(date),
            DefaultHeaders { date: None, server: false, extra: &[] }
        );
        assert_eq!(ServerConfig::default().default_headers(date), DefaultHeaders::dated(date));
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn every_limit_is_accepted_at_both_ends() {
        for (limit, _) in ServerConfig::default().limits() {
            for end in [limit.min, limit.max] {
                assert_eq!(limit.check(end), Ok(()), "{}", limit.option);
            }
        }
    }

    #[test]
    fn durations_past_a_day_are_rejected() {
        let day = MAX_DURATION;
        let over = day + Duration::from_nanos(1);
        assert_eq!(
            ServerConfig { handshake_timeout: day, ..ServerConfig::default() }.validate(),
            Ok(())
        );
        for cfg in [
            ServerConfig { handshake_timeout: over, ..ServerConfig::default() },
            ServerConfig { close_timeout: Duration::MAX, ..ServerConfig::default() },
            ServerConfig { timeout_keep_alive: over, ..ServerConfig::default() },
            ServerConfig { ws_ping_interval: Some(over), ..ServerConfig::default() },
            ServerConfig { ws_ping_timeout: Some(Duration::MAX), ..ServerConfig::default() },
        ] {
            let err = cfg.validate().unwrap_err();
            assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
            assert!(err.to_string().contains("must be <= 86400 seconds, got"), "{err}");
        }
        let err = ServerConfig { close_timeout: over, ..ServerConfig::default() }.validate();
        assert_eq!(
            err,
            Err(ConfigError::TooLarge {
                option: "close_timeout",
                max: Amount::Seconds(day),
                value: Amount::Seconds(over),
            })
        );
        assert_eq!(err.unwrap_err().option(), "close_timeout");
    }

    #[test]
    fn the_largest_valid_durations_do_not_overflow_an_instant() {
        let now = std::time::Instant::now();
        for (limit, _) in ServerConfig::default().limits() {
            if let Amount::Seconds(max) = limit.max {
                assert!(now.checked_add(max).is_some(), "{}", limit.option);
            }
        }
    }

    #[test]
    fn pings_faster_than_the_minimum_are_rejected() {
        let cfg = ServerConfig {
            ws_ping_interval: Some(Duration::from_nanos(1)),
            ..ServerConfig::default()
        };
        assert_eq!(error(&cfg), "ws_ping_interval must be >= 0.1 seconds, got 0.000000001 seconds");
        let cfg = ServerConfig { ws_ping_timeout: Some(Duration::ZERO), ..ServerConfig::default() };
        assert_eq!(error(&cfg), "ws_ping_timeout must be >= 0.1 seconds, got 0 seconds");
        let cfg = ServerConfig {
            ws_ping_interval: None,
            ws_ping_timeout: None,
            ..ServerConfig::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn counts_out_of_range_are_rejected() {
        let cfg = ServerConfig { io_threads: 1025, ..ServerConfig::default() };
        assert_eq!(error(&cfg), "io_threads must be <= 1024, got 1025");
        // No I/O thread: the caller runs the backend's loop (`RunningServer::inline`).
        assert_eq!(ServerConfig { io_threads: 0, ..ServerConfig::default() }.validate(), Ok(()));
        let cfg = ServerConfig { max_connections: usize::MAX, ..ServerConfig::default() };
        assert_eq!(error(&cfg), format!("max_connections must be <= 10000000, got {}", usize::MAX));
        let cfg = ServerConfig { limit_concurrency: Some(0), ..ServerConfig::default() };
        assert_eq!(error(&cfg), "limit_concurrency must be >= 1, got 0");
        let cfg = ServerConfig { http_max_body_size: u64::MAX, ..ServerConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().option(), "http_max_body_size");
        let cfg = ServerConfig { ws_max_size: (1 << 40) + 1, ..ServerConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().option(), "ws_max_size");
        let cfg = ServerConfig { max_header_bytes: 255, ..ServerConfig::default() };
        assert_eq!(error(&cfg), "max_header_bytes must be >= 256, got 255");
    }

    #[test]
    fn rules_between_options() {
        let cfg = ServerConfig {
            ws_write_low_water: 10,
            ws_write_high_water: 5,
            ..ServerConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::LowWaterAboveHighWater));
        assert_eq!(cfg.validate().unwrap_err().option(), "ws_write_low_water");
        for code in [1004, 1005, 1006, 1015, 2999] {
            let cfg = ServerConfig { shutdown_close_code: code, ..ServerConfig::default() };
            assert_eq!(cfg.validate(), Err(ConfigError::UnsendableCloseCode(code)));
            assert_eq!(error(&cfg), format!("shutdown_close_code {code} may not be sent"));
        }
        let cfg = ServerConfig { shutdown_close_code: 999, ..ServerConfig::default() };
        assert_eq!(error(&cfg), "shutdown_close_code must be >= 1000, got 999");
    }

    #[test]
    fn sub_configs_follow_the_options() {
        let cfg = ServerConfig {
            ws_max_size: 10,
            ws_per_message_deflate: true,
            max_header_bytes: 4096,
            ..ServerConfig::default()
        };
        assert_eq!(cfg.protocol().max_message_size, 10);
        assert!(cfg.protocol().per_message_deflate);
        assert_eq!(cfg.handshake().max_request_line, 4096);
        assert_eq!(ServerConfig::default().handshake().max_request_line, 8 * 1024);
        assert_eq!(ServerConfig::default().protocol(), ProtocolConfig::default());
        assert_eq!(ServerConfig::default().handshake(), HandshakeConfig::default());
    }
}
