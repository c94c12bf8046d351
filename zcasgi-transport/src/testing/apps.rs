//! Applications for the scenarios that the echo application cannot play.

use std::sync::Mutex;

use bytes::Bytes;
use zcasgi_core::backend::{ConnHandle, Event, EventSink, LogLevel};
use zcasgi_core::protocol::Message;

/// Accepts every WebSocket and keeps its messages without taking them (`message_taken` is
/// the scenario's to call), so that the connection's inbound queue fills.
#[derive(Debug, Default)]
pub struct HoldApp {
    /// The handles of the accepted connections.
    pub handles: Mutex<Vec<ConnHandle>>,
    /// The payloads received, in order.
    pub messages: Mutex<Vec<Vec<u8>>>,
}

impl HoldApp {
    /// How many messages arrived.
    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}

impl EventSink for HoldApp {
    fn push(&self, event: Event) {
        match event {
            Event::Connect(info) => {
                info.handle.accept(None, Vec::new());
                self.handles.lock().unwrap().push(info.handle);
            }
            Event::Message { message: Message::Text(b) | Message::Binary(b), .. } => {
                self.messages.lock().unwrap().push(b.to_vec());
            }
            _ => {}
        }
    }
}

/// Denies every WebSocket with a 401 whose body comes in two pieces (ASGI
/// `websocket.http.response.*`); records the error logs.
#[derive(Debug, Default)]
pub struct DenyApp {
    /// The messages of the error logs.
    pub errors: Mutex<Vec<String>>,
}

impl DenyApp {
    /// The body the denial sends.
    pub const BODY: &'static [u8] = b"go away\r\n\r\n";
}

impl EventSink for DenyApp {
    fn push(&self, event: Event) {
        match event {
            Event::Log { level: LogLevel::Error, message } => {
                self.errors.lock().unwrap().push(message);
            }
            Event::Connect(info) => {
                let length = Self::BODY.len().to_string().into_bytes();
                info.handle.respond(401, vec![(b"content-length".to_vec(), length)]);
                let (first, rest) = Self::BODY.split_at(3);
                let _ = info.handle.respond_body(Bytes::from_static(first), true);
                let _ = info.handle.respond_body(Bytes::from_static(rest), false);
            }
            _ => {}
        }
    }
}
