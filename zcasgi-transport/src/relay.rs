//! Relaying a TLS connection's plaintext to the worker process that serves it.
//!
//! # Theory of operation
//!
//! A plain connection whose request names another worker's Engine.IO session moves to that
//! worker as a socket ([`crate::handoff`]). A TLS connection cannot: its TLS state (keys,
//! sequence numbers, rustls' buffers) lives in this process. So the accepting worker keeps the
//! TLS stream and hands the owner one end of a fresh `socketpair(AF_UNIX, SOCK_STREAM)` instead,
//! with the bytes already read and the connection's [`crate::handoff::Origin`] (its addresses
//! and TLS facts, so the owner builds the scope the TLS connection would have had). The owner
//! serves that end as a plain connection. This worker's [`Relay`] then moves bytes both ways:
//!
//! ```text
//!   client ══TLS══ [socket ─ rustls ─ up ──► pair end] ═══ Unix socket pair ═══ owner's driver
//!                  [        rustls ◄─ down ◄─        ]
//! ```
//!
//! - **Client to owner**: ciphertext is read from the client's socket and decrypted into `up`,
//!   which is written to the pair. The client's socket is read only while `up` holds less than
//!   [`RELAY_BUFFER`].
//! - **Owner to client**: the pair is read into `down` while it holds less than
//!   [`RELAY_BUFFER`], and `down` is encrypted into rustls while its outgoing buffer has room
//!   ([`crate::tls::BUFFER_LIMIT`]); the ciphertext is written to the client's socket.
//! - **Ends**: the client's `close_notify` or end of stream is passed on as a half-close of the
//!   pair once `up` is written; the owner's end of stream (it finished) as `close_notify` once
//!   `down` is encrypted. The relay is finished when TLS is done with the client's socket (the
//!   `close_notify` written, or rustls' alert after a TLS failure), or at once when the client's
//!   socket fails; the backend then closes the pair end, which the owner sees as the end of
//!   stream (or a reset). A pair that fails ends the owner's direction the same way.
//! - **Bounds**: both buffers are bounded, so a side that does not read stops the other side's
//!   reads, down to the sender (TCP's window, the pair's socket buffer): back-pressure, never
//!   unbounded growth. An idle relay holds no buffer. Once the owner has finished, the client
//!   gets `close_timeout` from the last write progress to take the rest, then the relay is
//!   dropped.
//!
//! [`Relay::pump`] is the relay's one step, readiness-agnostic: it moves bytes in both
//! directions until every direction is blocked (a call returned `WouldBlock`, or a buffer is
//! full and waits for the other side), so a backend calls it on any readiness event of either
//! socket and waits on the readiness [`Relay::wants_read_client`] and its siblings name. It
//! stops after [`PUMP_BUDGET`] rounds, so that one busy relay does not starve the other
//! connections of its thread.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::io::{recv_into, Flush, Read, Socket};
use crate::tls::TlsStream;

/// Most plaintext one direction of a relay buffers before it stops reading its source.
pub const RELAY_BUFFER: usize = 64 * 1024;

/// Most rounds of one [`Relay::pump`].
pub const PUMP_BUDGET: usize = 16;

/// Room reserved in `down` for one read of the pair: a TLS record's worth of plaintext.
const PAIR_READ: usize = 16 * 1024;

/// How a [`Relay::pump`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pump {
    /// Every direction is blocked: pump again on the next readiness event or at
    /// [`Relay::deadline`].
    Blocked,
    /// The budget ran out with work left: pump again on the next turn.
    More,
}

/// One relayed connection: its TLS stream, and the plaintext on its way each way.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // Independent facts about the two directions' ends.
pub struct Relay {
    tls: Box<TlsStream>,
    /// Plaintext from the client, for the owner.
    up: BytesMut,
    /// Plaintext from the owner, for the client (what rustls had no room for yet).
    down: BytesMut,
    /// The client sent its last byte (`close_notify`, end of stream, or a TLS failure).
    client_done: bool,
    /// The pair's write side is shut: the client's end was passed on.
    up_shut: bool,
    /// The owner sent its last byte (end of stream), or the pair failed.
    owner_done: bool,
    /// The pair failed: nothing more can be written to it.
    pair_failed: bool,
    /// The client's socket failed, or it stopped taking the rest: drop everything.
    dead: bool,
    /// How long the client has to take the rest once the owner finished.
    close_timeout: Duration,
    /// Once the owner finished: the relay is dropped at this instant.
    drain_deadline: Option<Instant>,
}

impl Relay {
    /// A relay of the established TLS stream `tls`; the client gets `close_timeout` to take the
    /// rest once the owner finished.
    #[must_use]
    pub fn new(tls: Box<TlsStream>, close_timeout: Duration) -> Self {
        Self {
            tls,
            up: BytesMut::new(),
            down: BytesMut::new(),
            client_done: false,
            up_shut: false,
            owner_done: false,
            pair_failed: false,
            dead: false,
            close_timeout,
            drain_deadline: None,
        }
    }

    /// Moves bytes between the client's socket `client` and the pair end `pair` until every
    /// direction is blocked, or for at most [`PUMP_BUDGET`] rounds.
    pub fn pump(&mut self, client: &impl Socket, pair: &impl Socket, now: Instant) -> Pump {
        if self.drain_deadline.is_some_and(|at| now >= at) {
            self.dead = true;
        }
        let mut outcome = Pump::More;
        for _ in 0..PUMP_BUDGET {
            if self.is_finished() {
                outcome = Pump::Blocked;
                break;
            }
            let up = self.client_to_owner(client, pair);
            let down = self.owner_to_client(client, pair, now);
            if !(up || down) {
                outcome = Pump::Blocked;
                break;
            }
        }
        // An idle relay holds no buffer.
        for buf in [&mut self.up, &mut self.down] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
        outcome
    }

    /// One round from the client to the owner; returns whether anything moved.
    fn client_to_owner(&mut self, client: &impl Socket, pair: &impl Socket) -> bool {
        let mut progress = false;
        if self.wants_read_client() {
            match self.tls.read_plaintext(client, &mut self.up) {
                Read::Data { .. } | Read::Interrupted => progress = true,
                Read::WouldBlock => {}
                Read::Eof | Read::Failed => {
                    self.client_done = true;
                    self.dead |= self.tls.is_dead();
                    progress = true;
                }
            }
        }
        if !self.up.is_empty() && !self.pair_failed {
            match pair.send(&[IoSlice::new(&self.up)]) {
                Ok(n) if n > 0 => {
                    self.up.advance(n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Ok(_) | Err(_) => {
                    self.pair_broken();
                    progress = true;
                }
            }
        }
        if self.client_done && self.up.is_empty() && !self.up_shut {
            self.up_shut = true;
            // A pair that failed already told the owner.
            let _ = pair.shutdown_write();
        }
        progress
    }

    /// One round from the owner to the client; returns whether anything moved.
    fn owner_to_client(&mut self, client: &impl Socket, pair: &impl Socket, now: Instant) -> bool {
        let mut progress = false;
        if self.wants_read_pair() {
            self.down.reserve(PAIR_READ.min(RELAY_BUFFER - self.down.len()));
            match recv_into(pair, &mut self.down) {
                Ok(0) => {
                    self.owner_finished(now);
                    progress = true;
                }
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(_) => {
                    self.pair_broken();
                    self.owner_finished(now);
                    progress = true;
                }
            }
        }
        if !self.down.is_empty() {
            let n = self.tls.write_plaintext(&self.down);
            if n > 0 {
                self.down.advance(n);
                progress = true;
            }
            if !self.tls.is_open() {
                // TLS failed or closed: the owner's output has nowhere to go.
                self.down.clear();
            }
        }
        if self.owner_done && self.down.is_empty() {
            self.tls.close();
        }
        if self.tls.wants_write() {
            match self.tls.write_queued(client) {
                Flush::Done => {
                    progress = true;
                    if self.drain_deadline.is_some() {
                        self.drain_deadline = Some(now + self.close_timeout);
                    }
                }
                // Waits for the socket's writable edge.
                Flush::Blocked => {}
                Flush::Failed => {
                    self.dead = true;
                    progress = true;
                }
            }
        }
        progress
    }

    /// The owner finished at `now` (end of stream, or the pair failed).
    fn owner_finished(&mut self, now: Instant) {
        if !self.owner_done {
            self.owner_done = true;
            self.drain_deadline = Some(now + self.close_timeout);
        }
    }

    /// The pair failed: nothing more goes to the owner.
    fn pair_broken(&mut self) {
        self.pair_failed = true;
        self.up.clear();
    }

    /// Whether to read the client's socket (wait for it to be readable).
    #[must_use]
    pub fn wants_read_client(&self) -> bool {
        !self.dead && !self.client_done && self.tls.is_open() && self.up.len() < RELAY_BUFFER
    }

    /// Whether ciphertext waits for the client's socket (wait for it to be writable).
    #[must_use]
    pub fn wants_write_client(&self) -> bool {
        !self.dead && self.tls.wants_write()
    }

    /// Whether to read the pair (wait for it to be readable).
    #[must_use]
    pub fn wants_read_pair(&self) -> bool {
        !self.dead && !self.owner_done && self.tls.is_open() && self.down.len() < RELAY_BUFFER
    }

    /// Whether plaintext waits for the pair (wait for it to be writable).
    #[must_use]
    pub fn wants_write_pair(&self) -> bool {
        !self.dead && !self.pair_failed && !self.up.is_empty()
    }

    /// Whether the client will send nothing more (its end of stream, or a failure): the
    /// backend's half-close of the client's socket needs no linger.
    #[must_use]
    pub fn is_client_done(&self) -> bool {
        self.client_done || self.dead
    }

    /// Whether the relay is over: the backend closes the pair end, then closes the client's
    /// socket as any finished connection's.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.dead || self.tls.is_finished()
    }

    /// When to pump again even without readiness: the client's time to take the rest.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.drain_deadline
    }
}
