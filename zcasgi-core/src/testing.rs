//! Test support shared by the backends' integration tests (feature `testing`).
//!
//! [`EchoApp`] is an [`EventSink`] that plays a tiny application on its own thread: it accepts
//! every WebSocket (choosing the first offered subprotocol), echoes every message, closes with
//! the code and reason a text message `close:<code>:<reason>` asks for, and records every event
//! so that tests can assert on disconnect codes. Its methods panic on a poisoned lock, which
//! only a failed test can cause.
#![allow(clippy::missing_panics_doc)]

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::{ConnHandle, ConnId, Event, EventSink, LogLevel};
use crate::protocol::Message;

/// What [`EchoApp`] observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A connection was accepted, with the request path.
    Connected(ConnId, String),
    /// A plain HTTP request was answered, with its target (path, and `?query` if any).
    Request(ConnId, String),
    /// A message arrived (and was echoed).
    Message(ConnId, usize),
    /// A disconnect with its code.
    Disconnected(ConnId, u16),
    /// A log record, with its level.
    Log(LogLevel, String),
    /// The server answered a request itself, with this status.
    Refused(ConnId, u16),
}

/// An echo application running on its own thread, fed by the backend under test.
#[derive(Debug)]
pub struct EchoApp {
    tx: Mutex<Sender<Event>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EchoApp {
    /// Starts the application thread.
    #[must_use]
    pub fn start() -> Arc<Self> {
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || run(&rx, &seen2));
        Arc::new(Self { tx: Mutex::new(tx), seen, thread: Mutex::new(Some(thread)) })
    }

    /// Everything seen so far.
    #[must_use]
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until `pred` holds for what was seen; returns whether it did.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Seen]) -> bool) -> bool {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if pred(&self.seen.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        pred(&self.seen.lock().unwrap())
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        // Closing the channel ends the thread.
        let (tx, _) = channel();
        *self.tx.lock().unwrap() = tx;
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl EventSink for EchoApp {
    fn push(&self, event: Event) {
        let _ = self.tx.lock().unwrap().send(event);
    }
}

fn run(rx: &Receiver<Event>, seen: &Mutex<Vec<Seen>>) {
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    while let Ok(ev) = rx.recv() {
        match ev {
            Event::Connect(info) => {
                let path = info.request.path();
                seen.lock().unwrap().push(Seen::Connected(info.id, path.clone()));
                if path == "/deny" {
                    info.handle.close(1000, String::new());
                } else {
                    let subprotocol =
                        info.upgrade.as_ref().and_then(|u| u.subprotocols.first().cloned());
                    info.handle.accept(subprotocol, Vec::new());
                }
                conns.insert(info.id, info.handle);
            }
            Event::Message { id, message } => {
                let Some(h) = conns.get(&id) else { continue };
                h.message_taken(message.len());
                let (text, payload) = match message {
                    Message::Text(b) => (true, b),
                    Message::Binary(b) => (false, b),
                };
                seen.lock().unwrap().push(Seen::Message(id, payload.len()));
                if let Some(rest) = payload.strip_prefix(b"close:") {
                    let rest = String::from_utf8_lossy(rest);
                    let (code, reason) = rest.split_once(':').unwrap_or((&rest, ""));
                    let code = code.parse().unwrap_or(1000);
                    h.close(code, reason.to_owned());
                } else {
                    let _ = h.send(text, payload);
                }
                // Back to waiting for the next event, as an ASGI app in `receive()`.
                h.receive_waiting();
            }
            Event::Disconnect { id, code, .. } => {
                conns.remove(&id);
                seen.lock().unwrap().push(Seen::Disconnected(id, code));
            }
            Event::HttpRequest(info) => {
                // Plain HTTP: answer 200 with the path, so backend tests can check routing.
                let mut target = info.request.path();
                if !info.request.query_string.is_empty() {
                    target.push('?');
                    target.push_str(&String::from_utf8_lossy(&info.request.query_string));
                }
                seen.lock().unwrap().push(Seen::Request(info.id, target));
                let body = bytes::Bytes::from(info.request.path());
                info.handle.respond(200, Vec::new());
                let _ = info.handle.respond_body(body, false);
            }
            Event::HttpBody { id, body, .. } => {
                if let Some(h) = conns.get(&id) {
                    h.message_taken(body.len());
                }
            }
            Event::Writable { .. } => {}
            Event::Refused(r) => seen.lock().unwrap().push(Seen::Refused(r.id, r.status)),
            Event::Log { level, message } => seen.lock().unwrap().push(Seen::Log(level, message)),
        }
    }
}
