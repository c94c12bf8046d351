//! What an HTTP request to the Engine.IO endpoint asks for, decided from its method, query and
//! `Upgrade` header alone (no I/O, no session lookup).
//!
//! The rules are python-engineio's (`AsyncServer.handle_request`), so that a client sees the
//! same answers from zcasgi's Engine.IO as from the stock server: the query is read as
//! `parse_qs` reads it (first value of each name, `+` and `%XX` decoded), `transport` defaults
//! to `polling`, a request without `sid` must say `EIO=4`, and a refused request is a 400 whose
//! body says why, in python-engineio's words.

use std::borrow::Cow;

use super::session::Transport;

/// What an Engine.IO request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Open a session on `transport` (a GET without `sid`; for WebSocket, an upgrade request).
    Handshake(Transport),
    /// A long-polling GET of session `sid`.
    Poll(Cow<'a, str>),
    /// A long-polling POST of packets to session `sid`.
    Post(Cow<'a, str>),
    /// A WebSocket upgrade of session `sid` (the probe of a long-polling session).
    Upgrade(Cow<'a, str>),
}

/// An Engine.IO request refused before any session is looked at; answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `transport` is neither `polling` nor `websocket`, or not one this server allows.
    #[error("Invalid transport")]
    InvalidTransport,
    /// A request without `sid` that does not say `EIO=4`.
    #[error("The client is using an unsupported version of the Socket.IO or Engine.IO protocols")]
    UnsupportedVersion,
    /// A `transport=websocket` handshake that is not a WebSocket upgrade.
    #[error("Invalid websocket upgrade")]
    InvalidUpgrade,
    /// A POST without `sid`.
    #[error("Invalid session None")]
    MissingSession,
    /// A method other than GET and POST (OPTIONS is CORS's, answered before this).
    #[error("Method Not Found")]
    BadMethod,
    /// A JSONP request (`j=`), which zcasgi's Engine.IO does not serve.
    #[error("JSONP is not supported")]
    Jsonp,
}

/// The transports a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// Long-polling.
    pub polling: bool,
    /// WebSocket.
    pub websocket: bool,
}

impl Default for Transports {
    /// Both, as python-engineio.
    fn default() -> Self {
        Self { polling: true, websocket: true }
    }
}

/// The Engine.IO parameters of a request's query, read as Python's `parse_qs` reads it: the
/// first value of each name counts, `+` and `%XX` decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query<'a> {
    /// `EIO`: the protocol version (present, possibly empty, on every Engine.IO request).
    pub eio: Option<Cow<'a, str>>,
    /// `transport`.
    pub transport: Option<Cow<'a, str>>,
    /// `sid`: the session the request is for.
    pub sid: Option<Cow<'a, str>>,
    /// Whether `j` (JSONP) is present.
    pub jsonp: bool,
}

impl<'a> Query<'a> {
    /// The Engine.IO parameters of `query`.
    #[must_use]
    pub fn parse(query: &'a [u8]) -> Self {
        let mut q = Self::default();
        for (name, value) in form_urlencoded::parse(query) {
            match &*name {
                "EIO" if q.eio.is_none() => q.eio = Some(value),
                "transport" if q.transport.is_none() => q.transport = Some(value),
                "sid" if q.sid.is_none() => q.sid = Some(value),
                "j" => q.jsonp = true,
                _ => {}
            }
        }
        q
    }
}

/// What the Engine.IO request `method` `?query` (with the `Upgrade` header `upgrade`, if any)
/// asks for.
///
/// # Errors
/// [`RequestError`], in python-engineio's order of checks.
pub fn classify<'a>(
    method: &str,
    query: &'a [u8],
    upgrade: Option<&[u8]>,
    allowed: Transports,
) -> Result<Request<'a>, RequestError> {
    let Query { eio, transport, sid, jsonp } = Query::parse(query);
    let transport = match transport.as_deref().unwrap_or("polling") {
        "polling" if allowed.polling => Transport::Polling,
        "websocket" if allowed.websocket => Transport::WebSocket,
        _ => return Err(RequestError::InvalidTransport),
    };
    if sid.is_none() && eio.as_deref() != Some("4") {
        return Err(RequestError::UnsupportedVersion);
    }
    if jsonp {
        return Err(RequestError::Jsonp);
    }
    let websocket_upgrade = upgrade.is_some_and(|u| u.eq_ignore_ascii_case(b"websocket"));
    match (method, sid) {
        ("GET", None) => match transport {
            Transport::Polling => Ok(Request::Handshake(Transport::Polling)),
            Transport::WebSocket if websocket_upgrade => {
                Ok(Request::Handshake(Transport::WebSocket))
            }
            Transport::WebSocket => Err(RequestError::InvalidUpgrade),
        },
        ("GET", Some(sid)) => match transport {
            Transport::WebSocket if websocket_upgrade => Ok(Request::Upgrade(sid)),
            Transport::WebSocket => Err(RequestError::InvalidTransport),
            Transport::Polling => Ok(Request::Poll(sid)),
        },
        ("POST", Some(sid)) => Ok(Request::Post(sid)),
        ("POST", None) => Err(RequestError::MissingSession),
        _ => Err(RequestError::BadMethod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(query: &str) -> Result<Request<'_>, RequestError> {
        classify("GET", query.as_bytes(), None, Transports::default())
    }

    #[test]
    fn handshakes_need_eio_4() {
        assert_eq!(get("EIO=4&transport=polling&t=Nx"), Ok(Request::Handshake(Transport::Polling)));
        assert_eq!(get("EIO=4"), Ok(Request::Handshake(Transport::Polling)));
        assert_eq!(get("EIO=3&transport=polling"), Err(RequestError::UnsupportedVersion));
        assert_eq!(get("transport=polling"), Err(RequestError::UnsupportedVersion));
        assert_eq!(get("EIO=4&transport=flash"), Err(RequestError::InvalidTransport));
        let ws = classify(
            "GET",
            b"EIO=4&transport=websocket",
            Some(b"WebSocket"),
            Transports::default(),
        );
        assert_eq!(ws, Ok(Request::Handshake(Transport::WebSocket)));
        assert_eq!(get("EIO=4&transport=websocket"), Err(RequestError::InvalidUpgrade));
    }

    #[test]
    fn session_requests_name_their_sid() {
        assert_eq!(get("EIO=4&transport=polling&sid=abc.1"), Ok(Request::Poll("abc.1".into())));
        // As parse_qs: the first value counts, escapes and `+` are decoded.
        assert_eq!(get("sid=a%2Eb&sid=zz"), Ok(Request::Poll("a.b".into())));
        assert_eq!(get("sid=a+b"), Ok(Request::Poll("a b".into())));
        let post = classify("POST", b"EIO=4&transport=polling&sid=x", None, Transports::default());
        assert_eq!(post, Ok(Request::Post("x".into())));
        let up = classify(
            "GET",
            b"EIO=4&transport=websocket&sid=x",
            Some(b"websocket"),
            Transports::default(),
        );
        assert_eq!(up, Ok(Request::Upgrade("x".into())));
        assert_eq!(get("EIO=4&transport=websocket&sid=x"), Err(RequestError::InvalidTransport));
    }

    #[test]
    fn other_requests_are_refused_with_python_engineios_words() {
        let post = classify("POST", b"EIO=4", None, Transports::default());
        assert_eq!(post, Err(RequestError::MissingSession));
        assert_eq!(post.unwrap_err().to_string(), "Invalid session None");
        let put = classify("PUT", b"EIO=4&sid=x", None, Transports::default());
        assert_eq!(put, Err(RequestError::BadMethod));
        assert_eq!(get("EIO=4&j=0"), Err(RequestError::Jsonp));
        let polling_only = Transports { polling: true, websocket: false };
        let ws = classify("GET", b"EIO=4&transport=websocket", Some(b"websocket"), polling_only);
        assert_eq!(ws, Err(RequestError::InvalidTransport));
        assert_eq!(RequestError::InvalidTransport.to_string(), "Invalid transport");
    }
}
