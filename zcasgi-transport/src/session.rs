//! One connection's byte path, from its socket to its [`Driver`] and back, as every backend
//! drives it.
//!
//! A [`Session`] is what a backend holds per connection: the driver, and — on a TLS listener —
//! the connection's TLS state ([`crate::tls::TlsStream`]) between the socket and the driver.
//! The backend decides *when* to call [`Session::read`], [`Session::flush`] and the driver's
//! own entry points ([`Session::driver_mut`]); *what* they do does not depend on the backend,
//! nor, outside this module and `tls`, on whether the connection is encrypted.
//!
//! A TLS connection handed to another worker becomes a relay ([`Session::relay`]): the
//! backend then pumps it ([`Session::pump`]) between the socket and the pair end
//! [`crate::Context::hand_off`] gave it, instead of reading and flushing.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use zcasgi_core::driver::Driver;

use crate::io::{self, Flush, Read, Socket};
use crate::relay::{Pump, Relay};
use crate::tls::TlsStream;

/// What lies between a connection's socket and its driver.
#[derive(Debug)]
enum Path {
    /// Nothing: the socket's bytes are the driver's.
    Plain,
    /// TLS.
    Tls(Box<TlsStream>),
    /// TLS, relayed to the worker the connection was handed to (the driver is done).
    Relay(Box<Relay>),
}

/// One connection's driver, behind TLS when its listener has it.
#[derive(Debug)]
pub struct Session {
    driver: Driver,
    path: Path,
    /// The socket's receive low-water mark, as last set ([`io::read_low_water`]).
    low_water: usize,
}

impl Session {
    /// The session of a plain connection.
    #[must_use]
    pub fn plain(driver: Driver) -> Self {
        Self { driver, path: Path::Plain, low_water: 1 }
    }

    /// The session of a TLS connection whose handshake has not started.
    #[must_use]
    pub fn tls(driver: Driver, tls: TlsStream) -> Self {
        Self { driver, path: Path::Tls(Box::new(tls)), low_water: 1 }
    }

    /// Whether the connection is over TLS (its TLS state lives in this process: it cannot be
    /// handed to another one, only relayed).
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self.path, Path::Tls(_))
    }

    /// Turns a TLS session whose connection was handed to another worker into a relay; the
    /// client gets `close_timeout` to take the rest once the owner finished.
    pub(crate) fn start_relay(&mut self, close_timeout: Duration) {
        if let Path::Tls(tls) = std::mem::replace(&mut self.path, Path::Plain) {
            self.path = Path::Relay(Box::new(Relay::new(tls, close_timeout)));
        }
    }

    /// The relay, once the connection is relayed to another worker.
    #[must_use]
    pub fn relay(&self) -> Option<&Relay> {
        match &self.path {
            Path::Relay(relay) => Some(relay),
            _ => None,
        }
    }

    /// Relays between the client's socket `socket` and the pair end `pair` (see
    /// [`Relay::pump`]); `Pump::Blocked` if the connection is not relayed.
    pub fn pump(&mut self, socket: &impl Socket, pair: &impl Socket, now: Instant) -> Pump {
        match &mut self.path {
            Path::Relay(relay) => relay.pump(socket, pair, now),
            _ => Pump::Blocked,
        }
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
        match &mut self.path {
            Path::Plain => {
                let read = io::read(&mut self.driver, shared, now, |b| io::recv_into(socket, b));
                // Over TLS the socket's bytes are not the driver's, so only here. The mark
                // matters only once the backend waits: after a read that emptied the socket.
                let low_water = match read {
                    Read::Data { short: true } | Read::WouldBlock => {
                        io::read_low_water(self.driver.awaited_bytes())
                    }
                    _ if self.driver.awaited_bytes() == 0 => 1,
                    _ => self.low_water,
                };
                if low_water != self.low_water {
                    self.low_water = low_water;
                    socket.set_read_low_water(low_water);
                }
                read
            }
            Path::Tls(tls) => tls.read(&mut self.driver, socket, shared, now),
            Path::Relay(_) => Read::WouldBlock,
        }
    }

    /// Writes what the driver has queued (encrypted, over TLS) until it is all written or the
    /// socket would block.
    pub fn flush(&mut self, socket: &impl Socket) -> Flush {
        match &mut self.path {
            Path::Plain => io::flush(&mut self.driver, |bufs| socket.send(bufs)),
            Path::Tls(tls) => tls.flush(&mut self.driver, socket),
            Path::Relay(_) => Flush::Done,
        }
    }

    /// Whether the backend should read from the socket now (for a relay:
    /// [`Relay::wants_read_client`]).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        match &self.path {
            Path::Plain => self.driver.wants_read(),
            Path::Tls(tls) => self.driver.wants_read() && tls.wants_read(),
            Path::Relay(relay) => relay.wants_read_client(),
        }
    }

    /// Whether anything waits to be written (for a relay: [`Relay::wants_write_client`]).
    #[must_use]
    pub fn wants_write(&self) -> bool {
        match &self.path {
            Path::Plain => self.driver.wants_write(),
            Path::Tls(tls) => self.driver.wants_write() || tls.wants_write(),
            Path::Relay(relay) => relay.wants_write_client(),
        }
    }

    /// Whether the connection is finished: everything is written (over TLS, the `close_notify`
    /// alert too), and the socket can be half-closed and closed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        match &self.path {
            Path::Plain => self.driver.is_finished(),
            Path::Tls(tls) => self.driver.is_finished() && tls.is_finished(),
            Path::Relay(relay) => relay.is_finished(),
        }
    }

    /// When the driver needs [`Driver::on_tick`] (for a relay: when to pump again,
    /// [`Relay::deadline`]).
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        match &self.path {
            Path::Relay(relay) => relay.deadline(),
            Path::Plain | Path::Tls(_) => self.driver.deadline(),
        }
    }
}
