//! Sticky Engine.IO sessions across worker processes: the session-id tag and the routing
//! decision.
//!
//! # Theory of operation
//!
//! With `workers=N`, the kernel spreads connections over the workers, so the requests of one
//! Engine.IO session (a long-polling client's `GET`s and `POST`s, then its WebSocket upgrade)
//! reach arbitrary workers; only the worker that created the session knows it. So a worker tags
//! the session ids it creates with its index ([`tag_session_id`]), and the driver of every
//! worker looks at each request head, at a request boundary, for an Engine.IO request naming a
//! session (`EIO=` and `sid=` in the query): when the session belongs to another worker
//! ([`WorkerSlot::route`]), the connection is handed, with every byte already read, to that
//! worker (see `crate::driver`, and `zcasgi_transport::handoff` for the sockets).
//!
//! A new session (a handshake, with no `sid=`) is created by the worker that accepted its
//! connection: the kernel spreads connections over the workers (evenly over their own
//! `SO_REUSEPORT` sockets on a TCP address), whatever the clients' addresses. Handing handshakes on round-robin would balance sessions
//! better, but would also send new clients to a worker that is stalled or being replaced,
//! which the kernel's choice avoids.
//!
//! # The tag
//!
//! A tagged id is the id, a `.`, and the worker index in decimal without leading zeros:
//! `Qx3…Zk.2`. python-engineio 4.x makes its ids from URL-safe base64 (`A-Z a-z 0-9 - _`),
//! which has no `.`, so an untagged id is never mistaken for a tagged one and is served by the
//! worker that received it; `.` is unreserved in a URI (RFC 3986 §2.3), so a client never has to
//! escape it. This module is the only place that knows the format: the Python side calls
//! [`tag_session_id`] through the binding.

use crate::engineio::request::Query;
use crate::handshake::Request;

/// The separator between a session id and its worker index.
const TAG_SEPARATOR: u8 = b'.';

/// Where a worker process stands among the `count` workers of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    /// This worker's index, `0..count`, stable across respawns.
    pub index: u16,
    /// How many workers the server runs.
    pub count: u16,
}

/// Which worker serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This worker: not an Engine.IO request, a new session, a session of this worker or an
    /// untagged one.
    Local,
    /// Another worker, by index: the session is its.
    Worker(u16),
    /// A session tagged with an index no worker has (`>= count`).
    UnknownWorker(u16),
}

/// What an Engine.IO request says about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// None yet: the request is a handshake and creates one.
    New,
    /// A session tagged with the index of the worker that created it.
    Tagged(u16),
    /// A session id without a tag.
    Untagged,
}

impl WorkerSlot {
    /// Decides which worker serves `request`.
    #[must_use]
    pub fn route(&self, request: &Request) -> Route {
        match session(&request.query_string) {
            Some(Session::Tagged(owner)) if owner == self.index => Route::Local,
            Some(Session::Tagged(owner)) if owner < self.count => Route::Worker(owner),
            Some(Session::Tagged(owner)) => Route::UnknownWorker(owner),
            _ => Route::Local,
        }
    }
}

/// Tags the session id `sid` with the index of the worker that created it.
#[must_use]
pub fn tag_session_id(sid: &str, worker: u16) -> String {
    format!("{sid}{}{worker}", char::from(TAG_SEPARATOR))
}

/// What the query of an Engine.IO request (one with `EIO=`) says about its session; `None`
/// for another request. The query is read as python-engineio reads it ([`Query`]).
#[must_use]
pub fn session(query: &[u8]) -> Option<Session> {
    let Query { eio, sid, .. } = Query::parse(query);
    eio?;
    let Some(sid) = sid else { return Some(Session::New) };
    Some(owner_of(sid.as_bytes()).map_or(Session::Untagged, Session::Tagged))
}

/// The worker index of a tagged session id; `None` for an untagged one.
fn owner_of(sid: &[u8]) -> Option<u16> {
    let dot = sid.iter().rposition(|&b| b == TAG_SEPARATOR)?;
    let (id, digits) = (&sid[..dot], &sid[dot + 1..]);
    let canonical = match digits {
        [] => false,
        [b'0'] => true,
        [first, ..] => *first != b'0' && digits.len() <= 5,
    };
    if id.is_empty() || !canonical || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u16, |n, d| n.checked_mul(10)?.checked_add(u16::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id as python-engineio 4.x makes it: URL-safe base64 of 15 bytes.
    const STOCK: &str = "Qx3-_aZ09bcdEFghIJkl";

    fn request(query: &str) -> Request {
        Request {
            method: "GET".into(),
            http_minor: 1,
            raw_path: b"/socket.io/".to_vec(),
            query_string: query.as_bytes().to_vec(),
            headers: vec![(b"host".to_vec(), b"x".to_vec())],
        }
    }

    /// The worker a query's session is tagged with.
    fn session_owner(query: &[u8]) -> Option<u16> {
        match session(query) {
            Some(Session::Tagged(owner)) => Some(owner),
            _ => None,
        }
    }

    #[test]
    fn a_tagged_id_names_its_worker() {
        for worker in [0, 1, 9, 10, 4095, u16::MAX] {
            let sid = tag_session_id(STOCK, worker);
            let query = format!("EIO=4&transport=polling&t=PZ1&sid={sid}");
            assert_eq!(session_owner(query.as_bytes()), Some(worker), "{sid}");
        }
        assert_eq!(tag_session_id(STOCK, 3), format!("{STOCK}.3"));
    }

    #[test]
    fn the_tag_is_url_safe_and_outside_the_stock_alphabet() {
        let tagged = tag_session_id(STOCK, 12);
        assert!(tagged.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        let stock_alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        assert!(STOCK.bytes().all(stock_alphabet));
        assert!(!stock_alphabet(TAG_SEPARATOR));
    }

    #[test]
    fn untagged_or_malformed_ids_are_not_routed() {
        for sid in [STOCK, "", ".3", "abc.", "abc.03", "abc.3x", "abc.-3", "abc.65536", "a.123456"]
        {
            let query = format!("EIO=4&transport=polling&sid={sid}");
            assert_eq!(session(query.as_bytes()), Some(Session::Untagged), "{sid:?}");
        }
    }

    #[test]
    fn only_engineio_requests_are_routed() {
        assert_eq!(session(b"sid=abc.1"), None, "not Engine.IO");
        assert_eq!(session(b""), None);
        assert_eq!(session(b"EIO=4&transport=polling&t=x"), Some(Session::New));
        assert_eq!(session(b"EIO=4&transport=websocket"), Some(Session::New));
        assert_eq!(session_owner(b"EIO&sid=abc.1"), Some(1));
        assert_eq!(session_owner(b"sid=abc.2&EIO=3&sid=abc.1"), Some(2), "the first sid counts");
        assert_eq!(session_owner(b"EIO=4&xsid=abc.1"), None);
    }

    #[test]
    fn escaped_ids_are_decoded() {
        assert_eq!(session_owner(b"EIO=4&sid=abc%2E7"), Some(7));
        assert_eq!(session_owner(b"EIO=4&sid=abc%2e7"), Some(7));
        assert_eq!(session_owner(b"EIO=4&sid=abc.%37"), Some(7));
        assert_eq!(session_owner(b"EIO=4&sid=abc%2"), None);
        assert_eq!(session_owner(b"EIO=4&sid=abc%zz.1"), Some(1));
        assert_eq!(session_owner(b"E%49O=4&sid=abc.1"), Some(1), "names are decoded too");
    }

    #[test]
    fn route_by_worker() {
        let slot = WorkerSlot { index: 1, count: 4 };
        let sid = |w| format!("EIO=4&transport=polling&sid={}", tag_session_id(STOCK, w));
        assert_eq!(slot.route(&request(&sid(1))), Route::Local);
        assert_eq!(slot.route(&request(&sid(0))), Route::Worker(0));
        assert_eq!(slot.route(&request(&sid(3))), Route::Worker(3));
        assert_eq!(slot.route(&request(&sid(4))), Route::UnknownWorker(4));
        assert_eq!(slot.route(&request(&format!("EIO=4&sid={STOCK}"))), Route::Local);
        assert_eq!(slot.route(&request("EIO=4&transport=polling&t=x")), Route::Local, "new");
        assert_eq!(slot.route(&request("x=1")), Route::Local);
    }
}
