//! `EngineIO`: a server's Engine.IO endpoint in Rust, as `zcasgi.socketio` drives it.
//!
//! The endpoint ([`zcasgi_core::engineio::endpoint`]) runs on the loop thread, fed by
//! [`crate::server::Core`] with the events of the connections to the Engine.IO path. Python
//! sees only sessions opening, messages and sessions ending, through three methods of the
//! handler object (the `zcasgi.socketio` adapter), and talks back through this class's methods.
//! A Rust borrow is never held while the handler runs, so the handler may call back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString};
use zcasgi_core::backend::{ConnId, ConnectInfo};
use zcasgi_core::engineio::cors::{AllowedOrigins, Cookie, Cors};
use zcasgi_core::engineio::endpoint::{
    Answered, AppEvent, Endpoint, EndpointConfig, Outgoing, Payload,
};
use zcasgi_core::engineio::request::Transports;
use zcasgi_core::engineio::session::{CloseReason, Transport};
use zcasgi_core::sticky;

use crate::access::{self, Kind, Outcome};
use crate::bridge::bytes_of;
use crate::timer::TIMER_SLACK;

/// What `Core(engineio=...)` takes: `(path, options, handler)`.
pub type EngineIoArg = (Option<String>, Py<PyDict>, Py<PyAny>);

/// A server's Engine.IO endpoint, its sessions served in Rust.
#[pyclass(module = "zcasgi._zcasgi", unsendable)]
pub struct EngineIO {
    endpoint: Endpoint,
    /// The path prefix routed here (`/socket.io/`), or `None` for every request.
    prefix: Option<String>,
    handler: Py<PyAny>,
    event_loop: Py<PyAny>,
    /// The armed loop timer: when it fires, and its handle.
    timer: Option<(Instant, Py<PyAny>)>,
    /// A `call_soon` of `_tick` is pending (events produced by a Python call wait for it).
    soon: bool,
    /// The access log (`zcasgi.access`), when on.
    access_log: Option<Py<PyAny>>,
    /// The scope of each request not answered yet, for its access line.
    access: HashMap<ConnId, (Py<PyDict>, Kind)>,
    answers: Vec<Answered>,
}

impl EngineIO {
    /// The endpoint of `(path, options, handler)`, in worker `worker` (its session ids tagged).
    ///
    /// # Errors
    /// `ValueError`/`TypeError` naming a bad option.
    pub fn new(
        py: Python<'_>,
        (path, options, handler): EngineIoArg,
        event_loop: Py<PyAny>,
        worker: Option<u16>,
        access_log: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let cfg = endpoint_config(options.bind(py))?;
        let mut sequence: u32 = 0;
        let new_sid = Box::new(move || {
            sequence = sequence.wrapping_add(1);
            let sid = random_sid(sequence);
            match worker {
                Some(index) => sticky::tag_session_id(&sid, index),
                None => sid,
            }
        });
        let mut endpoint = Endpoint::new(cfg, new_sid);
        if access_log.is_some() {
            endpoint.log_answers();
        }
        Ok(Self {
            endpoint,
            prefix: path,
            handler,
            event_loop,
            timer: None,
            soon: false,
            access_log,
            access: HashMap::new(),
            answers: Vec::new(),
        })
    }

    /// Whether a request for the (percent-decoded) `path` is the endpoint's, by
    /// engineio.ASGIApp's rule: the path with a trailing slash starts with the prefix.
    pub fn routes(&self, path: &str) -> bool {
        match &self.prefix {
            None => true,
            // `path` + "/" starts with the prefix (which ends with "/").
            Some(prefix) => {
                path.starts_with(prefix.as_str())
                    || (prefix.len() == path.len() + 1 && prefix.starts_with(path))
            }
        }
    }

    /// Whether requests are access-logged (then [`EngineIO::remember`] each one's scope).
    pub fn logs_access(&self) -> bool {
        self.access_log.is_some()
    }

    /// Keeps the scope of request `id` for its access line.
    pub fn remember(&mut self, id: ConnId, scope: Py<PyDict>, kind: Kind) {
        self.access.insert(id, (scope, kind));
    }

    /// Writes the access lines of the requests answered since the last call.
    fn log_answers(&mut self, py: Python<'_>) {
        let Some(logger) = &self.access_log else { return };
        self.endpoint.take_answers(&mut self.answers);
        for Answered { id, status } in self.answers.drain(..) {
            if let Some((scope, kind)) = self.access.remove(&id) {
                let outcome =
                    if status == 101 { Outcome::Accepted } else { Outcome::Status(status) };
                // A logging failure is Python logging's to report.
                let _ = access::write(logger.bind(py), scope.bind(py), kind, outcome);
            }
        }
    }

    /// Forgets the access scope of connection `id` (it ended, answered or not).
    pub fn forget(&mut self, id: ConnId) {
        self.access.remove(&id);
    }

    /// Whether connection `id` is the endpoint's.
    pub fn owns(&self, id: u64) -> bool {
        self.endpoint.owns(id)
    }

    /// Gives the endpoint what happened, then runs the handler for what it produced.
    ///
    /// `scope` builds the application's view of a handshake request.
    pub fn feed<'py>(
        slf: &Bound<'py, Self>,
        step: impl FnOnce(&mut Endpoint, Instant),
        scope: &mut dyn FnMut(&ConnectInfo) -> PyResult<Bound<'py, PyDict>>,
    ) -> PyResult<()> {
        let mut events = Vec::new();
        {
            let mut this = slf.borrow_mut();
            let endpoint = &mut this.endpoint;
            guard(slf.py(), (), || step(endpoint, Instant::now()));
            this.endpoint.take_events(&mut events);
            this.log_answers(slf.py());
        }
        let result = Self::run(slf, events, scope);
        Self::arm(slf)?;
        result
    }

    /// Runs the handler for `events`, in order; one failing handler call does not stop the rest.
    fn run<'py>(
        slf: &Bound<'py, Self>,
        events: Vec<AppEvent>,
        scope: &mut dyn FnMut(&ConnectInfo) -> PyResult<Bound<'py, PyDict>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let handler = slf.borrow().handler.clone_ref(py);
        let handler = handler.bind(py);
        let mut result = Ok(());
        for event in events {
            let step = match event {
                AppEvent::Connect { sid, info } => scope(&info).and_then(|scope| {
                    let answer =
                        handler.call_method1(intern!(py, "_zcasgi_connect"), (&sid, scope))?;
                    if !answer.is_none() {
                        let accepted = answer.is_truthy()?;
                        let mut this = slf.borrow_mut();
                        let endpoint = &mut this.endpoint;
                        guard(py, (), || endpoint.connected(&sid, accepted, Instant::now()));
                        this.log_answers(py);
                    }
                    Ok(())
                }),
                AppEvent::Message { sid, data } => {
                    let data = match &data {
                        Payload::Text(b) => {
                            PyString::new(py, &String::from_utf8_lossy(b)).into_any()
                        }
                        Payload::Binary(b) => PyBytes::new(py, b).into_any(),
                    };
                    handler.call_method1(intern!(py, "_zcasgi_message"), (&sid, data)).and_then(
                        |done| {
                            if done.is_truthy()? {
                                let endpoint = &mut slf.borrow_mut().endpoint;
                                guard(py, (), || endpoint.done(&sid));
                            }
                            Ok(())
                        },
                    )
                }
                AppEvent::Disconnect { sid, reason } => handler
                    .call_method1(intern!(py, "_zcasgi_disconnect"), (&sid, reason_name(reason)))
                    .map(drop),
            };
            if let Err(e) = step {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Arms the loop timer for the endpoint's next deadline, unless one fires in time for it.
    fn arm(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        let Some(due) = this.endpoint.deadline() else { return Ok(()) };
        if let Some((at, _)) = &this.timer {
            if *at <= due + TIMER_SLACK {
                return Ok(());
            }
        }
        if let Some((_, old)) = this.timer.take() {
            old.call_method0(py, intern!(py, "cancel"))?;
        }
        let at = due + TIMER_SLACK / 2;
        let delay = at.saturating_duration_since(Instant::now()).as_secs_f64();
        let tick = slf.getattr(intern!(py, "_timer"))?;
        let handle = this.event_loop.call_method1(py, intern!(py, "call_later"), (delay, tick))?;
        this.timer = Some((at, handle));
        Ok(())
    }

    /// Events a Python call produced (a client closed for its backlog) are run soon.
    fn after_call(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        this.log_answers(py);
        if this.soon || !this.endpoint.has_events() {
            return Ok(());
        }
        this.soon = true;
        let tick = slf.getattr(intern!(py, "_tick"))?;
        this.event_loop.call_method1(py, intern!(py, "call_soon"), (tick,))?;
        Ok(())
    }
}

#[pymethods]
impl EngineIO {
    /// Sends `data` (a text or binary message) to session `sid`; False if it is not open.
    fn send(slf: &Bound<'_, Self>, sid: &str, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        let message = outgoing(data)?;
        let sent = {
            let endpoint = &mut slf.borrow_mut().endpoint;
            guard(slf.py(), false, || endpoint.send(sid, &message, Instant::now()))
        };
        Self::after_call(slf)?;
        Ok(sent)
    }

    /// Sends `data` to every open session of `sids`, framed once; returns how many got it.
    fn broadcast(
        slf: &Bound<'_, Self>,
        sids: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let py = slf.py();
        let message = outgoing(data)?;
        let now = Instant::now();
        let sent = {
            let mut this = slf.borrow_mut();
            let mut sent = 0;
            if let Ok(list) = sids.cast::<PyList>() {
                for sid in list.iter() {
                    let sid = sid.cast_into::<PyString>()?;
                    let (endpoint, sid) = (&mut this.endpoint, sid.to_str()?);
                    sent += guard(py, 0, || endpoint.broadcast([sid], &message, now));
                }
            } else {
                for sid in sids.try_iter()? {
                    let sid = sid?.cast_into::<PyString>()?;
                    let (endpoint, sid) = (&mut this.endpoint, sid.to_str()?);
                    sent += guard(py, 0, || endpoint.broadcast([sid], &message, now));
                }
            }
            sent
        };
        Self::after_call(slf)?;
        Ok(sent)
    }

    /// Closes session `sid` (its client gets a close packet); no disconnect call comes back
    /// for it. False if it was not open.
    fn disconnect(slf: &Bound<'_, Self>, sid: &str) -> PyResult<bool> {
        let closed = {
            let endpoint = &mut slf.borrow_mut().endpoint;
            guard(slf.py(), false, || endpoint.disconnect(sid, Instant::now()))
        };
        Self::after_call(slf)?;
        Ok(closed)
    }

    /// The transport session `sid` runs on: `"polling"` or `"websocket"`.
    fn transport(&self, sid: &str) -> PyResult<&'static str> {
        match self.endpoint.transport(sid) {
            Some(Transport::Polling) => Ok("polling"),
            Some(Transport::WebSocket) => Ok("websocket"),
            None => Err(PyKeyError::new_err(sid.to_owned())),
        }
    }

    /// The handler is done with the oldest message of `sid` it answered False for.
    fn done(&mut self, py: Python<'_>, sid: &str) {
        let endpoint = &mut self.endpoint;
        guard(py, (), || endpoint.done(sid));
    }

    /// The handler's later answer to a connect it answered None for.
    fn connected(slf: &Bound<'_, Self>, sid: &str, accepted: bool) -> PyResult<()> {
        {
            let endpoint = &mut slf.borrow_mut().endpoint;
            guard(slf.py(), (), || endpoint.connected(sid, accepted, Instant::now()));
        }
        Self::after_call(slf)?;
        Self::arm(slf)
    }

    /// Whether session `sid` is open.
    fn is_open(&self, sid: &str) -> bool {
        self.endpoint.is_open(sid)
    }

    /// Number of sessions.
    fn __len__(&self) -> usize {
        self.endpoint.len()
    }

    /// Runs the heartbeats due, and the events pending (`call_soon` after a Python call).
    fn _tick(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.borrow_mut().soon = false;
        Self::feed(slf, Endpoint::on_tick, &mut |_| {
            Err(PyValueError::new_err("a handshake outside a request"))
        })
    }

    /// The loop timer's callback: the timer is spent (a loop may run it a little before its
    /// time: the tick then finds nothing due, and the timer is armed again).
    fn _timer(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.borrow_mut().timer = None;
        Self::_tick(slf)
    }
}

/// Runs `f` (a step of the endpoint); a panic in it is logged at `zcasgi` and gives `default`,
/// so that no Rust panic reaches Python.
fn guard<R>(py: Python<'_>, default: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let logged = py.import("logging").and_then(|logging| {
                let logger = logging.call_method1("getLogger", ("zcasgi",))?;
                logger.call_method1("error", ("Engine.IO endpoint panicked: %s", what))
            });
            if let Err(e) = logged {
                e.write_unraisable(py, None);
            }
            default
        }
    }
}

/// What an application's message is on the wire, from a `str` or `bytes` (shared, not copied).
fn outgoing(data: &Bound<'_, PyAny>) -> PyResult<Outgoing> {
    if let Ok(text) = data.cast::<PyString>() {
        return Ok(Outgoing::text(text.to_str()?));
    }
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(Outgoing::binary(bytes_of(bytes)));
    }
    match data.extract::<Vec<u8>>() {
        Ok(bytes) => Ok(Outgoing::binary(Bytes::from(bytes))),
        Err(_) => Err(PyTypeError::new_err(format!(
            "an Engine.IO message is str or bytes, not {}",
            data.get_type().name()?
        ))),
    }
}

/// python-engineio's name for why a session ended (`engineio.Server.reason`).
fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::ClientClose => "client disconnect",
        CloseReason::PingTimeout => "ping timeout",
        CloseReason::ServerClose => "server disconnect",
        CloseReason::TransportClose => "transport close",
        CloseReason::Backlog | CloseReason::ProtocolError => "transport error",
    }
}

/// A new session id: 12 random bytes and a sequence number, URL-safe base64 (as python-engineio
/// makes them, in `[A-Za-z0-9_-]`).
fn random_sid(sequence: u32) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut raw = [0u8; 15];
    fill_random(&mut raw[..12]);
    raw[12..].copy_from_slice(&sequence.to_be_bytes()[1..]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Fills `buf` from the kernel's CSPRNG.
fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        match usize::try_from(n) {
            Ok(n) => filled += n,
            Err(_) => assert!(
                std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted,
                "getrandom failed: {}",
                std::io::Error::last_os_error()
            ),
        }
    }
}

/// Reads the options dict the `zcasgi.socketio` adapter gives (see the module doc).
fn endpoint_config(options: &Bound<'_, PyDict>) -> PyResult<EndpointConfig> {
    let py = options.py();
    let mut cfg = EndpointConfig::default();
    let seconds = |name: &str, default: Duration| -> PyResult<Duration> {
        match options.get_item(name)? {
            None => Ok(default),
            Some(v) => {
                let secs: f64 = v.extract()?;
                Duration::try_from_secs_f64(secs).map_err(|_| {
                    PyValueError::new_err(format!(
                        "{name} must be a non-negative number of seconds"
                    ))
                })
            }
        }
    };
    cfg.session.ping_interval = seconds("ping_interval", cfg.session.ping_interval)?;
    cfg.session.ping_grace = seconds("ping_grace", cfg.session.ping_grace)?;
    cfg.session.ping_timeout = seconds("ping_timeout", cfg.session.ping_timeout)?;
    if let Some(v) = options.get_item("max_http_buffer_size")? {
        cfg.session.max_payload = v.extract()?;
    }
    if let Some(v) = options.get_item("max_queued_bytes")? {
        cfg.session.max_queued_bytes = v.extract()?;
    }
    if let Some(v) = options.get_item("allow_upgrades")? {
        cfg.session.allow_upgrades = v.extract()?;
    }
    if let Some(v) = options.get_item("transports")? {
        let names: Vec<String> = v.extract()?;
        let mut t = Transports { polling: false, websocket: false };
        for name in &names {
            match name.as_str() {
                "polling" => t.polling = true,
                "websocket" => t.websocket = true,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "transports: {other:?} is not 'polling' or 'websocket'"
                    )))
                }
            }
        }
        cfg.transports = t;
    }
    let credentials = match options.get_item("cors_credentials")? {
        Some(v) => v.extract()?,
        None => true,
    };
    let origins = match options.get_item("cors_allowed_origins")? {
        None => AllowedOrigins::SameOrigin,
        Some(v) if v.is_none() => AllowedOrigins::SameOrigin,
        Some(v) => {
            if let Ok(s) = v.cast::<PyString>() {
                AllowedOrigins::from_origin(s.to_str()?)
            } else {
                let list: Vec<String> = v.extract().map_err(|_| {
                    PyValueError::new_err(
                        "cors_allowed_origins must be None, '*', a string or a list of strings",
                    )
                })?;
                AllowedOrigins::from_origins(list)
            }
        }
    };
    cfg.cors = Cors { origins, credentials };
    cfg.cookie = match options.get_item("cookie")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(cookie(py, &v)?),
    };
    Ok(cfg)
}

/// python-engineio's `cookie` option: a name, or a dict of `name` and attributes (a value of
/// True is a bare flag).
fn cookie(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Cookie> {
    if let Ok(name) = v.cast::<PyString>() {
        return Ok(Cookie::named(name.to_str()?));
    }
    let dict = v
        .cast::<PyDict>()
        .map_err(|_| PyValueError::new_err("cookie must be None, a string or a dict"))?;
    let mut name = String::from(Cookie::DEFAULT_NAME);
    let mut attributes = Vec::new();
    for (key, value) in dict.iter() {
        let key: String = key.extract()?;
        if key == "name" {
            name = value.extract()?;
        } else if value.is(PyBool::new(py, true)) {
            attributes.push((key, None));
        } else {
            let value: String = value.str()?.extract()?;
            attributes.push((key, Some(value)));
        }
    }
    Ok(Cookie::new(name, attributes))
}
