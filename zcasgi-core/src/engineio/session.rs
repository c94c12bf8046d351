//! One Engine.IO v4 session, without I/O: its transport, heartbeat, upgrade and out queue.
//!
//! A session outlives the HTTP requests and WebSocket connections that carry it, so it is fed
//! by whoever holds it: the packets a client sent (a long-polling POST's payload, or a
//! WebSocket's frames: [`Session::receive`]), the application's packets ([`Session::send`]),
//! long-polling GETs ([`Session::poll`]) and the clock ([`Session::on_tick`]). It answers with
//! what to deliver to the application, what to write where, and when it closed.
//!
//! The heartbeat is the server's (Engine.IO v4): a ping `ping_interval` after the session opened
//! or after the last pong, and the session closes if no pong comes within `ping_timeout`. No
//! application code runs for it.
//!
//! An upgrade from long-polling to WebSocket: the client opens a WebSocket naming the session
//! and sends `2probe`; the session answers `3probe` on that WebSocket and ends a waiting poll
//! with a noop; the client's `5` (upgrade) on the WebSocket then moves the session there, and
//! whatever was queued for polling is written on the WebSocket instead, in order.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{encode_payload, Data, Packet, PacketType};

/// How a session behaves: the figures its handshake announces, and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time from a pong (or the open) to the next ping.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping.
    pub ping_timeout: Duration,
    /// Added to `ping_interval` in the interval the handshake announces (python-engineio's
    /// grace period: the client waits that much longer for a ping).
    pub ping_grace: Duration,
    /// Most bytes a client may send in one long-polling payload or WebSocket message
    /// (the handshake's `maxPayload`).
    pub max_payload: usize,
    /// Whether a long-polling session may upgrade to WebSocket.
    pub allow_upgrades: bool,
    /// Most bytes of packets queued for a client that does not take them; past it the session
    /// closes ([`CloseReason::Backlog`]).
    pub max_queued_bytes: usize,
}

impl Default for SessionConfig {
    /// python-engineio's defaults: pings every 25 s, 20 s to answer, 1 MB payloads, upgrades;
    /// 16 MiB of backlog.
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            ping_grace: Duration::ZERO,
            max_payload: 1_000_000,
            allow_upgrades: true,
            max_queued_bytes: 16 << 20,
        }
    }
}

/// The transport a session's packets travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling: GETs take the queued packets, POSTs bring the client's.
    Polling,
    /// One WebSocket connection.
    WebSocket,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet.
    ClientClose,
    /// The client did not answer a ping within `ping_timeout`.
    PingTimeout,
    /// The server (the application) closed it.
    ServerClose,
    /// The client let more than `max_queued_bytes` pile up unread.
    Backlog,
    /// The client broke the protocol (see [`SessionError`]).
    ProtocolError,
    /// The WebSocket carrying the session closed.
    TransportClose,
}

/// A request or packet a session cannot take; the client gets a 400 (Engine.IO's code 3,
/// "Bad request") or its WebSocket is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// A second long-polling GET while one is waiting.
    #[error("overlapping poll")]
    OverlappingPoll,
    /// A packet type a client may not send on this transport, or in this state.
    #[error("unexpected {0:?} packet")]
    UnexpectedPacket(PacketType),
    /// An upgrade probe on a session that is not long-polling, or with upgrades off.
    #[error("upgrade not allowed")]
    UpgradeRefused,
}

/// What a packet from the client means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    /// Nothing for anyone (a pong, or a noop).
    Nothing,
    /// A message for the application.
    Message(Data<'a>),
    /// A packet to write back on the WebSocket the packet came on (`3probe`).
    Reply(Packet<'static>),
    /// The session now runs on that WebSocket: write what [`Session::drain`] gives there.
    Upgraded,
    /// The session ended.
    Closed(CloseReason),
}

/// What a long-polling GET gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// This response body, now.
    Ready(String),
    /// Nothing is queued: wait until [`Session::send`] (or a ping) says a poll can be answered,
    /// then call [`Session::take_poll`].
    Wait,
}

/// The upgrade of a long-polling session to WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// The probe was answered on a WebSocket; the client's upgrade packet is awaited there.
    Probed,
}

/// One Engine.IO session (see the module doc).
#[derive(Debug)]
pub struct Session {
    sid: String,
    cfg: SessionConfig,
    transport: Transport,
    upgrade: Upgrade,
    outbox: VecDeque<Packet<'static>>,
    queued_bytes: usize,
    poll_waiting: bool,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    closed: Option<CloseReason>,
}

impl Session {
    /// A session opened on `transport` at `now`; its first packet out is the open packet
    /// ([`Session::open_packet`]), which the caller writes as the handshake's answer.
    ///
    /// # Panics
    /// If `sid` holds a character outside `[A-Za-z0-9_.-]` (the handshake writes it unescaped).
    #[must_use]
    pub fn new(sid: String, cfg: SessionConfig, transport: Transport, now: Instant) -> Self {
        assert!(
            sid.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
            "Engine.IO session id {sid:?} has characters that need escaping"
        );
        Self {
            sid,
            cfg,
            transport,
            upgrade: Upgrade::None,
            outbox: VecDeque::new(),
            queued_bytes: 0,
            poll_waiting: false,
            next_ping: Some(now + cfg.ping_interval),
            pong_deadline: None,
            closed: None,
        }
    }

    /// The session id.
    #[must_use]
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The transport the session runs on now.
    #[must_use]
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Why the session ended, once it has.
    #[must_use]
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// The handshake's open packet: session id, upgrades, ping interval and timeout (ms), and
    /// max payload. The interval announced is `ping_interval + ping_grace` in whole seconds,
    /// as python-engineio announces it.
    #[must_use]
    pub fn open_packet(&self) -> Packet<'static> {
        let upgrades = if self.cfg.allow_upgrades && self.transport == Transport::Polling {
            r#"["websocket"]"#
        } else {
            "[]"
        };
        let mut json = String::with_capacity(128);
        let _ = write!(
            json,
            r#"{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.sid,
            upgrades,
            (self.cfg.ping_interval + self.cfg.ping_grace).as_secs() * 1000,
            self.cfg.ping_timeout.as_millis(),
            self.cfg.max_payload,
        );
        Packet::text(PacketType::Open, json)
    }

    /// Takes a packet the client sent, over `via` (a long-polling POST's payload, or a
    /// WebSocket naming this session).
    ///
    /// # Errors
    /// [`SessionError`] for a packet the client may not send here; the session closes with
    /// [`CloseReason::ProtocolError`] unless it was a failed upgrade probe (the session goes on
    /// over long-polling; the caller closes that WebSocket).
    pub fn receive<'a>(
        &mut self,
        via: Transport,
        packet: Packet<'a>,
        now: Instant,
    ) -> Result<Received<'a>, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::Closed);
        }
        if via == Transport::WebSocket && self.transport == Transport::Polling {
            return self.upgrade_step(&packet);
        }
        match packet.kind {
            PacketType::Message => Ok(Received::Message(packet.data)),
            PacketType::Pong => {
                if self.pong_deadline.take().is_some() {
                    self.next_ping = Some(now + self.cfg.ping_interval);
                }
                Ok(Received::Nothing)
            }
            PacketType::Noop => Ok(Received::Nothing),
            PacketType::Close => {
                self.close(CloseReason::ClientClose);
                Ok(Received::Closed(CloseReason::ClientClose))
            }
            kind @ (PacketType::Open | PacketType::Ping | PacketType::Upgrade) => {
                self.close(CloseReason::ProtocolError);
                Err(SessionError::UnexpectedPacket(kind))
            }
        }
    }

    /// A packet on a WebSocket that probes this long-polling session.
    fn upgrade_step<'a>(&mut self, packet: &Packet<'a>) -> Result<Received<'a>, SessionError> {
        let probe = matches!(&packet.data, Data::Text(t) if t == "probe");
        match (self.upgrade, packet.kind) {
            (Upgrade::None, PacketType::Ping) if probe => {
                if !self.cfg.allow_upgrades {
                    return Err(SessionError::UpgradeRefused);
                }
                self.upgrade = Upgrade::Probed;
                // Ends a waiting poll: the client stops polling once it has upgraded.
                self.push(Packet::text(PacketType::Noop, ""));
                Ok(Received::Reply(Packet::text(PacketType::Pong, "probe")))
            }
            (Upgrade::Probed, PacketType::Upgrade) => {
                self.transport = Transport::WebSocket;
                self.upgrade = Upgrade::None;
                self.poll_waiting = false;
                // The noop was for a poll; the WebSocket needs none.
                self.outbox.retain(|p| p.kind != PacketType::Noop);
                self.recount();
                Ok(Received::Upgraded)
            }
            (_, kind) => {
                self.upgrade = Upgrade::None;
                Err(SessionError::UnexpectedPacket(kind))
            }
        }
    }

    /// Queues a packet for the client (the application's messages, a close).
    ///
    /// Returns true when a waiting long-polling GET can now be answered ([`Session::take_poll`])
    /// or, on a WebSocket, when there is something to [`Session::drain`].
    ///
    /// # Errors
    /// [`SessionError::Closed`] if the session has ended (a backlog past `max_queued_bytes`
    /// ends it, with [`CloseReason::Backlog`]).
    pub fn send(&mut self, packet: Packet<'static>) -> Result<bool, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::Closed);
        }
        self.push(packet);
        if self.queued_bytes > self.cfg.max_queued_bytes {
            self.close(CloseReason::Backlog);
            return Err(SessionError::Closed);
        }
        Ok(self.poll_waiting || self.transport == Transport::WebSocket)
    }

    /// Ends the session from the server's side: a close packet is queued for the client.
    pub fn close_by_server(&mut self) {
        if self.closed.is_none() {
            self.push(Packet::text(PacketType::Close, ""));
            self.close(CloseReason::ServerClose);
        }
    }

    /// The WebSocket carrying the session closed (or failed).
    pub fn transport_closed(&mut self) {
        if self.transport == Transport::WebSocket {
            self.close(CloseReason::TransportClose);
        }
    }

    /// The WebSocket probing an upgrade went away (or failed): the session stays on
    /// long-polling, and a later probe may try again.
    pub fn upgrade_abandoned(&mut self) {
        self.upgrade = Upgrade::None;
    }

    /// The client broke the protocol (an undecodable packet or payload, one over
    /// `max_payload`): the session ends with [`CloseReason::ProtocolError`].
    pub fn protocol_error(&mut self) {
        self.close(CloseReason::ProtocolError);
    }

    /// The connection the session depended on went away (its WebSocket, or its handshake
    /// before the session was accepted): the session ends with [`CloseReason::TransportClose`].
    pub fn transport_lost(&mut self) {
        self.close(CloseReason::TransportClose);
    }

    /// The client let more than `max_queued_bytes` pile up unread where the caller counts them
    /// (on its WebSocket): the session ends with [`CloseReason::Backlog`].
    pub fn overflowed(&mut self) {
        self.close(CloseReason::Backlog);
    }

    /// Whether packets are queued for the client (a closed session's close packet, say).
    #[must_use]
    pub fn has_queued(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// A long-polling GET arrived.
    ///
    /// # Errors
    /// [`SessionError::OverlappingPoll`] while another GET waits (the session closes, as
    /// Engine.IO servers do), [`SessionError::Closed`] once it has ended and its close packet
    /// was taken.
    pub fn poll(&mut self) -> Result<Poll, SessionError> {
        if self.transport == Transport::WebSocket || self.upgrade == Upgrade::Probed {
            // Upgrading or upgraded: polling gets nothing more (python-engineio answers noop).
            return Ok(Poll::Ready(String::from("6")));
        }
        if self.poll_waiting {
            self.close(CloseReason::ProtocolError);
            return Err(SessionError::OverlappingPoll);
        }
        if let Some(body) = self.take_poll() {
            return Ok(Poll::Ready(body));
        }
        if self.closed.is_some() {
            return Err(SessionError::Closed);
        }
        self.poll_waiting = true;
        Ok(Poll::Wait)
    }

    /// The body for the waiting GET, if packets are queued (every one of them, in order).
    pub fn take_poll(&mut self) -> Option<String> {
        if self.outbox.is_empty() {
            return None;
        }
        self.poll_waiting = false;
        let mut body = String::with_capacity(self.queued_bytes + self.outbox.len());
        encode_payload(&self.outbox, &mut body);
        self.outbox.clear();
        self.queued_bytes = 0;
        Some(body)
    }

    /// The waiting GET went away (the client disconnected); a later GET may wait again.
    pub fn poll_abandoned(&mut self) {
        self.poll_waiting = false;
    }

    /// The packets to write on the WebSocket, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Packet<'static>> + '_ {
        self.queued_bytes = 0;
        self.outbox.drain(..)
    }

    /// Advances the heartbeat to `now`: a ping is queued when due (true: a waiting poll or the
    /// WebSocket has something to take), and the session closes with
    /// [`CloseReason::PingTimeout`] when a ping went unanswered.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        if self.closed.is_some() {
            return false;
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            self.close(CloseReason::PingTimeout);
            return false;
        }
        if self.next_ping.is_some_and(|d| now >= d) {
            self.next_ping = None;
            self.pong_deadline = Some(now + self.cfg.ping_timeout);
            self.push(Packet::text(PacketType::Ping, ""));
            return self.poll_waiting || self.transport == Transport::WebSocket;
        }
        false
    }

    /// When [`Session::on_tick`] next has something to do.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        self.pong_deadline.or(self.next_ping)
    }

    fn push(&mut self, packet: Packet<'static>) {
        self.queued_bytes += wire_len(&packet);
        self.outbox.push_back(packet);
    }

    fn recount(&mut self) {
        self.queued_bytes = self.outbox.iter().map(wire_len).sum();
    }

    fn close(&mut self, reason: CloseReason) {
        self.closed.get_or_insert(reason);
        self.next_ping = None;
        self.pong_deadline = None;
    }
}

/// About the bytes a packet takes queued (its data and type).
fn wire_len(packet: &Packet<'_>) -> usize {
    1 + match &packet.data {
        Data::Text(t) => t.len(),
        Data::Binary(b) => b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn cfg() -> SessionConfig {
        SessionConfig {
            ping_interval: 25 * SEC,
            ping_timeout: 20 * SEC,
            ping_grace: Duration::ZERO,
            max_payload: 1000,
            allow_upgrades: true,
            max_queued_bytes: 100,
        }
    }

    fn polling(now: Instant) -> Session {
        Session::new("abc.1".into(), cfg(), Transport::Polling, now)
    }

    fn message(text: &str) -> Packet<'static> {
        Packet::text(PacketType::Message, text.to_owned())
    }

    #[test]
    fn the_open_packet_announces_the_session() {
        let t0 = Instant::now();
        let mut out = String::new();
        polling(t0).open_packet().encode_polling(&mut out);
        assert_eq!(
            out,
            r#"0{"sid":"abc.1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000}"#
        );
        let ws = Session::new("x".into(), cfg(), Transport::WebSocket, t0);
        assert!(matches!(ws.open_packet().data, Data::Text(t) if t.contains(r#""upgrades":[]"#)));
        // As python-engineio: interval plus grace, in whole seconds.
        let graced = SessionConfig { ping_interval: SEC / 2, ping_grace: 2 * SEC, ..cfg() };
        let open = Session::new("x".into(), graced, Transport::WebSocket, t0).open_packet();
        assert!(matches!(open.data, Data::Text(t) if t.contains(r#""pingInterval":2000,"#)));
    }

    #[test]
    #[should_panic(expected = "need escaping")]
    fn a_session_id_needing_escapes_is_refused() {
        let _ = Session::new("a\"b".into(), cfg(), Transport::Polling, Instant::now());
    }

    #[test]
    fn a_poll_waits_until_a_packet_is_sent_then_takes_all_in_order() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        assert_eq!(s.poll(), Ok(Poll::Wait));
        assert_eq!(s.poll(), Err(SessionError::OverlappingPoll));
        assert_eq!(s.closed(), Some(CloseReason::ProtocolError));

        let mut s = polling(t0);
        assert_eq!(s.poll(), Ok(Poll::Wait));
        assert_eq!(s.send(message("a")), Ok(true));
        assert_eq!(s.send(Packet::binary(vec![1u8, 2])), Ok(true));
        assert_eq!(s.take_poll().as_deref(), Some("4a\x1ebAQI="));
        assert_eq!(s.take_poll(), None);
        // Queued before the GET: answered at once.
        assert_eq!(s.send(message("b")), Ok(false));
        assert_eq!(s.poll(), Ok(Poll::Ready("4b".into())));
    }

    #[test]
    fn client_packets_are_delivered_or_answered() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        let got = s.receive(Transport::Polling, Packet::text(PacketType::Message, "hi"), t0);
        assert_eq!(got, Ok(Received::Message(Data::Text("hi".into()))));
        let noop = s.receive(Transport::Polling, Packet::text(PacketType::Noop, ""), t0);
        assert_eq!(noop, Ok(Received::Nothing));
        let ping = s.receive(Transport::Polling, Packet::text(PacketType::Ping, ""), t0);
        assert_eq!(ping, Err(SessionError::UnexpectedPacket(PacketType::Ping)));
        assert_eq!(s.closed(), Some(CloseReason::ProtocolError));

        let mut s = polling(t0);
        let close = s.receive(Transport::Polling, Packet::text(PacketType::Close, ""), t0);
        assert_eq!(close, Ok(Received::Closed(CloseReason::ClientClose)));
        assert_eq!(s.send(message("late")), Err(SessionError::Closed));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn the_heartbeat_pings_and_closes_a_silent_client() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        assert_eq!(s.deadline(), Some(t0 + 25 * SEC));
        assert!(!s.on_tick(t0 + 24 * SEC));
        assert_eq!(s.poll(), Ok(Poll::Wait));
        assert!(s.on_tick(t0 + 25 * SEC), "a waiting poll gets the ping");
        assert_eq!(s.take_poll().as_deref(), Some("2"));
        assert_eq!(s.deadline(), Some(t0 + 45 * SEC));
        // A pong re-arms the ping from its arrival.
        let pong = Packet::text(PacketType::Pong, "");
        assert_eq!(s.receive(Transport::Polling, pong, t0 + 30 * SEC), Ok(Received::Nothing));
        assert_eq!(s.deadline(), Some(t0 + 55 * SEC));
        assert!(!s.on_tick(t0 + 55 * SEC), "no poll waits: queued for the next");
        assert!(!s.on_tick(t0 + 74 * SEC));
        assert_eq!(s.closed(), None);
        assert!(!s.on_tick(t0 + 75 * SEC));
        assert_eq!(s.closed(), Some(CloseReason::PingTimeout));
    }

    #[test]
    fn an_upgrade_probes_then_moves_the_queue_to_the_websocket() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        assert_eq!(s.poll(), Ok(Poll::Wait));
        s.send(message("queued")).unwrap();
        let _ = s.take_poll();
        s.send(message("before upgrade")).unwrap();
        let probe = Packet::text(PacketType::Ping, "probe");
        let reply = s.receive(Transport::WebSocket, probe, t0);
        assert_eq!(reply, Ok(Received::Reply(Packet::text(PacketType::Pong, "probe"))));
        // Polling now gets a noop, and nothing else.
        assert_eq!(s.poll(), Ok(Poll::Ready("6".into())));
        let up = s.receive(Transport::WebSocket, Packet::text(PacketType::Upgrade, ""), t0);
        assert_eq!(up, Ok(Received::Upgraded));
        assert_eq!(s.transport(), Transport::WebSocket);
        let drained: Vec<_> = s.drain().collect();
        assert_eq!(drained, vec![message("before upgrade")]);
        assert_eq!(s.send(message("after")), Ok(true));
        let hi = s.receive(Transport::WebSocket, message("hi"), t0);
        assert_eq!(hi, Ok(Received::Message(Data::Text("hi".into()))));
        s.transport_closed();
        assert_eq!(s.closed(), Some(CloseReason::TransportClose));
    }

    #[test]
    fn a_failed_probe_leaves_the_session_on_polling() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        let bad = s.receive(Transport::WebSocket, message("x"), t0);
        assert_eq!(bad, Err(SessionError::UnexpectedPacket(PacketType::Message)));
        assert_eq!(s.closed(), None);
        assert_eq!(s.transport(), Transport::Polling);
        let no_probe = Session::new(
            "y".into(),
            SessionConfig { allow_upgrades: false, ..cfg() },
            Transport::Polling,
            t0,
        )
        .receive(Transport::WebSocket, Packet::text(PacketType::Ping, "probe"), t0);
        assert_eq!(no_probe, Err(SessionError::UpgradeRefused));
    }

    #[test]
    fn a_client_that_stops_reading_is_bounded_then_closed() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        for _ in 0..9 {
            s.send(message("123456789")).unwrap();
        }
        assert_eq!(s.send(message("123456789")), Ok(false));
        assert_eq!(s.send(message("x")), Err(SessionError::Closed));
        assert_eq!(s.closed(), Some(CloseReason::Backlog));
    }

    #[test]
    fn a_server_close_is_sent_then_the_session_is_over() {
        let t0 = Instant::now();
        let mut s = polling(t0);
        s.close_by_server();
        assert_eq!(s.closed(), Some(CloseReason::ServerClose));
        assert_eq!(s.poll(), Ok(Poll::Ready("1".into())));
        assert_eq!(s.poll(), Err(SessionError::Closed));
    }
}
