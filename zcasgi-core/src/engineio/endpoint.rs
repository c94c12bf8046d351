//! A server's Engine.IO endpoint: every session, and the requests and WebSockets that carry
//! them, without I/O.
//!
//! The endpoint is fed what the connections to the Engine.IO path bring (a request head
//! [`Endpoint::on_request`], a body piece [`Endpoint::on_body`], a WebSocket message
//! [`Endpoint::on_message`], a connection's end [`Endpoint::on_disconnect`]), the application's
//! packets ([`Endpoint::send`], [`Endpoint::broadcast`], [`Endpoint::disconnect`]) and the clock
//! ([`Endpoint::on_tick`] at [`Endpoint::deadline`]). It answers every request itself through the
//! connections' [`ConnHandle`]s — handshakes, long-polling GETs and POSTs, the WebSocket
//! transport, the upgrade probe, CORS, heartbeats — and gives the application only
//! [`AppEvent`]s: a session opened, a message, a session ended.
//!
//! Back-pressure, per client:
//! - a message is taken from its WebSocket (reading may go on) only when the application says it
//!   is done with it ([`Endpoint::done`]), so a client that floods a slow handler has its reading
//!   paused by the driver's `ws_max_queue`;
//! - a long-polling POST is answered once the application is done with all its messages;
//! - a client that does not read what it is sent is closed past the session's
//!   `max_queued_bytes` (counted on its WebSocket, or in its polling queue).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cors::{Cookie, Cors};
use super::request::{classify, Request as EioRequest, RequestError, Transports};
use super::session::{CloseReason, Poll, Received, Session, SessionConfig, Transport};
use super::{decode_payload, Data, Packet, PacketType, PayloadLimits};
use crate::backend::{ConnHandle, ConnId, ConnectInfo, SendState};
use crate::protocol::Message;

/// Response headers, as [`ConnHandle::respond`] takes them.
type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// How an endpoint serves: its sessions' settings, transports, CORS and cookie.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Every session's heartbeat, payload and backlog settings.
    pub session: SessionConfig,
    /// The transports clients may use.
    pub transports: Transports,
    /// Which origins may connect, and the CORS headers of every answer.
    pub cors: Cors,
    /// The session cookie set by a long-polling handshake, if any.
    pub cookie: Option<Cookie>,
    /// Most packets in one long-polling payload.
    pub max_packets: usize,
}

impl Default for EndpointConfig {
    /// python-engineio's defaults.
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            transports: Transports::default(),
            cors: Cors::default(),
            cookie: None,
            max_packets: PayloadLimits::default().max_packets,
        }
    }
}

/// A message's data as the application gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Text (valid UTF-8).
    Text(Bytes),
    /// Binary.
    Binary(Bytes),
}

/// What the application is told.
#[derive(Debug)]
pub enum AppEvent {
    /// A client asks to open session `sid` with the request `info`: answer with
    /// [`Endpoint::connected`].
    Connect {
        /// The new session.
        sid: String,
        /// The handshake request (for the application's view of it: headers, addresses).
        info: Box<ConnectInfo>,
    },
    /// A message from session `sid`'s client: call [`Endpoint::done`] once handled.
    Message {
        /// The session.
        sid: String,
        /// The message.
        data: Payload,
    },
    /// Session `sid` ended (not reported for [`Endpoint::disconnect`]).
    Disconnect {
        /// The session.
        sid: String,
        /// Why.
        reason: CloseReason,
    },
}

/// A message for clients, framed once for every WebSocket recipient.
#[derive(Debug, Clone)]
pub struct Outgoing {
    text: bool,
    /// The WebSocket frame's payload: `4` and the text, or the binary data.
    frame: Bytes,
}

impl Outgoing {
    /// A text message.
    #[must_use]
    pub fn text(text: &str) -> Self {
        let mut frame = Vec::with_capacity(text.len() + 1);
        frame.push(b'4');
        frame.extend_from_slice(text.as_bytes());
        Self { text: true, frame: frame.into() }
    }

    /// A binary message (its bytes are shared, not copied).
    #[must_use]
    pub fn binary(data: Bytes) -> Self {
        Self { text: false, frame: data }
    }

    /// The message as a packet for a long-polling queue.
    fn packet(&self) -> Packet<'static> {
        if self.text {
            let text = String::from_utf8_lossy(&self.frame[1..]).into_owned();
            Packet::text(PacketType::Message, text)
        } else {
            Packet::binary(self.frame.to_vec())
        }
    }
}

/// A message the application has been given and is not done with.
#[derive(Debug)]
enum Pending {
    /// From a WebSocket: taken from it (`len` bytes) when done.
    WebSocket(ConnHandle, usize),
    /// From a long-polling POST, answered when all of its messages are done.
    Post,
}

/// A POST whose messages the application is handling.
#[derive(Debug)]
struct PostWait {
    handle: ConnHandle,
    headers: Headers,
    remaining: usize,
}

/// One session and the connections that carry it.
#[derive(Debug)]
struct Entry {
    session: Session,
    /// The handshake, until the application accepts or refuses the session.
    connecting: Option<(ConnHandle, Headers)>,
    /// The WebSocket carrying the session.
    ws: Option<ConnHandle>,
    /// A WebSocket probing an upgrade of this long-polling session.
    probe: Option<ConnHandle>,
    /// The long-polling GET waiting for packets.
    poll: Option<(ConnHandle, Headers)>,
    posts: VecDeque<PostWait>,
    pending: VecDeque<Pending>,
    /// The earliest time this session is in the timer heap for.
    armed: Option<Instant>,
    /// A closed long-polling session waits until then for the poll that takes its close packet.
    expires: Option<Instant>,
    /// The end is settled: reported (unless the application asked for it) and cleaned up.
    ended: bool,
    /// The application closed the session: its end is not reported back.
    quiet: bool,
}

impl Entry {
    fn new(session: Session, handle: ConnHandle, headers: Headers) -> Self {
        Self {
            session,
            connecting: Some((handle, headers)),
            ws: None,
            probe: None,
            poll: None,
            posts: VecDeque::new(),
            pending: VecDeque::new(),
            armed: None,
            expires: None,
            ended: false,
            quiet: false,
        }
    }

    fn is_open(&self) -> bool {
        self.connecting.is_none() && self.session.closed().is_none()
    }

    /// Connection `id`, which was the session's `lost`, ended.
    fn lost(&mut self, lost: Lost, id: ConnId) {
        match lost {
            Lost::Handshake => {
                // The client left before the application answered: the session ends as the
                // transport closed, once the application has its Connect. A WebSocket
                // handshake's driver still waits for an answer: a refusal.
                if let Some((handle, _)) = self.connecting.take_if(|(h, _)| h.id() == id) {
                    handle.close(1000, String::new());
                    self.session.transport_lost();
                }
            }
            Lost::Poll => {
                // A GET that came as a WebSocket upgrade: its driver waits for an answer even
                // after its client left.
                if let Some((handle, _)) = self.poll.take_if(|(h, _)| h.id() == id) {
                    handle.close(1000, String::new());
                    self.session.poll_abandoned();
                }
            }
            Lost::WebSocket => {
                if self.ws.take_if(|h| h.id() == id).is_some() {
                    self.session.transport_lost();
                }
            }
            Lost::Probe => {
                if self.probe.take_if(|h| h.id() == id).is_some() {
                    self.session.upgrade_abandoned();
                }
            }
            Lost::Post => {}
        }
    }

    /// Writes what the session queued to its WebSocket.
    fn flush_ws(&mut self) {
        let Some(ws) = &self.ws else { return };
        for packet in self.session.drain() {
            let mut frame = Vec::new();
            let text = packet.encode_websocket(&mut frame);
            ws.send(text, frame.into());
        }
    }

    /// Answers the waiting GET if packets are queued.
    fn answer_poll(&mut self, conns: &mut Conns) {
        if self.poll.is_none() {
            return;
        }
        if let Some(body) = self.session.take_poll() {
            if let Some((handle, headers)) = self.poll.take() {
                conns.respond(&handle, 200, PAYLOAD_TYPE, headers, body);
            }
        }
    }

    /// Delivers what the session queued: to the WebSocket, or to a waiting GET.
    fn push_out(&mut self, conns: &mut Conns) {
        if self.session.transport() == Transport::WebSocket {
            self.flush_ws();
        } else {
            self.answer_poll(conns);
        }
    }
}

/// What a connection to the endpoint is to it.
#[derive(Debug)]
enum Role {
    /// A handshake waiting for the application's answer.
    Handshake(String),
    /// A GET waiting for packets.
    Poll(String),
    /// A POST whose body is coming.
    Post { sid: String, handle: ConnHandle, body: Vec<u8>, headers: Headers },
    /// The WebSocket carrying a session.
    WebSocket(String),
    /// A WebSocket probing an upgrade.
    Probe(String),
    /// Answered, or nothing to the endpoint any more.
    Done,
}

/// Which of a session's connections ended (see [`Role`]).
#[derive(Debug, Clone, Copy)]
enum Lost {
    Handshake,
    Poll,
    Post,
    WebSocket,
    Probe,
}

/// The content type of a long-polling payload.
const PAYLOAD_TYPE: &str = "text/plain; charset=UTF-8";

/// Every session of one server's Engine.IO endpoint (see the module doc).
pub struct Endpoint {
    cfg: EndpointConfig,
    new_sid: Box<dyn FnMut() -> String + Send>,
    sessions: HashMap<String, Entry>,
    conns: Conns,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    events: Vec<AppEvent>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sessions", &self.sessions.len())
            .field("conns", &self.conns.roles.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint serving with `cfg`, naming new sessions with `new_sid` (ids of
    /// `[A-Za-z0-9_.-]` only, unique within the server).
    #[must_use]
    pub fn new(cfg: EndpointConfig, new_sid: Box<dyn FnMut() -> String + Send>) -> Self {
        Self {
            cfg,
            new_sid,
            sessions: HashMap::new(),
            conns: Conns::default(),
            timers: BinaryHeap::new(),
            events: Vec::new(),
        }
    }

    /// Moves the events produced so far into `into`.
    pub fn take_events(&mut self, into: &mut Vec<AppEvent>) {
        into.append(&mut self.events);
    }

    /// Keeps the answers given to requests from now on, for [`Endpoint::take_answers`].
    pub fn log_answers(&mut self) {
        self.conns.answers.get_or_insert_with(Vec::new);
    }

    /// Moves the answers given so far (see [`Endpoint::log_answers`]) into `into`.
    pub fn take_answers(&mut self, into: &mut Vec<Answered>) {
        if let Some(answers) = &mut self.conns.answers {
            into.append(answers);
        }
    }

    /// Whether events are waiting for [`Endpoint::take_events`].
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether connection `id` is the endpoint's (its events go to the endpoint).
    #[must_use]
    pub fn owns(&self, id: ConnId) -> bool {
        self.conns.roles.contains_key(&id)
    }

    /// Number of sessions (open, being opened, or closed and handing out their close packet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there is no session.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether session `sid` is open (accepted and not ended).
    #[must_use]
    pub fn is_open(&self, sid: &str) -> bool {
        self.sessions.get(sid).is_some_and(Entry::is_open)
    }

    /// The transport session `sid` runs on, if it exists.
    #[must_use]
    pub fn transport(&self, sid: &str) -> Option<Transport> {
        self.sessions.get(sid).map(|e| e.session.transport())
    }

    /// When [`Endpoint::on_tick`] next has something to do.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// A request to the endpoint's path (a plain request, or a WebSocket upgrade): answered now,
    /// or once the application, a packet or a body lets it be.
    pub fn on_request(&mut self, info: Box<ConnectInfo>, now: Instant) {
        let id = info.id;
        let handle = info.handle.clone();
        let scheme = if info.tls.is_some() { "https" } else { "http" };
        let headers = self.cfg.cors.headers(&info.request, scheme);
        self.conns.roles.insert(id, Role::Done);
        self.conns.handles.insert(id, handle.clone());
        if let Err(refused) = self.cfg.cors.check(&info.request, scheme) {
            self.conns.bad_request(&handle, headers, &refused.to_string());
            return;
        }
        if info.request.method == "OPTIONS" {
            self.conns.ok(&handle, headers);
            return;
        }
        let upgrade = info.upgrade.is_some().then_some(&b"websocket"[..]);
        let request = classify(
            &info.request.method,
            &info.request.query_string,
            upgrade,
            self.cfg.transports,
        )
        .map(|r| match r {
            EioRequest::Handshake(t) => (Kind::Handshake(t), String::new()),
            EioRequest::Poll(sid) => (Kind::Poll, sid.into_owned()),
            EioRequest::Post(sid) => (Kind::Post, sid.into_owned()),
            EioRequest::Upgrade(sid) => (Kind::Upgrade, sid.into_owned()),
        });
        match request {
            Err(RequestError::BadMethod) => {
                let body = Bytes::from_static(b"Method Not Found");
                self.conns.respond(&handle, 405, "text/plain", headers, body);
            }
            Err(e) => self.conns.bad_request(&handle, headers, &e.to_string()),
            Ok((Kind::Handshake(transport), _)) => self.handshake(info, transport, headers, now),
            Ok((kind, sid)) => {
                let Some(entry) = self.sessions.get_mut(&sid) else {
                    self.conns.bad_request(&handle, headers, &format!("Invalid session {sid}"));
                    return;
                };
                if entry.connecting.is_some() {
                    self.conns.bad_request(&handle, headers, "Not connected");
                    return;
                }
                if entry.session.transport() == Transport::WebSocket {
                    self.conns.bad_request(&handle, headers, "Unexpected HTTP request");
                    return;
                }
                match kind {
                    Kind::Poll => self.poll(&sid, handle, headers, now),
                    Kind::Post => self.post(&sid, handle, headers, &info, now),
                    Kind::Upgrade => self.probe(&sid, handle, headers),
                    Kind::Handshake(_) => unreachable!("handled above"),
                }
            }
        }
    }

    fn handshake(
        &mut self,
        info: Box<ConnectInfo>,
        transport: Transport,
        mut headers: Headers,
        now: Instant,
    ) {
        let sid = (self.new_sid)();
        let session = Session::new(sid.clone(), self.cfg.session, transport, now);
        if transport == Transport::Polling {
            if let Some(cookie) = &self.cfg.cookie {
                headers.push(cookie.header(&sid));
            }
        }
        self.conns.roles.insert(info.id, Role::Handshake(sid.clone()));
        self.sessions.insert(sid.clone(), Entry::new(session, info.handle.clone(), headers));
        self.events.push(AppEvent::Connect { sid, info });
    }

    /// The application's answer to [`AppEvent::Connect`]: the session opens (the handshake is
    /// answered with its open packet) or is refused (401).
    pub fn connected(&mut self, sid: &str, accepted: bool, now: Instant) {
        let Some(entry) = self.sessions.get_mut(sid) else { return };
        let Some((handle, headers)) = entry.connecting.take() else { return };
        if !accepted {
            self.sessions.remove(sid);
            let body = Bytes::from_static(br#"{"message": "Unauthorized"}"#);
            self.conns.respond(&handle, 401, "application/json", headers, body);
            return;
        }
        let open = entry.session.open_packet();
        match entry.session.transport() {
            Transport::Polling => {
                let mut body = String::new();
                open.encode_polling(&mut body);
                self.conns.respond(&handle, 200, PAYLOAD_TYPE, headers, body);
            }
            Transport::WebSocket => {
                self.conns.accept(&handle, Role::WebSocket(sid.to_owned()));
                let mut frame = Vec::new();
                open.encode_websocket(&mut frame);
                handle.send(true, frame.into());
                entry.ws = Some(handle);
            }
        }
        self.rearm(sid, now);
    }

    fn poll(&mut self, sid: &str, handle: ConnHandle, headers: Headers, now: Instant) {
        let Some(entry) = self.sessions.get_mut(sid) else { return };
        match entry.session.poll() {
            Ok(Poll::Ready(body)) => self.conns.respond(&handle, 200, PAYLOAD_TYPE, headers, body),
            Ok(Poll::Wait) => {
                self.conns.roles.insert(handle.id(), Role::Poll(sid.to_owned()));
                entry.poll = Some((handle, headers));
            }
            Err(e) => self.conns.bad_request(&handle, headers, &e.to_string()),
        }
        self.settle(sid, now);
    }

    fn post(
        &mut self,
        sid: &str,
        handle: ConnHandle,
        headers: Headers,
        info: &ConnectInfo,
        now: Instant,
    ) {
        let length = info
            .request
            .header(b"content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if length > self.cfg.session.max_payload {
            self.too_long(sid, &handle, headers, now);
            return;
        }
        let body = Vec::with_capacity(length);
        let id = handle.id();
        self.conns.roles.insert(id, Role::Post { sid: sid.to_owned(), handle, body, headers });
    }

    /// A POST over `max_payload`: refused, and the session closed (as python-engineio does).
    fn too_long(&mut self, sid: &str, handle: &ConnHandle, headers: Headers, now: Instant) {
        self.conns.bad_request(handle, headers, "Bad Request");
        if let Some(entry) = self.sessions.get_mut(sid) {
            entry.session.close_by_server();
        }
        self.settle(sid, now);
    }

    /// A piece of a request's body on connection `id`.
    pub fn on_body(&mut self, id: ConnId, body: &Bytes, more: bool, now: Instant) {
        // Every piece is taken, whatever the request (a GET's empty body, the body of a POST
        // already answered): a keep-alive connection stops reading bodies once `ws_max_queue`
        // pieces are left untaken.
        if let Some(handle) = self.conns.handles.get(&id) {
            handle.message_taken(body.len());
        }
        let Some(Role::Post { body: buf, .. }) = self.conns.roles.get_mut(&id) else {
            return;
        };
        buf.extend_from_slice(body);
        let too_long = buf.len() > self.cfg.session.max_payload;
        if !too_long && more {
            return;
        }
        let Some(Role::Post { sid, handle, body: buf, headers }) =
            self.conns.roles.insert(id, Role::Done)
        else {
            return;
        };
        if too_long {
            self.too_long(&sid, &handle, headers, now);
        } else {
            self.posted(&sid, &handle, headers, &buf, now);
        }
    }

    /// A whole POST body: its packets, then the answer (once its messages are done).
    fn posted(
        &mut self,
        sid: &str,
        handle: &ConnHandle,
        headers: Headers,
        body: &[u8],
        now: Instant,
    ) {
        let Some(entry) = self.sessions.get_mut(sid) else {
            self.conns.bad_request(handle, headers, &format!("Invalid session {sid}"));
            return;
        };
        let limits = PayloadLimits {
            max_bytes: self.cfg.session.max_payload,
            max_packets: self.cfg.max_packets,
        };
        let packets = match decode_payload(body, limits) {
            Ok(packets) => packets,
            Err(e) => {
                self.conns.bad_request(handle, headers, &e.to_string());
                entry.session.protocol_error();
                self.settle(sid, now);
                return;
            }
        };
        let mut messages = 0;
        for packet in packets {
            match entry.session.receive(Transport::Polling, packet, now) {
                Ok(Received::Message(data)) => {
                    let data = match data {
                        Data::Text(t) => Payload::Text(Bytes::copy_from_slice(t.as_bytes())),
                        Data::Binary(b) => Payload::Binary(Bytes::copy_from_slice(&b)),
                    };
                    entry.pending.push_back(Pending::Post);
                    messages += 1;
                    self.events.push(AppEvent::Message { sid: sid.to_owned(), data });
                }
                Ok(Received::Closed(_)) | Err(_) => break,
                Ok(Received::Nothing | Received::Reply(_) | Received::Upgraded) => {}
            }
        }
        if messages == 0 || entry.session.closed().is_some() {
            self.conns.ok(handle, headers);
        } else {
            entry.posts.push_back(PostWait {
                handle: handle.clone(),
                headers,
                remaining: messages,
            });
        }
        self.rearm(sid, now);
        self.settle(sid, now);
    }

    fn probe(&mut self, sid: &str, handle: ConnHandle, headers: Headers) {
        let Some(entry) = self.sessions.get_mut(sid) else { return };
        if !self.cfg.session.allow_upgrades || entry.probe.is_some() || !entry.is_open() {
            self.conns.bad_request(&handle, headers, "Invalid upgrade");
            return;
        }
        self.conns.accept(&handle, Role::Probe(sid.to_owned()));
        entry.probe = Some(handle);
    }

    /// A WebSocket message on connection `id`.
    pub fn on_message(&mut self, id: ConnId, message: Message, now: Instant) {
        let (sid, probing) = match self.conns.roles.get(&id) {
            Some(Role::WebSocket(sid)) => (sid.clone(), false),
            Some(Role::Probe(sid)) => (sid.clone(), true),
            _ => return,
        };
        let Some(entry) = self.sessions.get_mut(&sid) else { return };
        let handle = if probing { entry.probe.clone() } else { entry.ws.clone() };
        let Some(handle) = handle else { return };
        let len = message.len();
        let packet = match &message {
            Message::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Packet::decode_text(text, false).map_err(drop),
                Err(_) => Err(()),
            },
            Message::Binary(bytes) => Ok(Packet::decode_binary(bytes)),
        };
        let too_long = len > self.cfg.session.max_payload;
        let received = match packet {
            Ok(packet) if !too_long => entry.session.receive(Transport::WebSocket, packet, now),
            _ => {
                handle.message_taken(len);
                if probing {
                    entry.probe = None;
                    entry.session.upgrade_abandoned();
                    handle.close(1008, String::new());
                } else {
                    entry.session.protocol_error();
                    handle.close(if too_long { 1009 } else { 1008 }, String::new());
                }
                self.settle(&sid, now);
                return;
            }
        };
        match received {
            Ok(Received::Message(_)) => {
                let data = match message {
                    Message::Text(bytes) => Payload::Text(bytes.slice(1..)),
                    Message::Binary(bytes) => Payload::Binary(bytes),
                };
                entry.pending.push_back(Pending::WebSocket(handle, len));
                self.events.push(AppEvent::Message { sid: sid.clone(), data });
            }
            Ok(Received::Reply(packet)) => {
                handle.message_taken(len);
                let mut frame = Vec::new();
                let text = packet.encode_websocket(&mut frame);
                handle.send(text, frame.into());
                entry.answer_poll(&mut self.conns);
            }
            Ok(Received::Upgraded) => {
                handle.message_taken(len);
                self.conns.roles.insert(id, Role::WebSocket(sid.clone()));
                entry.probe = None;
                if let Some((poll, headers)) = entry.poll.take() {
                    // Upgraded while a GET waits: it gets a noop, as python-engineio answers.
                    self.conns.respond(&poll, 200, PAYLOAD_TYPE, headers, "6");
                }
                entry.ws = Some(handle);
                entry.flush_ws();
            }
            Ok(Received::Nothing | Received::Closed(_)) => {
                handle.message_taken(len);
                if entry.pending.is_empty() {
                    handle.receive_waiting();
                }
            }
            Err(_) => {
                handle.message_taken(len);
                if probing {
                    entry.probe = None;
                    entry.session.upgrade_abandoned();
                    handle.close(1008, String::new());
                } else {
                    handle.close(1008, String::new());
                }
            }
        }
        self.rearm(&sid, now);
        self.settle(&sid, now);
    }

    /// Connection `id` ended (or, for a plain request, its response is complete).
    pub fn on_disconnect(&mut self, id: ConnId, now: Instant) {
        self.conns.handles.remove(&id);
        let Some(role) = self.conns.roles.remove(&id) else { return };
        let (sid, lost) = match role {
            Role::Handshake(sid) => (sid, Lost::Handshake),
            Role::Poll(sid) => (sid, Lost::Poll),
            Role::Post { sid, .. } => (sid, Lost::Post),
            Role::WebSocket(sid) => (sid, Lost::WebSocket),
            Role::Probe(sid) => (sid, Lost::Probe),
            Role::Done => return,
        };
        if let Some(entry) = self.sessions.get_mut(&sid) {
            entry.lost(lost, id);
        }
        self.settle(&sid, now);
    }

    /// The application is done with session `sid`'s oldest message it was given.
    pub fn done(&mut self, sid: &str) {
        let Some(entry) = self.sessions.get_mut(sid) else { return };
        match entry.pending.pop_front() {
            Some(Pending::WebSocket(handle, len)) => {
                handle.message_taken(len);
                if entry.pending.is_empty() {
                    handle.receive_waiting();
                }
            }
            Some(Pending::Post) => {
                if let Some(front) = entry.posts.front_mut() {
                    front.remaining = front.remaining.saturating_sub(1);
                    if front.remaining == 0 {
                        if let Some(post) = entry.posts.pop_front() {
                            self.conns.ok(&post.handle, post.headers);
                        }
                    }
                }
            }
            None => {}
        }
    }

    /// Sends `message` to session `sid`; false if it is not open.
    pub fn send(&mut self, sid: &str, message: &Outgoing, now: Instant) -> bool {
        let sent = self.deliver(sid, message);
        if sent {
            self.settle(sid, now);
        }
        sent
    }

    /// Sends `message` to every open session of `sids`; returns how many.
    pub fn broadcast<'s>(
        &mut self,
        sids: impl IntoIterator<Item = &'s str>,
        message: &Outgoing,
        now: Instant,
    ) -> usize {
        let mut sent = 0;
        for sid in sids {
            if self.deliver(sid, message) {
                sent += 1;
                self.settle(sid, now);
            }
        }
        sent
    }

    /// Queues `message` for session `sid`'s client, or closes a client whose backlog is over
    /// its bound.
    fn deliver(&mut self, sid: &str, message: &Outgoing) -> bool {
        let Some(entry) = self.sessions.get_mut(sid) else { return false };
        if !entry.is_open() {
            return false;
        }
        if let (Transport::WebSocket, Some(ws)) = (entry.session.transport(), &entry.ws) {
            ws.send(message.text, message.frame.clone());
            if ws.queued_bytes() > self.cfg.session.max_queued_bytes {
                entry.session.overflowed();
            }
            return true;
        }
        if entry.session.send(message.packet()).unwrap_or(false) {
            entry.push_out(&mut self.conns);
        }
        true
    }

    /// Closes session `sid` for the application: its client gets a close packet; no
    /// [`AppEvent::Disconnect`] is reported. False if it was not open.
    pub fn disconnect(&mut self, sid: &str, now: Instant) -> bool {
        let Some(entry) = self.sessions.get_mut(sid) else { return false };
        if !entry.is_open() {
            return false;
        }
        entry.quiet = true;
        entry.session.close_by_server();
        self.settle(sid, now);
        true
    }

    /// Runs the heartbeats and expiries due at `now`.
    pub fn on_tick(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, sid))) = self.timers.pop() else { break };
            let Some(entry) = self.sessions.get_mut(&sid) else { continue };
            if entry.armed != Some(t) {
                continue;
            }
            entry.armed = None;
            if entry.expires.is_some_and(|e| e <= now) {
                self.sessions.remove(&sid);
                continue;
            }
            if entry.session.on_tick(now) {
                entry.push_out(&mut self.conns);
            }
            self.rearm(&sid, now);
            self.settle(&sid, now);
        }
    }

    /// Puts session `sid` in the timer heap for its next deadline, if not there already.
    fn rearm(&mut self, sid: &str, _now: Instant) {
        let Some(entry) = self.sessions.get_mut(sid) else { return };
        let Some(due) = entry.session.deadline().or(entry.expires) else { return };
        if entry.armed.is_none_or(|armed| due < armed) {
            entry.armed = Some(due);
            self.timers.push(Reverse((due, sid.to_owned())));
        }
    }

    /// Once session `sid` has ended: reports it, closes its connections, and forgets it (or
    /// keeps a long-polling one until its close packet is polled, or `ping_timeout`).
    fn settle(&mut self, sid: &str, now: Instant) {
        let Some(entry) = self.sessions.get_mut(sid) else { return };
        let Some(reason) = entry.session.closed() else { return };
        if !entry.ended {
            entry.ended = true;
            if !entry.quiet {
                self.events.push(AppEvent::Disconnect { sid: sid.to_owned(), reason });
            }
            if let Some((handle, headers)) = entry.connecting.take() {
                self.conns.bad_request(&handle, headers, "Bad Request");
            }
            for pending in entry.pending.drain(..) {
                if let Pending::WebSocket(handle, len) = pending {
                    handle.message_taken(len);
                }
            }
            for post in entry.posts.drain(..) {
                self.conns.ok(&post.handle, post.headers);
            }
            if let Some(probe) = entry.probe.take() {
                probe.close(1000, String::new());
            }
            if entry.ws.is_some() {
                entry.flush_ws();
                if let Some(ws) = entry.ws.take() {
                    ws.close(1000, String::new());
                }
            }
            entry.answer_poll(&mut self.conns);
            if let Some((handle, headers)) = entry.poll.take() {
                self.conns.respond(&handle, 200, PAYLOAD_TYPE, headers, "1");
            }
        }
        if entry.session.has_queued() && entry.session.transport() == Transport::Polling {
            if entry.expires.is_none() {
                entry.expires =
                    Some(now + self.cfg.session.ping_timeout.max(Duration::from_secs(1)));
                self.rearm(sid, now);
            }
        } else {
            self.sessions.remove(sid);
        }
    }
}

/// What a request to a session asks for (the session looked up by the caller).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Handshake(Transport),
    Poll,
    Post,
    Upgrade,
}

fn content_type(value: &str) -> (Vec<u8>, Vec<u8>) {
    (b"content-type".to_vec(), value.as_bytes().to_vec())
}

/// A request the endpoint answered, for the access log: its status (101: a WebSocket
/// accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The connection.
    pub id: ConnId,
    /// The status answered.
    pub status: u16,
}

/// The endpoint's connections: what each is to it, and the answers given.
#[derive(Debug, Default)]
struct Conns {
    roles: HashMap<ConnId, Role>,
    /// The handle of each connection in `roles`, to take every body piece it delivers.
    handles: HashMap<ConnId, ConnHandle>,
    /// Kept only when asked for ([`Endpoint::log_answers`]).
    answers: Option<Vec<Answered>>,
}

impl Conns {
    fn answered(&mut self, id: ConnId, status: u16) {
        if let Some(answers) = &mut self.answers {
            answers.push(Answered { id, status });
        }
    }

    /// Answers `status` with a body of type `ctype` and `headers`; the connection is done.
    fn respond(
        &mut self,
        handle: &ConnHandle,
        status: u16,
        ctype: &str,
        mut headers: Headers,
        body: impl Into<Bytes>,
    ) {
        let body = body.into();
        headers.insert(0, content_type(ctype));
        headers.insert(1, (b"content-length".to_vec(), body.len().to_string().into_bytes()));
        handle.respond(status, headers);
        if handle.respond_body(body, false) == SendState::Closed {
            // The client left: a WebSocket upgrade's driver still waits for the denial to end.
            handle.abort();
        }
        // A connection that ended (a POST answered once its client left) stays forgotten.
        if let Some(role) = self.roles.get_mut(&handle.id()) {
            *role = Role::Done;
        }
        self.answered(handle.id(), status);
    }

    /// Accepts a WebSocket, which becomes `role`.
    fn accept(&mut self, handle: &ConnHandle, role: Role) {
        handle.accept(None, Vec::new());
        self.roles.insert(handle.id(), role);
        self.answered(handle.id(), 101);
    }

    /// python-engineio's answer to a POST (and to OPTIONS): `OK`.
    fn ok(&mut self, handle: &ConnHandle, headers: Headers) {
        self.respond(handle, 200, "text/plain", headers, Bytes::from_static(b"OK"));
    }

    /// python-engineio's 400: the message as a JSON string.
    fn bad_request(&mut self, handle: &ConnHandle, headers: Headers, message: &str) {
        self.respond(handle, 400, "text/plain", headers, json_string(message));
    }
}

/// `text` as a JSON string literal (what Python's `json.dumps` gives for a `str`).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Command, Notify, ServerConfig};
    use crate::handshake::{Request, Upgrade};

    const SEC: Duration = Duration::from_secs(1);

    struct Count(Arc<AtomicUsize>);

    impl Notify for Count {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn endpoint() -> Endpoint {
        let cfg = EndpointConfig {
            session: SessionConfig {
                ping_interval: 10 * SEC,
                ping_timeout: 5 * SEC,
                max_payload: 100,
                max_queued_bytes: 1000,
                ..SessionConfig::default()
            },
            ..EndpointConfig::default()
        };
        let mut n = 0;
        Endpoint::new(
            cfg,
            Box::new(move || {
                n += 1;
                format!("sid{n}")
            }),
        )
    }

    /// A request for `?query` with `method`; a WebSocket upgrade if `ws`.
    fn request(id: ConnId, method: &str, query: &str, ws: bool) -> (Box<ConnectInfo>, ConnHandle) {
        let handle = ConnHandle::new(id, &ServerConfig::default(), Box::new(Count(Arc::default())));
        let request = Request {
            method: method.into(),
            http_minor: 1,
            raw_path: b"/socket.io/".to_vec(),
            query_string: query.as_bytes().to_vec(),
            headers: vec![(b"host".to_vec(), b"example.com".to_vec())],
        };
        let upgrade = ws.then(|| Upgrade {
            accept_key: String::new(),
            subprotocols: Vec::new(),
            extensions: Vec::new(),
        });
        let info = ConnectInfo {
            id,
            handle: handle.clone(),
            request,
            upgrade,
            client: None,
            server: None,
            tls: None,
        };
        (Box::new(info), handle)
    }

    fn commands(handle: &ConnHandle) -> Vec<Command> {
        let mut out = Vec::new();
        handle.take_commands(&mut out);
        out
    }

    /// The status and body of the response `handle` was given.
    fn response(handle: &ConnHandle) -> (u16, String) {
        let cmds = commands(handle);
        let (status, length) = cmds
            .iter()
            .find_map(|c| match c {
                Command::HttpResponseStart { status, headers } => {
                    let length = headers.iter().find(|(n, _)| n == b"content-length");
                    Some((*status, length.map(|(_, v)| v.clone())))
                }
                _ => None,
            })
            .expect("a response");
        let body: Vec<u8> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::HttpResponseBody { body, .. } => Some(body.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        // Every answer says its length (it is never chunked).
        assert_eq!(length, Some(body.len().to_string().into_bytes()));
        (status, String::from_utf8(body).unwrap())
    }

    /// The WebSocket messages `handle` was given, as text.
    fn frames(handle: &ConnHandle) -> Vec<String> {
        commands(handle)
            .into_iter()
            .filter_map(|c| match c {
                Command::Send { payload, .. } => Some(String::from_utf8_lossy(&payload).into()),
                _ => None,
            })
            .collect()
    }

    fn events(e: &mut Endpoint) -> Vec<AppEvent> {
        let mut out = Vec::new();
        e.take_events(&mut out);
        out
    }

    /// Opens a long-polling session; returns its id.
    fn open_polling(e: &mut Endpoint, id: ConnId, t: Instant) -> String {
        let (info, h) = request(id, "GET", "EIO=4&transport=polling", false);
        e.on_request(info, t);
        let sid = match events(e).pop() {
            Some(AppEvent::Connect { sid, .. }) => sid,
            other => panic!("{other:?}"),
        };
        assert!(commands(&h).is_empty(), "answered before the application accepted");
        e.connected(&sid, true, t);
        let (status, body) = response(&h);
        assert_eq!(status, 200);
        assert!(body.starts_with(&format!(r#"0{{"sid":"{sid}","upgrades":["websocket"]"#)));
        e.on_disconnect(id, t);
        sid
    }

    /// Opens a WebSocket session on connection 1; returns its id and the connection.
    fn open_websocket(e: &mut Endpoint, t: Instant) -> (String, ConnHandle) {
        let (info, ws) = request(1, "GET", "EIO=4&transport=websocket", true);
        e.on_request(info, t);
        let Some(AppEvent::Connect { sid, .. }) = events(e).pop() else { panic!() };
        e.connected(&sid, true, t);
        (sid, ws)
    }

    #[test]
    fn a_polling_session_opens_polls_and_posts() {
        let t = Instant::now();
        let mut e = endpoint();
        let sid = open_polling(&mut e, 1, t);
        assert!(e.is_open(&sid));
        // A GET waits until the application sends.
        let (get, gh) = request(2, "GET", &format!("EIO=4&transport=polling&sid={sid}"), false);
        e.on_request(get, t);
        assert!(commands(&gh).is_empty());
        assert!(e.send(&sid, &Outgoing::text("hello"), t));
        assert_eq!(response(&gh), (200, "4hello".into()));
        // A POST's messages go to the application; it is answered when they are done.
        let (post, ph) = request(3, "POST", &format!("EIO=4&transport=polling&sid={sid}"), false);
        e.on_request(post, t);
        e.on_body(3, &Bytes::from_static(b"4a\x1ebAQI=\x1e3"), false, t);
        let got: Vec<_> = events(&mut e)
            .into_iter()
            .map(|ev| match ev {
                AppEvent::Message { data, .. } => data,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [Payload::Text("a".into()), Payload::Binary(vec![1u8, 2].into())]);
        assert!(commands(&ph).is_empty());
        e.done(&sid);
        assert!(commands(&ph).is_empty());
        e.done(&sid);
        assert_eq!(response(&ph), (200, "OK".into()));
    }

    #[test]
    fn a_refused_session_gets_401_and_is_gone() {
        let t = Instant::now();
        let mut e = endpoint();
        let (info, h) = request(1, "GET", "EIO=4&transport=polling", false);
        e.on_request(info, t);
        let Some(AppEvent::Connect { sid, .. }) = events(&mut e).pop() else { panic!() };
        e.connected(&sid, false, t);
        assert_eq!(response(&h).0, 401);
        assert!(e.is_empty());
    }

    #[test]
    fn a_websocket_session_frames_messages_and_pings() {
        let t = Instant::now();
        let mut e = endpoint();
        let (sid, ws) = open_websocket(&mut e, t);
        let cmds = commands(&ws);
        assert!(matches!(cmds[0], Command::Accept { .. }));
        assert_eq!(e.transport(&sid), Some(Transport::WebSocket));
        e.on_message(1, Message::Text(Bytes::from_static(b"4hi")), t);
        let Some(AppEvent::Message { data, .. }) = events(&mut e).pop() else { panic!() };
        assert_eq!(data, Payload::Text("hi".into()));
        e.broadcast([sid.as_str(), "nobody"], &Outgoing::text("all"), t);
        assert_eq!(frames(&ws), ["4all"]);
        // The heartbeat: a ping at the interval; a pong keeps the session; silence ends it.
        assert_eq!(e.deadline(), Some(t + 10 * SEC));
        e.on_tick(t + 10 * SEC);
        assert_eq!(frames(&ws), ["2"]);
        e.on_message(1, Message::Text(Bytes::from_static(b"3")), t + 11 * SEC);
        e.on_tick(t + 16 * SEC);
        assert!(e.is_open(&sid));
        e.on_tick(t + 21 * SEC);
        assert_eq!(frames(&ws), ["2"]);
        e.on_tick(t + 26 * SEC);
        assert!(!e.is_open(&sid));
        match events(&mut e).pop() {
            Some(AppEvent::Disconnect { reason, .. }) => {
                assert_eq!(reason, CloseReason::PingTimeout);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_upgrade_request_whose_client_left_is_answered() {
        // The driver of a WebSocket handshake waits for an answer even after its client left
        // (it reports the disconnect, and the application decides): without one, the
        // connection is never closed.
        let t = Instant::now();
        let mut e = endpoint();
        let (info, ws) = request(1, "GET", "EIO=4&transport=websocket", true);
        e.on_request(info, t);
        let Some(AppEvent::Connect { sid, .. }) = events(&mut e).pop() else { panic!() };
        e.on_disconnect(1, t);
        assert!(matches!(
            events(&mut e).pop(),
            Some(AppEvent::Disconnect { reason: CloseReason::TransportClose, .. })
        ));
        assert!(commands(&ws).iter().any(|c| matches!(c, Command::Close { .. })));
        // The application's late answer changes nothing.
        e.connected(&sid, true, t);
        assert!(commands(&ws).is_empty());
        assert!(e.is_empty() && !e.owns(1));
        // A long-polling GET that came as a WebSocket upgrade waits like any other.
        let sid = open_polling(&mut e, 2, t);
        let (get, gh) = request(3, "GET", &format!("EIO=4&transport=polling&sid={sid}"), true);
        e.on_request(get, t);
        assert!(commands(&gh).is_empty());
        e.on_disconnect(3, t);
        assert!(commands(&gh).iter().any(|c| matches!(c, Command::Close { .. })));
    }

    #[test]
    fn an_answer_the_connection_no_longer_takes_is_aborted() {
        // A WebSocket upgrade whose client already left (its handle closed): the driver waits
        // for the answer to finish, and its body is refused, so the answer is aborted.
        let t = Instant::now();
        let mut e = endpoint();
        let (info, ws) = request(1, "GET", "EIO=4&transport=websocket&sid=nobody", true);
        ws.mark_closed();
        e.on_request(info, t);
        let cmds = commands(&ws);
        assert!(matches!(cmds[0], Command::HttpResponseStart { status: 400, .. }), "{cmds:?}");
        assert!(matches!(cmds.last(), Some(Command::Abort)), "{cmds:?}");
    }

    #[test]
    fn every_body_piece_is_taken_whatever_the_request() {
        // A keep-alive connection's reading pauses once `ws_max_queue` pieces are left
        // untaken: a GET's empty body, or the body of a POST answered before it came, must be
        // taken too, or a later POST on the connection never gets its body.
        let t = Instant::now();
        let mut e = endpoint();
        let sid = open_polling(&mut e, 1, t);
        let q = format!("EIO=4&transport=polling&sid={sid}");
        for (method, query, body) in [("GET", q.as_str(), ""), ("POST", "EIO=4&sid=nobody", "4hi")]
        {
            let (info, h) = request(2, method, query, false);
            e.on_request(info, t);
            assert!(!h.message_delivered(body.len()));
            e.on_body(2, &Bytes::from(body), false, t);
            e.send(&sid, &Outgoing::text("x"), t);
            e.on_disconnect(2, t);
            assert_eq!(h.inbound_room().messages, ServerConfig::default().ws_max_queue, "{method}");
        }
    }

    #[test]
    fn a_late_answer_does_not_bring_back_a_connection_that_ended() {
        // A POST whose client left while the application handled its message is answered when
        // the session ends: the endpoint must not take the connection back as its own.
        let t = Instant::now();
        let mut e = endpoint();
        let sid = open_polling(&mut e, 1, t);
        let (post, _) = request(2, "POST", &format!("EIO=4&transport=polling&sid={sid}"), false);
        e.on_request(post, t);
        e.on_body(2, &Bytes::from_static(b"4a"), false, t);
        assert!(matches!(events(&mut e).pop(), Some(AppEvent::Message { .. })));
        e.on_disconnect(2, t);
        assert!(e.disconnect(&sid, t));
        assert!(!e.owns(2));
    }

    #[test]
    fn an_upgrade_moves_a_polling_session_to_its_websocket() {
        let t = Instant::now();
        let mut e = endpoint();
        let sid = open_polling(&mut e, 1, t);
        let q = format!("EIO=4&transport=polling&sid={sid}");
        let (get, gh) = request(2, "GET", &q, false);
        e.on_request(get, t);
        let (probe, ws) = request(3, "GET", &format!("EIO=4&transport=websocket&sid={sid}"), true);
        e.on_request(probe, t);
        assert!(matches!(commands(&ws)[0], Command::Accept { .. }));
        e.on_message(3, Message::Text(Bytes::from_static(b"2probe")), t);
        assert_eq!(frames(&ws), ["3probe"]);
        // The waiting GET ends with a noop.
        assert_eq!(response(&gh), (200, "6".into()));
        e.send(&sid, &Outgoing::text("queued"), t);
        e.on_message(3, Message::Text(Bytes::from_static(b"5")), t);
        assert_eq!(e.transport(&sid), Some(Transport::WebSocket));
        assert_eq!(frames(&ws), ["4queued"]);
        // Polling is over for this session.
        let (late, lh) = request(4, "GET", &q, false);
        e.on_request(late, t);
        assert_eq!(response(&lh).0, 400);
        e.on_disconnect(3, t);
        match events(&mut e).pop() {
            Some(AppEvent::Disconnect { reason, .. }) => {
                assert_eq!(reason, CloseReason::TransportClose);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_empty());
    }

    #[test]
    fn a_server_close_is_quiet_and_polled_once() {
        let t = Instant::now();
        let mut e = endpoint();
        let sid = open_polling(&mut e, 1, t);
        assert!(e.disconnect(&sid, t));
        assert!(events(&mut e).is_empty());
        let (get, gh) = request(2, "GET", &format!("EIO=4&transport=polling&sid={sid}"), false);
        e.on_request(get, t);
        assert_eq!(response(&gh), (200, "1".into()));
        assert!(e.is_empty());
    }

    #[test]
    fn a_client_that_does_not_read_is_closed_past_its_backlog() {
        let t = Instant::now();
        let mut e = endpoint();
        let (sid, ws) = open_websocket(&mut e, t);
        let big = "x".repeat(400);
        for _ in 0..3 {
            e.send(&sid, &Outgoing::text(&big), t);
        }
        assert!(!e.is_open(&sid));
        assert!(matches!(
            events(&mut e).pop(),
            Some(AppEvent::Disconnect { reason: CloseReason::Backlog, .. })
        ));
        assert!(commands(&ws).iter().any(|c| matches!(c, Command::Close { .. })));
    }

    #[test]
    fn a_websocket_message_is_taken_only_when_done() {
        let t = Instant::now();
        let mut e = endpoint();
        let (sid, ws) = open_websocket(&mut e, t);
        assert!(!ws.message_delivered(3));
        e.on_message(1, Message::Text(Bytes::from_static(b"4hi")), t);
        assert_eq!(ws.inbound_room().messages, ServerConfig::default().ws_max_queue - 1);
        e.done(&sid);
        assert_eq!(ws.inbound_room().messages, ServerConfig::default().ws_max_queue);
    }

    #[test]
    fn json_strings_are_escaped_as_python_does() {
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(json_string("é\n"), r#""\u00e9\n""#);
    }
}
