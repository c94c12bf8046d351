//! One connection's byte path, from its socket to its [`Driver`] and back, as every backend
//! drives it.
//!
//! A [`Session`] is what a backend holds per connection: the driver, and — on a TLS listener —
//! the connection's TLS state ([`crate::tls::TlsStream`]) between the socket and the driver.
//! The backend decides *when* to call [`Session::read`], [`Session::flush`] and the driver's
//! own entry points ([`Session::driver_mut`]); *what* they do does not depend on the backend,
//! nor, outside this module and `tls`, on whether the connection is encrypted.

use std::time::Instant;

use bytes::BytesMut;
use zcasgi_core::driver::Driver;

use crate::io::{self, Flush, Read, Socket};
use crate::tls::TlsStream;

/// One connection's driver, behind TLS when its listener has it.
#[derive(Debug)]
pub struct Session {
    driver: Driver,
    tls: Option<Box<TlsStream>>,
}

impl Session {
    /// The session of a plain connection.
    #[must_use]
    pub fn plain(driver: Driver) -> Self {
        Self { driver, tls: None }
    }

    /// The session of a TLS connection whose handshake has not started.
    #[must_use]
    pub fn tls(driver: Driver, tls: TlsStream) -> Self {
        Self { driver, tls: Some(Box::new(tls)) }
    }

    /// Whether the connection is over TLS (its TLS state lives in this process: it cannot be
    /// handed to another one).
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The connection's protocol state.
    #[must_use]
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The connection's protocol state, for `on_tick`, `on_commands`, `on_shutdown`.
    pub fn driver_mut(&mut self) -> &mut Driver {
        &mut self.driver
    }

    /// Reads once from `socket` and hands what it gave to the driver (decrypted, over TLS).
    ///
    /// `shared` is the backend's shared read buffer (see [`io::read`]).
    pub fn read(&mut self, socket: &impl Socket, shared: &mut BytesMut, now: Instant) -> Read {
        match &mut self.tls {
            None => io::read(&mut self.driver, shared, now, |b| io::recv_into(socket, b)),
            Some(tls) => tls.read(&mut self.driver, socket, shared, now),
        }
    }

    /// Writes what the driver has queued (encrypted, over TLS) until it is all written or the
    /// socket would block.
    pub fn flush(&mut self, socket: &impl Socket) -> Flush {
        match &mut self.tls {
            None => io::flush(&mut self.driver, |bufs| socket.send(bufs)),
            Some(tls) => tls.flush(&mut self.driver, socket),
        }
    }

    /// Whether the backend should read from the socket now.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.driver.wants_read() && self.tls.as_ref().is_none_or(|t| t.wants_read())
    }

    /// Whether anything waits to be written.
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.driver.wants_write() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether the connection is finished: everything is written (over TLS, the `close_notify`
    /// alert too), and the socket can be half-closed and closed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished() && self.tls.as_ref().is_none_or(|t| t.is_finished())
    }

    /// When the driver needs [`Driver::on_tick`].
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.driver.deadline()
    }
}
