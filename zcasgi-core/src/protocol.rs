//! One WebSocket connection's state machine, server side (RFC 6455 §5-§7), sans I/O.
//!
//! # Theory of operation
//!
//! A [`Connection`] starts after the opening handshake, in state `Open`. It has four verbs, as
//! in python-websockets: feed it bytes ([`Connection::receive_data`]), feed it end of stream
//! ([`Connection::receive_eof`]), take events ([`Connection::next_event`]) and take bytes to send
//! ([`Connection::out_queue`]). Time is an input too ([`Connection::on_tick`]): the connection
//! never reads a clock.
//!
//! ```text
//!            send_close()                  peer's Close
//!   Open ─────────────────► Closing ─────────────────────► Closed
//!    │ │                       │  close_timeout / EOF          ▲
//!    │ │ peer's Close (echoed),│───────────────────────────────┤
//!    │ │ EOF, protocol error,  │                               │
//!    │ └ keepalive timeout ────┴───────────────────────────────┤
//!    │                                                         │
//!    │ protocol error,       complete_failure(), send_close(), │
//!    └ held ──────► Failing ── close_timeout, EOF ─────────────┘
//! ```
//!
//! Every transition into `Closed` emits exactly one [`Event::Closed`] whose code is what the
//! application should be told (the peer's code, 1005 for none, 1006 when the transport ended
//! without a close frame, or the code this side failed the connection with). In `Closed` the
//! connection reads nothing more; once its queue is written the transport should be closed
//! (RFC 6455 §7.1.1: the server closes the TCP connection first).
//!
//! # Held failures
//!
//! By default a protocol error fails the connection at once (RFC 6455 §7.1.7): the close frame
//! is queued behind what is already queued. A server whose application answers messages
//! asynchronously can do better for the messages that arrived, valid, before the violation:
//! after [`Connection::hold_failures`], a protocol error in `Open` moves to `Failing` instead.
//! There the connection reads nothing more (data after the violation is never delivered) but
//! still sends messages, so the replies to what was delivered can go out first; the close frame
//! with the violation's code is queued by [`Connection::complete_failure`], by
//! [`Connection::send_close`] (whatever code it asks for), or at the latest `close_timeout`
//! after the violation.
//!
//! # Receiving without copies
//!
//! Frames are parsed straight out of the caller's buffer. A payload is unmasked in place (it
//! has to be unmasked before UTF-8 validation anyway) and split off as a [`Bytes`] that shares
//! the buffer's memory, so a single-frame message reaches the application with no copy made
//! here. Only the unfinished tail of a read is kept by the connection, in a buffer sized for the
//! frame it belongs to, into which the next reads can go directly ([`Connection::read_buffer`]).
//!
//! # permessage-deflate
//!
//! A connection made with [`Connection::with_deflate`] (RFC 7692) accepts RSV1 on the first
//! frame of a data message, meaning the message is compressed (RFC 7692 §6). Such a message is
//! reassembled, inflated within the size limit, and only then checked as UTF-8 if it is text
//! (RFC 7692 §6.2); outgoing data messages are compressed, control frames never (RFC 7692 §6).
//! A connection without deflate takes none of these paths: its payloads are never copied.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::deflate::{Deflate, DeflateParams};
use crate::error::{InvalidState, ProtocolError};
use crate::frame::{
    apply_mask, close_code, decode_header, is_valid_close_code, FrameHeader, HeaderBytes, OpCode,
};
use crate::outq::OutQueue;
use crate::utf8::Utf8Validator;

/// Most bytes reserved ahead of data for an unfinished frame; the buffer grows as data comes.
const MAX_RESERVE: usize = 256 * 1024;

/// Limits and timers of a WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// Largest message accepted, in bytes (a larger one fails the connection with 1009); for a
    /// compressed message, the inflated size.
    pub max_message_size: usize,
    /// Interval between keepalive pings; `None` disables them.
    pub ping_interval: Option<Duration>,
    /// How long to wait for the pong to a keepalive ping; `None` waits forever.
    pub ping_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame after sending ours, and the longest a
    /// failure is held ([`Connection::hold_failures`]).
    pub close_timeout: Duration,
    /// Whether the server accepts permessage-deflate offers (RFC 7692); the driver negotiates.
    pub per_message_deflate: bool,
}

impl Default for ProtocolConfig {
    /// The limits of [`ServerConfig::default`](crate::config::ServerConfig).
    fn default() -> Self {
        crate::config::ServerConfig::default().protocol()
    }
}

/// How much more a connection may deliver before the application takes some: parsing stops
/// after the data message that uses it up (see [`Connection::set_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Messages.
    pub messages: usize,
    /// Bytes of messages (inflated, for compressed ones).
    pub bytes: usize,
}

impl Room {
    /// No limit: parsing never stops for the application.
    pub const UNLIMITED: Self = Self { messages: usize::MAX, bytes: usize::MAX };

    fn is_used_up(self) -> bool {
        self.messages == 0 || self.bytes == 0
    }

    fn take(&mut self, len: usize) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
    }
}

/// A complete data message. Text is guaranteed to be valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The payload's length in bytes (what the application's queue counts it as).
    #[must_use]
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.payload().is_empty()
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        let (Self::Text(b) | Self::Binary(b)) = self;
        b
    }
}

/// Something the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A ping (already answered with a pong).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The connection is closed; `code` and `reason` are what to report to the application.
    Closed {
        /// The close code (1005: the peer sent none, 1006: no close frame at all).
        code: u16,
        /// The close reason (empty if none).
        reason: String,
    },
}

/// One frame received or sent, as the trace log shows it: never its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    /// Whether this side sent it (else it was received).
    pub sent: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The payload length, in bytes (as on the wire: compressed, for a compressed message).
    pub len: u64,
    /// The FIN bit.
    pub fin: bool,
    /// The RSV bits (RSV1: a compressed message, RFC 7692 §6).
    pub rsv: u8,
}

impl std::fmt::Display for FrameSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.sent { "sent" } else { "received" };
        let op = match self.opcode {
            OpCode::Continuation => "continuation",
            OpCode::Text => "text",
            OpCode::Binary => "binary",
            OpCode::Close => "close",
            OpCode::Ping => "ping",
            OpCode::Pong => "pong",
            OpCode::Reserved(_) => "reserved",
        };
        write!(f, "{dir} {op} frame, {} bytes, fin={}", self.len, u8::from(self.fin))?;
        if self.rsv != 0 {
            write!(f, ", rsv={:#05b}", self.rsv)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The peer broke the protocol and the failure is held (see "Held failures"): the close
    /// frame with this code is not queued yet.
    Failing(u16),
    Closing,
    Closed,
}

/// The frame whose header has been read and whose payload is (partly) in the buffer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    header: FrameHeader,
    mask: [u8; 4],
    len: usize,
    /// Leading payload bytes already unmasked (and validated, for text).
    done: usize,
}

/// The data message being received.
#[derive(Debug)]
struct Incoming {
    text: bool,
    /// RSV1 was set on the first frame: the message is compressed (RFC 7692 §6).
    compressed: bool,
    /// Payload bytes received so far (compressed bytes for a compressed message).
    size: usize,
    /// Fragments received so far (empty until a message spans several frames).
    fragments: BytesMut,
    utf8: Utf8Validator,
}

/// A server-side WebSocket connection.
#[derive(Debug)]
pub struct Connection {
    config: ProtocolConfig,
    state: State,
    /// Unparsed input left over between calls (an unfinished frame).
    inbuf: BytesMut,
    pending: Option<Pending>,
    incoming: Option<Incoming>,
    events: VecDeque<Event>,
    out: OutQueue,
    next_ping: Option<Instant>,
    ping_payload: Option<[u8; 8]>,
    pong_deadline: Option<Instant>,
    pings_sent: u64,
    /// When `Closing` or `Failing` gives up.
    close_deadline: Option<Instant>,
    /// permessage-deflate state, when negotiated (boxed: most connections have none).
    deflate: Option<Box<Deflate>>,
    /// A protocol error moves to `Failing` rather than failing at once.
    hold_failures: bool,
    /// What may still be delivered before parsing stops.
    room: Room,
    /// Parsing stopped because `room` ran out.
    held_back: bool,
    /// Frames received and sent since the last [`Connection::take_frames`], when traced.
    frames: Option<Vec<FrameSummary>>,
}

impl Connection {
    /// A connection in the `Open` state.
    #[must_use]
    pub fn new(config: ProtocolConfig) -> Self {
        Self {
            config,
            state: State::Open,
            inbuf: BytesMut::new(),
            pending: None,
            incoming: None,
            events: VecDeque::new(),
            out: OutQueue::new(),
            next_ping: None,
            ping_payload: None,
            pong_deadline: None,
            pings_sent: 0,
            close_deadline: None,
            deflate: None,
            hold_failures: false,
            room: Room::UNLIMITED,
            held_back: false,
            frames: None,
        }
    }

    /// Records a [`FrameSummary`] of every frame received and sent from now on, for
    /// [`Connection::take_frames`] (the trace log); untraced, a frame costs one branch.
    pub fn trace_frames(&mut self) {
        self.frames.get_or_insert_with(Vec::new);
    }

    /// Takes the frames recorded since the last call (none unless traced).
    pub fn take_frames(&mut self) -> Vec<FrameSummary> {
        self.frames.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A connection in the `Open` state with permessage-deflate negotiated (RFC 7692).
    #[must_use]
    pub fn with_deflate(config: ProtocolConfig, params: DeflateParams) -> Self {
        let mut conn = Self::new(config);
        conn.deflate = Some(Box::new(Deflate::new(params)));
        conn
    }

    /// Makes the protocol errors of the peer hold the failure rather than fail at once (see
    /// "Held failures" above).
    pub fn hold_failures(&mut self) {
        self.hold_failures = true;
    }

    /// Sets what may still be delivered: parsing stops (keeping the rest of the input) after
    /// the data message that uses `room` up, whatever its size, until a larger room is set and
    /// [`Connection::receive_buffered`] called. A message that does not fit is still delivered
    /// whole: it is inflated before its size is known. [`Room::UNLIMITED`] at first.
    pub fn set_room(&mut self, room: Room) {
        self.room = room;
    }

    /// Whether parsing stopped because the room ran out, with input left: call
    /// [`Connection::receive_buffered`] once there is room again, or once the connection is
    /// closing (what a closing connection receives is not delivered, so it needs no room).
    #[must_use]
    pub fn is_held_back(&self) -> bool {
        self.held_back && !self.inbuf.is_empty() && self.is_reading()
    }

    /// Whether permessage-deflate is in use on this connection (RFC 7692).
    #[must_use]
    pub fn is_deflate(&self) -> bool {
        self.deflate.is_some()
    }

    /// Feeds bytes received from the peer, taking them out of `input`.
    ///
    /// Complete frames are parsed in place; their payloads are split off `input` without a
    /// copy. An unfinished frame at the end is moved into the connection's own buffer.
    ///
    /// # Errors
    /// The [`ProtocolError`] the peer committed. The connection has already queued a close
    /// frame with the error's close code and moved to `Closed`, or holds the failure (see
    /// [`Connection::hold_failures`]).
    pub fn receive_data(&mut self, input: &mut BytesMut) -> Result<(), ProtocolError> {
        if !self.is_reading() {
            input.clear();
            return Ok(());
        }
        let result = if self.inbuf.is_empty() {
            let r = self.process(input);
            if !input.is_empty() && self.state != State::Closed {
                // Room for the rest of the frame, but never more than a bounded amount up front:
                // a header alone must not make the server reserve 16 MiB.
                let reserve =
                    self.pending.map_or(0, |p| p.len.saturating_sub(input.len())).min(MAX_RESERVE);
                self.inbuf.reserve(input.len() + reserve);
                self.inbuf.extend_from_slice(input);
            }
            input.clear();
            r
        } else {
            self.inbuf.extend_from_slice(input);
            input.clear();
            let mut buf = std::mem::take(&mut self.inbuf);
            let r = self.process(&mut buf);
            if self.state != State::Closed {
                self.inbuf = buf;
            }
            r
        };
        result.map_err(|e| self.violated(e))
    }

    /// The connection's own buffer, when it holds an unfinished frame: reading straight into it
    /// saves a copy of large payloads. `None` means any buffer will do.
    pub fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        if self.inbuf.is_empty() || !self.is_reading() {
            None
        } else {
            Some(&mut self.inbuf)
        }
    }

    /// Bytes of the frame being received that have not arrived yet: nothing can be parsed
    /// before they have (a control frame cannot come in the middle of a frame's payload,
    /// RFC 6455 §5.4). 0 between frames, and when nothing more is read.
    #[must_use]
    pub fn awaited_bytes(&self) -> usize {
        match self.pending {
            Some(p) if self.is_reading() => p.len.saturating_sub(self.inbuf.len()),
            _ => 0,
        }
    }

    /// Processes whatever has been read into [`Connection::read_buffer`].
    ///
    /// # Errors
    /// As [`Connection::receive_data`].
    pub fn receive_buffered(&mut self) -> Result<(), ProtocolError> {
        let mut buf = std::mem::take(&mut self.inbuf);
        let r = self.process(&mut buf);
        if self.state != State::Closed {
            self.inbuf = buf;
        }
        r.map_err(|e| self.violated(e))
    }

    /// Feeds the end of the peer's stream.
    pub fn receive_eof(&mut self) {
        if self.state != State::Closed {
            self.close_transport(close_code::ABNORMAL, String::new());
        }
    }

    /// Takes the next event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The bytes waiting to be written to the peer.
    pub fn out_queue(&mut self) -> &mut OutQueue {
        &mut self.out
    }

    /// Number of bytes waiting to be written.
    #[must_use]
    pub fn out_len(&self) -> usize {
        self.out.len()
    }

    /// Whether bytes are waiting to be written.
    #[must_use]
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether the transport should be closed once the out queue is empty.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether a message may still be sent.
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open | State::Failing(_))
    }

    /// Whether a protocol error is held (see [`Connection::hold_failures`]): nothing more is
    /// read, and the close frame waits for [`Connection::complete_failure`].
    #[must_use]
    pub fn is_failing(&self) -> bool {
        matches!(self.state, State::Failing(_))
    }

    /// Completes a held failure: queues the close frame with the violation's code and closes.
    /// Does nothing unless [`Connection::is_failing`].
    pub fn complete_failure(&mut self) {
        if let State::Failing(code) = self.state {
            self.push_close(code, "");
            self.close_transport(code, String::new());
        }
    }

    /// Whether input is still parsed (not after the close, nor while a failure is held).
    fn is_reading(&self) -> bool {
        matches!(self.state, State::Open | State::Closing)
    }

    /// Queues a data message. `accounted` bytes are reported back when it has been written.
    ///
    /// With permessage-deflate the payload is compressed into a new buffer and sent in one
    /// frame with RSV1 set (RFC 7692 §6.1); otherwise it is queued as is, without a copy.
    ///
    /// # Errors
    /// [`InvalidState::Closed`] once the close handshake has started.
    pub fn send_message(
        &mut self,
        text: bool,
        payload: Bytes,
        accounted: usize,
    ) -> Result<(), InvalidState> {
        if !self.is_open() {
            return Err(InvalidState::Closed);
        }
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        match self.deflate.as_mut() {
            None => self.push_frame(opcode, payload, accounted),
            Some(deflate) => {
                let compressed = deflate.compress(&payload);
                self.push_frame_rsv(opcode, RSV1, compressed, accounted);
            }
        }
        Ok(())
    }

    /// Queues a ping.
    ///
    /// # Errors
    /// [`InvalidState::PingTooLong`] over 125 bytes (RFC 6455 §5.5), [`InvalidState::Closed`]
    /// once the close handshake has started.
    pub fn send_ping(&mut self, payload: Bytes) -> Result<(), InvalidState> {
        if payload.len() > 125 {
            return Err(InvalidState::PingTooLong(payload.len()));
        }
        if self.state != State::Open {
            return Err(InvalidState::Closed);
        }
        self.push_frame(OpCode::Ping, payload, 0);
        Ok(())
    }

    /// Starts the closing handshake. A second call is a no-op. While a failure is held, it is
    /// completed instead, with the violation's code (the peer must learn what it broke).
    ///
    /// # Errors
    /// [`InvalidState::UnsendableCloseCode`] or [`InvalidState::CloseReasonTooLong`] for a close
    /// frame that may not be sent; nothing is queued then.
    pub fn send_close(&mut self, code: u16, reason: &str) -> Result<(), InvalidState> {
        check_close(code, reason)?;
        match self.state {
            State::Open => {
                self.push_close(code, reason);
                self.state = State::Closing;
            }
            State::Failing(_) => self.complete_failure(),
            State::Closing | State::Closed => {}
        }
        Ok(())
    }

    /// Advances timers to `now` and returns the next instant at which to call again.
    pub fn on_tick(&mut self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Open => {
                if let Some(deadline) = self.pong_deadline {
                    if now >= deadline {
                        self.fail(ProtocolError::KeepaliveTimeout);
                        return None;
                    }
                }
                if let Some(interval) = self.config.ping_interval {
                    match self.next_ping {
                        None => self.next_ping = Some(now + interval),
                        Some(at) if now >= at => {
                            self.next_ping = Some(now + interval);
                            if self.pong_deadline.is_none() {
                                self.pings_sent += 1;
                                let payload = self.pings_sent.to_be_bytes();
                                self.ping_payload = Some(payload);
                                self.push_frame(OpCode::Ping, Bytes::copy_from_slice(&payload), 0);
                                self.pong_deadline = self.config.ping_timeout.map(|t| now + t);
                            }
                        }
                        Some(_) => {}
                    }
                }
                [self.next_ping, self.pong_deadline].into_iter().flatten().min()
            }
            State::Closing | State::Failing(_) => {
                let deadline = *self.close_deadline.get_or_insert(now + self.config.close_timeout);
                if now >= deadline {
                    if self.is_failing() {
                        // The application did not answer in time: fail without it.
                        self.complete_failure();
                    } else {
                        self.close_transport(close_code::ABNORMAL, String::new());
                    }
                    return None;
                }
                Some(deadline)
            }
            State::Closed => None,
        }
    }

    /// The peer broke the protocol: fails the connection, or holds the failure if asked to
    /// (see "Held failures" above).
    fn violated(&mut self, err: ProtocolError) -> ProtocolError {
        if self.hold_failures && self.state == State::Open {
            self.state = State::Failing(err.close_code());
            // Nothing more is parsed; the time to answer starts at the next tick.
            self.inbuf = BytesMut::new();
            self.pending = None;
            self.incoming = None;
            return err;
        }
        self.fail(err)
    }

    /// Fails the connection (RFC 6455 §7.1.7): sends a close frame with the error's code if
    /// none was sent yet, and closes.
    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        let code = err.close_code();
        if self.state == State::Open {
            self.push_close(code, "");
        }
        self.close_transport(code, String::new());
        err
    }

    fn close_transport(&mut self, code: u16, reason: String) {
        self.state = State::Closed;
        self.inbuf = BytesMut::new();
        self.pending = None;
        self.incoming = None;
        self.deflate = None;
        self.events.push_back(Event::Closed { code, reason });
    }

    fn push_frame(&mut self, opcode: OpCode, payload: Bytes, accounted: usize) {
        self.push_frame_rsv(opcode, 0, payload, accounted);
    }

    fn push_frame_rsv(&mut self, opcode: OpCode, rsv: u8, payload: Bytes, accounted: usize) {
        let header =
            FrameHeader { fin: true, rsv, opcode, mask: None, payload_len: payload.len() as u64 };
        self.record(true, &header);
        self.out.push_frame(HeaderBytes::new(&header), payload, accounted);
    }

    /// Records a frame's summary, when traced.
    fn record(&mut self, sent: bool, h: &FrameHeader) {
        if let Some(frames) = &mut self.frames {
            let (opcode, len, fin, rsv) = (h.opcode, h.payload_len, h.fin, h.rsv);
            frames.push(FrameSummary { sent, opcode, len, fin, rsv });
        }
    }

    fn push_close(&mut self, code: u16, reason: &str) {
        let payload = if code == close_code::NO_STATUS {
            Bytes::new()
        } else {
            let mut p = Vec::with_capacity(2 + reason.len());
            p.extend_from_slice(&code.to_be_bytes());
            p.extend_from_slice(reason.as_bytes());
            Bytes::from(p)
        };
        self.push_frame(OpCode::Close, payload, 0);
    }

    /// Parses as many frames from the front of `buf` as it holds.
    fn process(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        self.held_back = false;
        while self.state != State::Closed {
            if self.state == State::Open && self.room.is_used_up() {
                // The application has what it can hold: the rest waits in the buffer.
                self.held_back = true;
                return Ok(());
            }
            let mut p = if let Some(p) = self.pending {
                p
            } else {
                let Some((header, n)) = decode_header(buf)? else { return Ok(()) };
                self.record(false, &header);
                let (mask, len) = self.check_header(&header)?;
                buf.advance(n);
                Pending { header, mask, len, done: 0 }
            };
            let avail = buf.len().min(p.len);
            if avail > p.done {
                let fresh = &mut buf[p.done..avail];
                apply_mask(fresh, p.mask, p.done);
                if !p.header.opcode.is_control() {
                    // RFC 7692 §6.2: compressed text is validated once inflated, not here.
                    if let Some(msg) = self.incoming.as_mut().filter(|m| m.text && !m.compressed) {
                        msg.utf8.feed(fresh).map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                }
                p.done = avail;
            }
            if buf.len() < p.len {
                self.pending = Some(p);
                return Ok(());
            }
            self.pending = None;
            let payload = buf.split_to(p.len).freeze();
            self.on_frame(&p.header, payload)?;
        }
        buf.clear();
        Ok(())
    }

    /// Checks a header against RFC 6455 and the limits; returns its mask and length.
    fn check_header(&mut self, h: &FrameHeader) -> Result<([u8; 4], usize), ProtocolError> {
        // RFC 7692 §6: with permessage-deflate, RSV1 marks the first frame of a compressed data
        // message; on a continuation or control frame it is still an error (RFC 7692 §6).
        let compressed = h.rsv == RSV1
            && self.deflate.is_some()
            && matches!(h.opcode, OpCode::Text | OpCode::Binary);
        if h.rsv != 0 && !compressed {
            return Err(ProtocolError::ReservedBitsSet(h.rsv));
        }
        let mask = h.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        match h.opcode {
            OpCode::Reserved(op) => return Err(ProtocolError::ReservedOpcode(op)),
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if !h.fin {
                    return Err(ProtocolError::FragmentedControlFrame);
                }
                if h.payload_len > 125 {
                    return Err(ProtocolError::ControlFrameTooLong(h.payload_len));
                }
                return Ok((mask, h.payload_len as usize));
            }
            OpCode::Continuation if self.incoming.is_none() => {
                return Err(ProtocolError::UnexpectedContinuation);
            }
            OpCode::Text | OpCode::Binary if self.incoming.is_some() => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {}
        }
        let max = self.config.max_message_size;
        let so_far = self.incoming.as_ref().map_or(0, |m| m.size);
        let size = (so_far as u64).saturating_add(h.payload_len);
        let wire_max = if compressed || self.incoming.as_ref().is_some_and(|m| m.compressed) {
            // Incompressible data grows a little when deflated: allow for stored-block headers
            // (5 bytes per 64 KiB); the inflated size is checked against `max` itself.
            (max as u64).saturating_add(max as u64 / 8192 + 64)
        } else {
            max as u64
        };
        if size > wire_max {
            return Err(ProtocolError::MessageTooBig { size, max: max as u64 });
        }
        match &mut self.incoming {
            Some(m) => m.size = size as usize,
            None => {
                self.incoming = Some(Incoming {
                    text: h.opcode == OpCode::Text,
                    compressed,
                    size: size as usize,
                    fragments: BytesMut::new(),
                    utf8: Utf8Validator::new(),
                });
            }
        }
        Ok((mask, h.payload_len as usize))
    }

    fn on_frame(&mut self, h: &FrameHeader, payload: Bytes) -> Result<(), ProtocolError> {
        match h.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if self.state != State::Open {
                    // RFC 6455 §5.5.1: after sending a close frame, data is discarded.
                    if h.fin {
                        self.incoming = None;
                    }
                    return Ok(());
                }
                let msg = self.incoming.as_mut().expect("checked in check_header");
                if !h.fin {
                    if msg.fragments.is_empty() {
                        msg.fragments.reserve(msg.size.max(payload.len()));
                    }
                    msg.fragments.extend_from_slice(&payload);
                    return Ok(());
                }
                let msg = self.incoming.take().expect("checked in check_header");
                if msg.text && !msg.compressed && msg.utf8.finish().is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                let mut data = if msg.fragments.is_empty() {
                    payload
                } else {
                    let mut all = msg.fragments;
                    all.extend_from_slice(&payload);
                    all.freeze()
                };
                if msg.compressed {
                    let deflate = self.deflate.as_mut().expect("RSV1 accepted only with deflate");
                    data = deflate.decompress(&data, self.config.max_message_size)?;
                    // RFC 7692 §6.2 / RFC 6455 §8.1: the inflated text must be UTF-8.
                    if msg.text && std::str::from_utf8(&data).is_err() {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                }
                self.room.take(data.len());
                let message = if msg.text { Message::Text(data) } else { Message::Binary(data) };
                self.events.push_back(Event::Message(message));
            }
            OpCode::Ping => {
                if self.state == State::Open {
                    self.push_frame(OpCode::Pong, payload.clone(), 0);
                }
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => {
                if self.ping_payload.is_some_and(|p| payload == p[..]) {
                    self.ping_payload = None;
                    self.pong_deadline = None;
                }
                self.events.push_back(Event::Pong(payload));
            }
            OpCode::Close => {
                let (code, reason) = parse_close(&payload)?;
                if self.state == State::Open {
                    // RFC 6455 §5.5.1: echo the status code.
                    self.push_close(code, "");
                }
                self.close_transport(code, reason);
            }
            OpCode::Reserved(_) => unreachable!("rejected in check_header"),
        }
        Ok(())
    }
}

/// The RSV1 bit of a frame header's `rsv` field (RFC 6455 §5.2; "Per-Message Compressed",
/// RFC 7692 §6).
const RSV1: u8 = 0b100;

/// Parses a close frame payload (RFC 6455 §5.5.1): empty means 1005.
fn parse_close(payload: &[u8]) -> Result<(u16, String), ProtocolError> {
    match payload {
        [] => Ok((close_code::NO_STATUS, String::new())),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok((code, reason.to_owned()))
        }
    }
}

/// Checks a close frame this side wants to send.
///
/// # Errors
/// If the code may not be sent or the reason does not fit in a control frame.
pub fn check_close(code: u16, reason: &str) -> Result<(), InvalidState> {
    if !is_valid_close_code(code) {
        return Err(InvalidState::UnsendableCloseCode(code));
    }
    if reason.len() > 123 {
        return Err(InvalidState::CloseReasonTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::{Deflate, DeflateParams};
    use crate::frame::apply_mask_bytes;
    use std::io::IoSlice;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            fin,
            rsv,
            opcode: OpCode::from(opcode),
            mask: Some(KEY),
            payload_len: payload.len() as u64,
        };
        let mut out = HeaderBytes::new(&h).as_slice().to_vec();
        let mut p = payload.to_vec();
        apply_mask_bytes(&mut p, KEY, 0);
        out.extend_from_slice(&p);
        out
    }

    fn conn() -> Connection {
        Connection::new(ProtocolConfig { ping_interval: None, ..ProtocolConfig::default() })
    }

    /// A connection that takes messages of at most `max` bytes.
    fn limited(max: usize) -> Connection {
        Connection::new(ProtocolConfig {
            max_message_size: max,
            ping_interval: None,
            ..ProtocolConfig::default()
        })
    }

    fn feed(c: &mut Connection, bytes: &[u8]) -> Result<(), ProtocolError> {
        c.receive_data(&mut BytesMut::from(bytes))
    }

    fn events(c: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| c.next_event()).collect()
    }

    fn written(c: &mut Connection) -> Vec<u8> {
        let q = c.out_queue();
        let mut slices = [IoSlice::new(&[]); 64];
        let n = q.io_slices(&mut slices);
        let out: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        q.advance(out.len());
        out
    }

    fn text(s: &str) -> Event {
        Event::Message(Message::Text(Bytes::copy_from_slice(s.as_bytes())))
    }

    fn closed(code: u16) -> Event {
        Event::Closed { code, reason: String::new() }
    }

    #[test]
    fn single_frame_messages() {
        let mut c = conn();
        let mut input = frame(true, 0, 1, b"Hello");
        input.extend(frame(true, 0, 2, &[0, 1, 2]));
        input.extend(frame(true, 0, 2, b""));
        feed(&mut c, &input).unwrap();
        assert_eq!(
            events(&mut c),
            [
                text("Hello"),
                Event::Message(Message::Binary(Bytes::from_static(&[0, 1, 2]))),
                Event::Message(Message::Binary(Bytes::new())),
            ]
        );
        assert!(written(&mut c).is_empty());
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let mut input = frame(false, 0, 1, "κό".as_bytes());
        input.extend(frame(true, 0, 9, b"ping"));
        input.extend(frame(true, 0, 0, "σμε".as_bytes()));
        input.extend(frame(true, 0, 2, &[7; 300]));
        input.extend(frame(true, 0, 2, &vec![9; 70_000]));
        let mut whole = conn();
        feed(&mut whole, &input).unwrap();
        let expected = events(&mut whole);
        assert_eq!(expected.len(), 4);
        assert_eq!(expected[1], text("κόσμε"));
        for step in [1, 2, 3, 7, 13, 1000] {
            let mut c = conn();
            for chunk in input.chunks(step) {
                feed(&mut c, chunk).unwrap();
            }
            assert_eq!(events(&mut c), expected, "step {step}");
        }
        // Reading straight into the connection's buffer gives the same result.
        let mut c = conn();
        feed(&mut c, &input[..400]).unwrap();
        let mut rest = &input[400..];
        while !rest.is_empty() {
            let n = rest.len().min(4096);
            match c.read_buffer() {
                Some(buf) => {
                    buf.extend_from_slice(&rest[..n]);
                    c.receive_buffered().unwrap();
                }
                None => feed(&mut c, &rest[..n]).unwrap(),
            }
            rest = &rest[n..];
        }
        assert_eq!(events(&mut c), expected);
    }

    #[test]
    fn ping_is_answered_and_pong_matches_keepalive() {
        let mut c = Connection::new(ProtocolConfig {
            ping_interval: Some(Duration::from_secs(5)),
            ping_timeout: Some(Duration::from_secs(2)),
            ..ProtocolConfig::default()
        });
        feed(&mut c, &frame(true, 0, 9, b"abc")).unwrap();
        assert_eq!(events(&mut c), [Event::Ping(Bytes::from_static(b"abc"))]);
        assert_eq!(written(&mut c), [0x8a, 3, b'a', b'b', b'c']);

        let t0 = Instant::now();
        assert_eq!(c.on_tick(t0), Some(t0 + Duration::from_secs(5)));
        assert!(written(&mut c).is_empty());
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(c.on_tick(t1), Some(t1 + Duration::from_secs(2)));
        let ping = written(&mut c);
        assert_eq!(&ping[..2], [0x89, 8]);
        // A pong with another payload does not count.
        feed(&mut c, &frame(true, 0, 10, b"other")).unwrap();
        feed(&mut c, &frame(true, 0, 10, &ping[2..])).unwrap();
        assert_eq!(c.on_tick(t1 + Duration::from_secs(3)), Some(t1 + Duration::from_secs(5)));
        assert!(c.is_open());
    }

    #[test]
    fn keepalive_timeout_closes_with_1011() {
        let mut c = Connection::new(ProtocolConfig {
            ping_interval: Some(Duration::from_secs(1)),
            ping_timeout: Some(Duration::from_secs(1)),
            ..ProtocolConfig::default()
        });
        let t0 = Instant::now();
        c.on_tick(t0);
        c.on_tick(t0 + Duration::from_secs(1));
        assert_eq!(c.on_tick(t0 + Duration::from_secs(2)), None);
        assert!(c.is_closed());
        let out = written(&mut c);
        assert_eq!(&out[out.len() - 4..], [0x88, 2, 0x03, 0xf3]);
        assert_eq!(events(&mut c).last(), Some(&closed(1011)));
    }

    #[test]
    fn peer_close_is_echoed() {
        let mut c = conn();
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ✓".as_bytes());
        feed(&mut c, &frame(true, 0, 8, &payload)).unwrap();
        assert_eq!(events(&mut c), [Event::Closed { code: 4001, reason: "bye ✓".into() }]);
        assert_eq!(written(&mut c), [0x88, 2, 0x0f, 0xa1]);
        assert!(c.is_closed());
        // Nothing is read after the close.
        feed(&mut c, &frame(true, 0, 1, b"late")).unwrap();
        assert!(events(&mut c).is_empty());
        assert_eq!(c.send_message(true, Bytes::new(), 0), Err(InvalidState::Closed));
    }

    #[test]
    fn empty_close_is_1005_and_echoed_empty() {
        let mut c = conn();
        feed(&mut c, &frame(true, 0, 8, b"")).unwrap();
        assert_eq!(events(&mut c), [closed(1005)]);
        assert_eq!(written(&mut c), [0x88, 0]);
    }

    #[test]
    fn local_close_handshake() {
        let mut c = conn();
        c.send_close(1000, "done").unwrap();
        c.send_close(1001, "ignored").unwrap();
        assert_eq!(written(&mut c), [0x88, 6, 0x03, 0xe8, b'd', b'o', b'n', b'e']);
        assert_eq!(c.send_message(false, Bytes::new(), 0), Err(InvalidState::Closed));
        // Data after our close is discarded; the peer's close completes the handshake.
        feed(&mut c, &frame(true, 0, 1, b"late")).unwrap();
        assert!(events(&mut c).is_empty());
        feed(&mut c, &frame(true, 0, 8, &[0x03, 0xe8])).unwrap();
        assert_eq!(events(&mut c), [closed(1000)]);
        assert!(written(&mut c).is_empty(), "no second close frame");
        assert!(c.is_closed());
    }

    #[test]
    fn close_timeout() {
        let mut c = conn();
        c.send_close(1000, "").unwrap();
        let t0 = Instant::now();
        assert_eq!(c.on_tick(t0), Some(t0 + Duration::from_secs(10)));
        assert_eq!(c.on_tick(t0 + Duration::from_secs(10)), None);
        assert_eq!(events(&mut c), [closed(1006)]);
    }

    #[test]
    fn eof_is_1006() {
        let mut c = conn();
        feed(&mut c, &frame(true, 0, 1, b"hi")[..3]).unwrap();
        c.receive_eof();
        assert_eq!(events(&mut c), [closed(1006)]);
        assert!(c.is_closed());
        c.receive_eof();
        assert!(events(&mut c).is_empty());
    }

    #[test]
    fn send_close_validation() {
        let mut c = conn();
        assert_eq!(c.send_close(1005, ""), Err(InvalidState::UnsendableCloseCode(1005)));
        assert_eq!(c.send_close(1000, &"x".repeat(124)), Err(InvalidState::CloseReasonTooLong));
        assert!(c.is_open());
    }

    fn assert_fails(input: &[u8], err: &ProtocolError) {
        assert_fails_on(conn, input, err);
    }

    fn assert_fails_on(make: fn() -> Connection, input: &[u8], err: &ProtocolError) {
        // Whole and byte by byte.
        for step in [input.len().max(1), 1] {
            let mut c = make();
            let mut result = Ok(());
            for chunk in input.chunks(step) {
                result = feed(&mut c, chunk);
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result.as_ref(), Err(err), "step {step}");
            assert!(c.is_closed());
            let code = err.close_code();
            let out = written(&mut c);
            assert_eq!(&out[out.len() - 4..], [0x88, 2, (code >> 8) as u8, code as u8]);
            assert_eq!(events(&mut c).last(), Some(&closed(code)));
        }
    }

    #[test]
    fn every_protocol_error() {
        assert_fails(&frame(true, 0b100, 1, b"x"), &ProtocolError::ReservedBitsSet(0b100));
        assert_fails(&frame(true, 0, 3, b""), &ProtocolError::ReservedOpcode(3));
        assert_fails(&frame(true, 0, 0xB, b""), &ProtocolError::ReservedOpcode(0xB));
        assert_fails(&[0x81, 0x00], &ProtocolError::UnmaskedFrame);
        assert_fails(&frame(false, 0, 9, b""), &ProtocolError::FragmentedControlFrame);
        assert_fails(&frame(true, 0, 9, &[0; 126]), &ProtocolError::ControlFrameTooLong(126));
        assert_fails(&frame(true, 0, 0, b"x"), &ProtocolError::UnexpectedContinuation);
        let mut two_starts = frame(false, 0, 1, b"a");
        two_starts.extend(frame(true, 0, 1, b"b"));
        assert_fails(&two_starts, &ProtocolError::ExpectedContinuation);
        assert_fails(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], &ProtocolError::InvalidLength);
        assert_fails(&frame(true, 0, 1, &[0xce, 0xba, 0xff]), &ProtocolError::InvalidUtf8);
        assert_fails(&frame(true, 0, 1, &[0xce]), &ProtocolError::InvalidUtf8);
        assert_fails(&frame(true, 0, 8, &[3]), &ProtocolError::InvalidClosePayload);
        assert_fails(&frame(true, 0, 8, &[0x03, 0xed]), &ProtocolError::InvalidCloseCode(1005));
        assert_fails(&frame(true, 0, 8, &[0x03, 0xe8, 0xff]), &ProtocolError::InvalidCloseReason);
    }

    #[test]
    fn held_failure_lets_replies_out_before_the_close() {
        let mut c = conn();
        c.hold_failures();
        // A valid message, a reserved opcode, and a message after it, in one read.
        let mut input = frame(true, 0, 1, b"Hello");
        input.extend(frame(true, 0, 3, b""));
        input.extend(frame(true, 0, 1, b"late"));
        assert_eq!(feed(&mut c, &input), Err(ProtocolError::ReservedOpcode(3)));
        // What came before the violation is delivered, nothing after it; no close yet.
        assert_eq!(events(&mut c), [text("Hello")]);
        assert!(c.is_failing() && c.is_open() && !c.is_closed());
        assert!(written(&mut c).is_empty());
        // Nothing more is read.
        feed(&mut c, &frame(true, 0, 1, b"later")).unwrap();
        assert!(c.read_buffer().is_none());
        assert!(events(&mut c).is_empty());
        // The reply goes out, then the close frame with the violation's code.
        c.send_message(true, Bytes::from_static(b"Hello"), 5).unwrap();
        c.complete_failure();
        assert_eq!(written(&mut c), [0x81, 5, b'H', b'e', b'l', b'l', b'o', 0x88, 2, 0x03, 0xea]);
        assert_eq!(events(&mut c), [closed(1002)]);
        assert!(c.is_closed() && !c.is_failing());
        c.complete_failure();
        assert!(written(&mut c).is_empty());
        assert_eq!(c.send_message(true, Bytes::new(), 0), Err(InvalidState::Closed));
    }

    #[test]
    fn held_failure_from_the_read_buffer() {
        let mut c = conn();
        c.hold_failures();
        let mut input = frame(true, 0, 2, &[1; 300]);
        input.extend(frame(true, 0, 0, b"x"));
        feed(&mut c, &input[..100]).unwrap();
        c.read_buffer().unwrap().extend_from_slice(&input[100..]);
        assert_eq!(c.receive_buffered(), Err(ProtocolError::UnexpectedContinuation));
        assert_eq!(events(&mut c), [Event::Message(Message::Binary(Bytes::from(vec![1; 300])))]);
        assert!(c.is_failing() && c.read_buffer().is_none());
    }

    #[test]
    fn held_failure_completes_on_close_or_after_close_timeout() {
        // The application closes: the violation's code wins.
        let mut c = conn();
        c.hold_failures();
        assert_eq!(
            feed(&mut c, &frame(true, 0b010, 1, b"x")),
            Err(ProtocolError::ReservedBitsSet(2))
        );
        c.send_close(1000, "bye").unwrap();
        assert_eq!(written(&mut c), [0x88, 2, 0x03, 0xea]);
        assert_eq!(events(&mut c), [closed(1002)]);
        // The application never answers: the failure completes after close_timeout.
        let mut c = conn();
        c.hold_failures();
        assert_eq!(
            feed(&mut c, &frame(true, 0, 1, &[0xce, 0xff])),
            Err(ProtocolError::InvalidUtf8)
        );
        let t0 = Instant::now();
        assert_eq!(c.on_tick(t0), Some(t0 + Duration::from_secs(10)));
        assert!(written(&mut c).is_empty());
        assert!(events(&mut c).is_empty());
        assert_eq!(c.on_tick(t0 + Duration::from_secs(10)), None);
        assert_eq!(written(&mut c), [0x88, 2, 0x03, 0xef]);
        assert_eq!(events(&mut c), [closed(1007)]);
        // After our own close frame, a violation fails at once: there is nothing to answer.
        let mut c = conn();
        c.hold_failures();
        c.send_close(1000, "").unwrap();
        written(&mut c);
        assert_eq!(feed(&mut c, &frame(true, 0, 3, b"")), Err(ProtocolError::ReservedOpcode(3)));
        assert!(c.is_closed());
        assert_eq!(events(&mut c), [closed(1002)]);
    }

    /// The header length of a masked client frame with a payload of `len` bytes.
    fn header_len(len: usize) -> usize {
        frame(true, 0, 2, &vec![0; len]).len() - len
    }

    #[test]
    fn awaited_bytes_is_the_rest_of_the_frame_at_every_split() {
        // A fragmented binary message (70,000 + 1,000 bytes) with a ping between the
        // fragments, then a text frame: fed one split at a time, byte by byte.
        let mut input = frame(false, 0, 2, &vec![1; 70_000]);
        let first = input.len();
        input.extend(frame(true, 0, 9, b"p"));
        let ping_end = input.len();
        input.extend(frame(true, 0, 0, &[2; 1000]));
        let second = input.len();
        input.extend(frame(true, 0, 1, b"done"));
        let frames = [
            (0, first, 70_000),
            (first, ping_end, 1),
            (ping_end, second, 1000),
            (second, input.len(), 4),
        ];
        for split in 0..=input.len() {
            let mut c = conn();
            feed(&mut c, &input[..split]).unwrap();
            let (start, end, len) =
                frames.into_iter().find(|&(_, end, _)| split < end).unwrap_or((split, split, 0));
            let header_done = split >= start + header_len(len);
            let expected = if header_done { end - split } else { 0 };
            assert_eq!(c.awaited_bytes(), expected, "split at {split}");
            feed(&mut c, &input[split..]).unwrap();
            assert_eq!(c.awaited_bytes(), 0, "split at {split}: all of it fed");
            assert_eq!(events(&mut c).len(), 3, "split at {split}");
        }
    }

    #[test]
    fn awaited_bytes_is_zero_once_nothing_more_is_read() {
        // Oversize: the header fails the connection (1009), nothing of the payload is awaited.
        let mut c = limited(100);
        let big = frame(true, 0, 2, &[0; 101]);
        assert!(feed(&mut c, &big[..50]).is_err());
        assert_eq!(c.awaited_bytes(), 0);
        // A held failure reads nothing more.
        let mut c = conn();
        c.hold_failures();
        let mut input = frame(true, 0, 2, &[0; 1000]);
        input[1] &= 0x7f; // unmasked: 1002
        assert!(feed(&mut c, &input[..10]).is_err());
        assert!(c.is_failing());
        assert_eq!(c.awaited_bytes(), 0);
        // Closing (our close frame sent): the peer's frames are still read, and awaited.
        let mut c = conn();
        c.send_close(1000, "").unwrap();
        let data = frame(true, 0, 2, &[0; 1000]);
        feed(&mut c, &data[..100]).unwrap();
        assert_eq!(c.awaited_bytes(), data.len() - 100);
    }

    #[test]
    fn message_too_big_before_buffering() {
        let mut c = limited(100);
        // The header alone is enough to fail: nothing of the payload is awaited.
        let head = &frame(true, 0, 2, &[0; 101])[..8];
        assert_eq!(feed(&mut c, head), Err(ProtocolError::MessageTooBig { size: 101, max: 100 }));
        // Across fragments too.
        let mut c = limited(100);
        let mut input = frame(false, 0, 2, &[0; 60]);
        input.extend(frame(true, 0, 0, &[0; 41]));
        assert_eq!(feed(&mut c, &input), Err(ProtocolError::MessageTooBig { size: 101, max: 100 }));
        assert_eq!(events(&mut c), [closed(1009)]);
    }

    #[test]
    fn invalid_utf8_fails_fast_mid_frame() {
        // Autobahn 6.4.3: the bad byte arrives, the rest of the frame has not.
        let mut c = conn();
        let input =
            frame(true, 0, 1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80hello");
        let bad = input.iter().position(|_| false).unwrap_or(2 + 4 + 13);
        assert_eq!(feed(&mut c, &input[..bad]), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn text_split_code_points_across_fragments() {
        let s = "€𝄞€";
        let bytes = s.as_bytes();
        for cut in 0..=bytes.len() {
            let mut c = conn();
            let mut input = frame(false, 0, 1, &bytes[..cut]);
            input.extend(frame(true, 0, 0, &bytes[cut..]));
            feed(&mut c, &input).unwrap();
            assert_eq!(events(&mut c), [text(s)], "cut {cut}");
        }
    }

    #[test]
    fn single_frame_payload_shares_the_input_buffer() {
        let mut c = conn();
        let mut input = BytesMut::from(&frame(true, 0, 2, &[5; 1000])[..]);
        let base = input.as_ptr() as usize;
        c.receive_data(&mut input).unwrap();
        let Some(Event::Message(Message::Binary(b))) = c.next_event() else { panic!() };
        let offset = b.as_ptr() as usize - base;
        assert_eq!(offset, 8, "payload was not copied out of the read buffer");
    }

    #[test]
    fn sent_frames_are_unmasked_and_minimal() {
        let mut c = conn();
        c.send_message(true, Bytes::from_static(b"hi"), 2).unwrap();
        c.send_message(false, Bytes::from(vec![1; 200]), 200).unwrap();
        let out = written(&mut c);
        assert_eq!(&out[..4], [0x81, 2, b'h', b'i']);
        assert_eq!(&out[4..8], [0x82, 126, 0, 200]);
        assert_eq!(out.len(), 8 + 200);
    }

    fn deflate_conn() -> Connection {
        Connection::with_deflate(
            ProtocolConfig { ping_interval: None, ..ProtocolConfig::default() },
            DeflateParams::default(),
        )
    }

    /// "Hello" compressed (RFC 7692 §7.2.3.1).
    const HELLO_DEFLATED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn deflate_receives_rfc7692_examples() {
        assert!(deflate_conn().is_deflate());
        assert!(!conn().is_deflate());
        // §7.2.3.1: a single compressed frame, then the same split over two fragments with RSV1
        // on the first only; §7.2.3.2: the next message refers back to the previous one.
        let mut input = frame(true, 0b100, 1, &HELLO_DEFLATED);
        input.extend(frame(false, 0b100, 1, &HELLO_DEFLATED[..3]));
        input.extend(frame(true, 0, 0, &HELLO_DEFLATED[3..]));
        input.extend(frame(true, 0b100, 1, &[0xf2, 0x00, 0x11, 0x00, 0x00]));
        // An uncompressed message on the same connection (RSV1 clear).
        input.extend(frame(true, 0, 2, b"raw"));
        // Control frames interleaved with compressed fragments are not compressed.
        input.extend(frame(false, 0b100, 2, &HELLO_DEFLATED[..2]));
        input.extend(frame(true, 0, 9, b"p"));
        input.extend(frame(true, 0, 0, &HELLO_DEFLATED[2..]));
        for step in [input.len(), 1, 5] {
            let mut c = deflate_conn();
            for chunk in input.chunks(step) {
                feed(&mut c, chunk).unwrap();
            }
            assert_eq!(
                events(&mut c),
                [
                    text("Hello"),
                    text("Hello"),
                    text("Hello"),
                    Event::Message(Message::Binary(Bytes::from_static(b"raw"))),
                    Event::Ping(Bytes::from_static(b"p")),
                    Event::Message(Message::Binary(Bytes::from_static(b"Hello"))),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn deflate_sends_compressed_data_and_plain_control_frames() {
        let mut c = deflate_conn();
        c.send_message(true, Bytes::from_static(b"Hello"), 5).unwrap();
        c.send_message(true, Bytes::from_static(b"Hello"), 5).unwrap();
        c.send_message(false, Bytes::new(), 0).unwrap();
        c.send_ping(Bytes::from_static(b"ab")).unwrap();
        feed(&mut c, &frame(true, 0, 9, b"cd")).unwrap();
        c.send_close(1000, "").unwrap();
        let mut expected = vec![0xc1, 7];
        expected.extend(HELLO_DEFLATED);
        expected.extend([0xc1, 5, 0xf2, 0x00, 0x11, 0x00, 0x00]);
        expected.extend([0xc2, 1, 0x00]);
        expected.extend([0x89, 2, b'a', b'b', 0x8a, 2, b'c', b'd', 0x88, 2, 0x03, 0xe8]);
        assert_eq!(written(&mut c), expected);
    }

    #[test]
    fn deflate_large_message_round_trip() {
        let body = "{\"msg\": \"κόσμε\", \"n\": 12345}\n".repeat(50_000);
        let mut tx = Deflate::new(DeflateParams::default());
        let z = tx.compress(body.as_bytes());
        assert!(z.len() < body.len() / 50);
        // Fragmented into 1000-byte frames.
        let chunks: Vec<&[u8]> = z.chunks(1000).collect();
        let mut input = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let (rsv, op) = if i == 0 { (0b100, 1) } else { (0, 0) };
            input.extend(frame(i == chunks.len() - 1, rsv, op, chunk));
        }
        let mut c = deflate_conn();
        feed(&mut c, &input).unwrap();
        assert_eq!(events(&mut c), [text(&body)]);
    }

    #[test]
    fn deflate_rsv1_rules() {
        // RFC 7692 §6: RSV1 only on the first frame of a data message.
        let mut cont = frame(false, 0b100, 1, &HELLO_DEFLATED[..3]);
        cont.extend(frame(true, 0b100, 0, &HELLO_DEFLATED[3..]));
        assert_fails_on(deflate_conn, &cont, &ProtocolError::ReservedBitsSet(0b100));
        let mut cont = frame(false, 0, 1, b"He");
        cont.extend(frame(true, 0b100, 0, b"llo"));
        assert_fails_on(deflate_conn, &cont, &ProtocolError::ReservedBitsSet(0b100));
        // RFC 7692 §6: never on control frames.
        for op in [8, 9, 10] {
            assert_fails_on(
                deflate_conn,
                &frame(true, 0b100, op, b""),
                &ProtocolError::ReservedBitsSet(0b100),
            );
        }
        // RSV2 and RSV3 stay reserved.
        assert_fails_on(
            deflate_conn,
            &frame(true, 0b010, 1, b"x"),
            &ProtocolError::ReservedBitsSet(0b010),
        );
        assert_fails_on(
            deflate_conn,
            &frame(true, 0b110, 1, &HELLO_DEFLATED),
            &ProtocolError::ReservedBitsSet(0b110),
        );
        // Without deflate, RSV1 is a protocol error (1002).
        assert_fails(
            &frame(true, 0b100, 1, &HELLO_DEFLATED),
            &ProtocolError::ReservedBitsSet(0b100),
        );
    }

    #[test]
    fn deflate_errors() {
        // Data that does not inflate: 1007.
        assert_fails_on(
            deflate_conn,
            &frame(true, 0b100, 2, &[0xff, 0xff, 0xff]),
            &ProtocolError::InvalidCompressedData,
        );
        // Inflated text that is not UTF-8: 1007, found only once the message is inflated.
        let mut tx = Deflate::new(DeflateParams::default());
        let bad = tx.compress(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80hello");
        assert_fails_on(deflate_conn, &frame(true, 0b100, 1, &bad), &ProtocolError::InvalidUtf8);
        // The same bytes as binary are fine.
        let mut tx = Deflate::new(DeflateParams::default());
        let ok = tx.compress(b"\xce\xba\xff");
        let mut c = deflate_conn();
        feed(&mut c, &frame(true, 0b100, 2, &ok)).unwrap();
        assert_eq!(
            events(&mut c),
            [Event::Message(Message::Binary(Bytes::from_static(b"\xce\xba\xff")))]
        );
        // A code point split across fragments of compressed text is fine: nothing is checked
        // before the message is inflated.
        let mut tx = Deflate::new(DeflateParams::default());
        let z = tx.compress("€".as_bytes());
        let mut input = frame(false, 0b100, 1, &z[..1]);
        input.extend(frame(true, 0, 0, &z[1..]));
        let mut c = deflate_conn();
        feed(&mut c, &input).unwrap();
        assert_eq!(events(&mut c), [text("€")]);
    }

    #[test]
    fn deflate_bomb_is_1009() {
        fn small() -> Connection {
            Connection::with_deflate(
                ProtocolConfig {
                    max_message_size: 1000,
                    ping_interval: None,
                    ..ProtocolConfig::default()
                },
                DeflateParams::default(),
            )
        }
        let mut tx = Deflate::new(DeflateParams::default());
        let bomb = tx.compress(&vec![b'a'; 256 * 1024]);
        assert!(bomb.len() < 1000);
        assert_fails_on(
            small,
            &frame(true, 0b100, 2, &bomb),
            &ProtocolError::MessageTooBig { size: 1001, max: 1000 },
        );
        // Up to the limit is fine.
        let mut tx = Deflate::new(DeflateParams::default());
        let z = tx.compress(&[b'a'; 1000]);
        let mut c = small();
        feed(&mut c, &frame(true, 0b100, 2, &z)).unwrap();
        assert_eq!(
            events(&mut c),
            [Event::Message(Message::Binary(Bytes::from(vec![b'a'; 1000])))]
        );
        // Incompressible data may be a little larger on the wire than the limit.
        let mut tx = Deflate::new(DeflateParams::default());
        let noise: Vec<u8> =
            (0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let z = tx.compress(&noise);
        let mut c = small();
        feed(&mut c, &frame(true, 0b100, 2, &z)).unwrap();
        assert_eq!(events(&mut c).len(), 1);
    }
}
