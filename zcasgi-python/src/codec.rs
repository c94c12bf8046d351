//! `zcasgi.codec`: thin Python bindings over the sans-I/O core, for tests and tools.
//!
//! Everything here converts arguments, calls one `zcasgi_core` function or method, and converts
//! the result back. The protocol rules live in the core; a rule found missing here belongs there.
//! The hypothesis suite (`tests/test_codec_properties.py`) drives the core through these
//! functions, so they must stay faithful: no extra checks, no shortcuts.
//!
//! Docstrings for Python users are in `python/zcasgi/_zcasgi.pyi`.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pyo3::exceptions::{PyOverflowError, PySystemError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use zcasgi_core::engineio::{self, PacketType, PayloadLimits};
use zcasgi_core::frame::{self, FrameHeader, HeaderBytes, OpCode};
use zcasgi_core::handshake::{self, HandshakeConfig};
use zcasgi_core::protocol::{self, Event, Message, ProtocolConfig};
use zcasgi_core::utf8;
use zcasgi_core::ProtocolError;

use crate::errors::{engineio_error, handshake_error, invalid_state, protocol_error};

/// Adds the codec functions and classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(apply_mask, m)?)?;
    m.add_function(wrap_pyfunction!(validate_utf8_stream, m)?)?;
    m.add_function(wrap_pyfunction!(accept_key, m)?)?;
    m.add_function(wrap_pyfunction!(parse_handshake, m)?)?;
    m.add_function(wrap_pyfunction!(eio_decode_packet, m)?)?;
    m.add_function(wrap_pyfunction!(eio_encode_packet, m)?)?;
    m.add_function(wrap_pyfunction!(eio_decode_payload, m)?)?;
    m.add_function(wrap_pyfunction!(eio_encode_payload, m)?)?;
    m.add_class::<Frame>()?;
    m.add_class::<FrameDecoder>()?;
    m.add_class::<Connection>()?;
    m.add_class::<Utf8Validator>()?;
    Ok(())
}

/// The Python integer `value` if it is in `0..=max`; `ValueError` with `message` if it is not
/// (however large or negative), `TypeError` if it is not an integer.
fn int_in<T: TryFrom<u64> + PartialOrd>(
    value: &Bound<'_, PyAny>,
    max: T,
    message: impl FnOnce() -> String,
) -> PyResult<T> {
    match value.extract::<u64>() {
        Ok(v) => T::try_from(v)
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| PyValueError::new_err(message())),
        Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => {
            Err(PyValueError::new_err(message()))
        }
        Err(e) => Err(e),
    }
}

// Argument converters (`#[pyo3(from_py_with = ...)]`): out-of-range integers are `ValueError`.

fn opcode_arg(value: &Bound<'_, PyAny>) -> PyResult<u8> {
    int_in(value, 0x0f, || format!("opcode must be in 0..=15, not {value}"))
}

fn rsv_arg(value: &Bound<'_, PyAny>) -> PyResult<u8> {
    int_in(value, 0b111, || format!("rsv must be in 0..=7, not {value}"))
}

fn offset_arg(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    int_in(value, usize::MAX, || format!("offset must be >= 0, not {value}"))
}

fn max_size_arg(value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    int_in(value, u64::MAX, || format!("max_size must be >= 0, not {value}")).map(Some)
}

fn max_message_size_arg(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    int_in(value, usize::MAX, || format!("max_message_size must be >= 0, not {value}"))
}

fn close_code_arg(value: &Bound<'_, PyAny>) -> PyResult<u16> {
    int_in(value, u16::MAX, || format!("close code {value} may not be sent"))
}

/// A 4-byte masking key, or `ValueError`.
fn mask_key(mask: &[u8]) -> PyResult<[u8; 4]> {
    <[u8; 4]>::try_from(mask).map_err(|_| {
        PyValueError::new_err(format!("mask must be exactly 4 bytes, not {}", mask.len()))
    })
}

/// Encodes one frame: header, then the payload (masked with `mask` when given).
#[pyfunction]
#[pyo3(signature = (opcode, payload, *, fin = true, rsv = 0, mask = None))]
fn encode_frame<'py>(
    py: Python<'py>,
    #[pyo3(from_py_with = opcode_arg)] opcode: u8,
    payload: &[u8],
    fin: bool,
    #[pyo3(from_py_with = rsv_arg)] rsv: u8,
    mask: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let opcode = OpCode::from(opcode);
    let mask = mask.map(mask_key).transpose()?;
    let header = HeaderBytes::new(&FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    });
    let head = header.as_slice();
    PyBytes::new_with(py, head.len() + payload.len(), |out| {
        let (h, body) = out.split_at_mut(head.len());
        h.copy_from_slice(head);
        match mask {
            Some(key) => frame::copy_unmasked(body, payload, key, 0),
            None => body.copy_from_slice(payload),
        }
        Ok(())
    })
}

/// XORs `data` with `mask` as if `data` started `offset` bytes into a masked payload.
#[pyfunction]
#[pyo3(signature = (data, mask, offset = 0))]
fn apply_mask<'py>(
    py: Python<'py>,
    data: &[u8],
    mask: &[u8],
    #[pyo3(from_py_with = offset_arg)] offset: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let key = mask_key(mask)?;
    PyBytes::new_with(py, data.len(), |out| {
        frame::copy_unmasked(out, data, key, offset);
        Ok(())
    })
}

/// Whether the concatenation of `chunks` is valid UTF-8, validated chunk by chunk.
#[pyfunction]
fn validate_utf8_stream(chunks: &Bound<'_, PyAny>) -> PyResult<bool> {
    let mut v = utf8::Utf8Validator::new();
    for chunk in chunks.try_iter()? {
        let chunk: PyBackedBytes = chunk?.extract()?;
        if v.feed(&chunk).is_err() {
            return Ok(false);
        }
    }
    Ok(v.finish().is_ok())
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
#[pyfunction]
fn accept_key(key: &[u8]) -> String {
    handshake::accept_key(key)
}

/// Parses and validates an opening handshake request; `None` until the head is complete.
#[pyfunction]
fn parse_handshake<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyDict>>> {
    let parsed = handshake::parse_request(data, &HandshakeConfig::default())
        .map_err(|e| handshake_error(py, &e))?;
    let Some((req, head_len)) = parsed else { return Ok(None) };
    let upgrade = handshake::validate_upgrade(&req).map_err(|e| handshake_error(py, &e))?;
    let headers = req
        .headers
        .iter()
        .map(|(n, v)| (PyBytes::new(py, n), PyBytes::new(py, v)).into_pyobject(py))
        .collect::<PyResult<Vec<_>>>()?;
    let d = PyDict::new(py);
    d.set_item("method", &req.method)?;
    d.set_item("http_version", format!("1.{}", req.http_minor))?;
    d.set_item("path", req.path())?;
    d.set_item("raw_path", PyBytes::new(py, &req.raw_path))?;
    d.set_item("query_string", PyBytes::new(py, &req.query_string))?;
    d.set_item("headers", headers)?;
    d.set_item("subprotocols", upgrade.subprotocols)?;
    d.set_item("extensions", upgrade.extensions)?;
    d.set_item("accept_key", upgrade.accept_key)?;
    d.set_item("head_length", head_len)?;
    Ok(Some(d))
}

/// One decoded frame, payload unmasked.
#[pyclass(frozen, module = "zcasgi._zcasgi")]
#[derive(Debug)]
pub struct Frame {
    #[pyo3(get)]
    fin: bool,
    #[pyo3(get)]
    rsv: u8,
    #[pyo3(get)]
    opcode: u8,
    #[pyo3(get)]
    masked: bool,
    #[pyo3(get)]
    payload: Py<PyBytes>,
}

#[pymethods]
impl Frame {
    #[new]
    #[pyo3(signature = (opcode, payload, *, fin = true, rsv = 0, masked = false))]
    fn new(
        #[pyo3(from_py_with = opcode_arg)] opcode: u8,
        payload: Py<PyBytes>,
        fin: bool,
        #[pyo3(from_py_with = rsv_arg)] rsv: u8,
        masked: bool,
    ) -> Self {
        Self { fin, rsv, opcode, masked, payload }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Frame(opcode={}, payload={}, fin={}, rsv={}, masked={})",
            self.opcode,
            self.payload.bind(py).repr()?,
            if self.fin { "True" } else { "False" },
            self.rsv,
            if self.masked { "True" } else { "False" },
        ))
    }

    fn __eq__(&self, py: Python<'_>, other: PyRef<'_, Self>) -> bool {
        (self.fin, self.rsv, self.opcode, self.masked)
            == (other.fin, other.rsv, other.opcode, other.masked)
            && self.payload.bind(py).as_bytes() == other.payload.bind(py).as_bytes()
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        (self.fin, self.rsv, self.opcode, self.masked, self.payload.bind(py))
            .into_pyobject(py)?
            .hash()
    }
}

/// A streaming frame decoder: header-level rules only (RFC 6455 §5.2 lengths), no state machine.
///
/// After an error the decoder is stopped: a `feed` returns the frames it completed before the bad
/// header (if any), and the next `feed`, and every one after it, raises the error.
#[pyclass(module = "zcasgi._zcasgi")]
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_size: Option<u64>,
    /// The error that stopped this decoder; every `feed` from now on raises it.
    failed: Option<ProtocolError>,
}

#[pymethods]
impl FrameDecoder {
    #[new]
    #[pyo3(signature = (max_size = None))]
    fn new(#[pyo3(from_py_with = max_size_arg)] max_size: Option<u64>) -> Self {
        Self { buf: Vec::new(), max_size, failed: None }
    }

    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        if let Some(err) = &self.failed {
            return Err(protocol_error(py, err));
        }
        self.buf.extend_from_slice(data);
        let frames = PyList::empty(py);
        let mut pos = 0;
        let result = loop {
            let rest = &self.buf[pos..];
            let (header, n) = match frame::decode_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if let Some(max) = self.max_size.filter(|&max| header.payload_len > max) {
                break Err(ProtocolError::MessageTooBig { size: header.payload_len, max });
            }
            // decode_header guarantees the length fits in 63 bits.
            let len = header.payload_len;
            if ((rest.len() - n) as u64) < len {
                break Ok(());
            }
            let src = &rest[n..n + len as usize];
            let payload = PyBytes::new_with(py, src.len(), |out| {
                match header.mask {
                    Some(key) => frame::copy_unmasked(out, src, key, 0),
                    None => out.copy_from_slice(src),
                }
                Ok(())
            })?;
            let f = Frame {
                fin: header.fin,
                rsv: header.rsv,
                opcode: u8::from(header.opcode),
                masked: header.mask.is_some(),
                payload: payload.unbind(),
            };
            frames.append(Bound::new(py, f)?)?;
            pos += n + len as usize;
        };
        self.buf.drain(..pos);
        match result {
            Ok(()) => Ok(frames),
            Err(e) => {
                // Frames that came before the bad header are not lost: they are returned now and
                // the error is raised by the next call.
                self.buf = Vec::new();
                let py_err = protocol_error(py, &e);
                self.failed = Some(e);
                if frames.is_empty() {
                    Err(py_err)
                } else {
                    Ok(frames)
                }
            }
        }
    }

    #[getter]
    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Maps Python floats (seconds on any monotonic timeline) to `Instant`s and back.
///
/// Float `0.0` is a fixed `Instant` 2^32 s after the connection was created, so any float within
/// ±136 years of zero (every `time.monotonic()` reading, and test values like `0.0` or `-5.0`)
/// has an `Instant`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
}

impl Clock {
    const SHIFT: Duration = Duration::from_secs(1 << 32);

    fn new() -> Self {
        let now = Instant::now();
        Self { base: now.checked_add(Self::SHIFT).unwrap_or(now) }
    }

    fn to_instant(self, t: f64) -> PyResult<Instant> {
        let out_of_range = || PyValueError::new_err(format!("now={t} is out of range"));
        let d = Duration::try_from_secs_f64(t.abs()).map_err(|_| out_of_range())?;
        if t >= 0.0 { self.base.checked_add(d) } else { self.base.checked_sub(d) }
            .ok_or_else(out_of_range)
    }

    fn to_float(self, i: Instant) -> f64 {
        match i.checked_duration_since(self.base) {
            Some(d) => d.as_secs_f64(),
            None => -(self.base - i).as_secs_f64(),
        }
    }
}

/// Seconds as a `Duration`, or `ValueError` naming `what`.
fn seconds(value: f64, what: &str, allow_zero: bool) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).ok().filter(|d| allow_zero || !d.is_zero()).ok_or_else(
        || {
            let bound = if allow_zero { ">= 0" } else { "> 0" };
            PyValueError::new_err(format!("{what} must be a finite number {bound}, not {value}"))
        },
    )
}

/// A server-side WebSocket connection after the handshake: `zcasgi_core::protocol::Connection`.
#[pyclass(module = "zcasgi._zcasgi")]
#[derive(Debug)]
pub struct Connection {
    inner: protocol::Connection,
    clock: Clock,
}

#[pymethods]
impl Connection {
    #[new]
    #[pyo3(signature = (
        max_message_size = 16_777_216,
        ping_interval = None,
        ping_timeout = None,
        close_timeout = 10.0,
    ))]
    fn new(
        #[pyo3(from_py_with = max_message_size_arg)] max_message_size: usize,
        ping_interval: Option<f64>,
        ping_timeout: Option<f64>,
        close_timeout: f64,
    ) -> PyResult<Self> {
        let config = ProtocolConfig {
            max_message_size,
            ping_interval: ping_interval.map(|s| seconds(s, "ping_interval", false)).transpose()?,
            ping_timeout: ping_timeout.map(|s| seconds(s, "ping_timeout", true)).transpose()?,
            close_timeout: seconds(close_timeout, "close_timeout", true)?,
            // permessage-deflate is not negotiated here: there is no handshake.
            ..ProtocolConfig::default()
        };
        Ok(Self { inner: protocol::Connection::new(config), clock: Clock::new() })
    }

    fn receive_data(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let mut input = BytesMut::from(data);
        self.inner.receive_data(&mut input).map_err(|e| protocol_error(py, &e))
    }

    fn receive_eof(&mut self) {
        self.inner.receive_eof();
    }

    fn events<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        while let Some(event) = self.inner.next_event() {
            let tuple = match event {
                Event::Message(Message::Text(b)) => {
                    // The core guarantees valid UTF-8; decoding again keeps this binding safe.
                    let s = std::str::from_utf8(&b).map_err(|e| {
                        PySystemError::new_err(format!("core returned bad text: {e}"))
                    })?;
                    PyTuple::new(
                        py,
                        [PyString::new(py, "text").into_any(), PyString::new(py, s).into_any()],
                    )?
                }
                Event::Message(Message::Binary(b)) => event_tuple(py, "binary", &b)?,
                Event::Ping(b) => event_tuple(py, "ping", &b)?,
                Event::Pong(b) => event_tuple(py, "pong", &b)?,
                Event::Closed { code, reason } => ("closed", code, reason).into_pyobject(py)?,
            };
            list.append(tuple)?;
        }
        Ok(list)
    }

    fn send_text(&mut self, data: &str) -> PyResult<()> {
        let payload = bytes::Bytes::copy_from_slice(data.as_bytes());
        self.inner.send_message(true, payload, 0).map_err(invalid_state)
    }

    fn send_binary(&mut self, data: &[u8]) -> PyResult<()> {
        let payload = bytes::Bytes::copy_from_slice(data);
        self.inner.send_message(false, payload, 0).map_err(invalid_state)
    }

    #[pyo3(signature = (data = b"".as_slice()), text_signature = "($self, data=b'')")]
    fn send_ping(&mut self, data: &[u8]) -> PyResult<()> {
        self.inner.send_ping(bytes::Bytes::copy_from_slice(data)).map_err(invalid_state)
    }

    #[pyo3(signature = (code = 1000, reason = ""))]
    fn send_close(
        &mut self,
        #[pyo3(from_py_with = close_code_arg)] code: u16,
        reason: &str,
    ) -> PyResult<()> {
        self.inner.send_close(code, reason).map_err(invalid_state)
    }

    fn data_to_send<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let q = self.inner.out_queue();
        let total = q.len();
        PyBytes::new_with(py, total, |out| {
            let mut filled = 0;
            while filled < total {
                let copied = {
                    let mut slices = [std::io::IoSlice::new(&[]); 64];
                    let n = q.io_slices(&mut slices);
                    let mut copied = 0;
                    for s in &slices[..n] {
                        out[filled + copied..filled + copied + s.len()].copy_from_slice(s);
                        copied += s.len();
                    }
                    copied
                };
                if copied == 0 {
                    return Err(PySystemError::new_err("out queue yielded no bytes"));
                }
                q.advance(copied);
                filled += copied;
            }
            Ok(())
        })
    }

    fn on_tick(&mut self, now: f64) -> PyResult<Option<f64>> {
        let now = self.clock.to_instant(now)?;
        Ok(self.inner.on_tick(now).map(|at| self.clock.to_float(at)))
    }

    #[getter]
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }

    #[getter]
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

fn event_tuple<'py>(py: Python<'py>, kind: &str, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [PyString::new(py, kind).into_any(), PyBytes::new(py, data).into_any()])
}

/// Incremental UTF-8 validation across chunks: `zcasgi_core::utf8::Utf8Validator`.
#[pyclass(module = "zcasgi._zcasgi")]
#[derive(Debug, Default)]
pub struct Utf8Validator {
    inner: utf8::Utf8Validator,
    failed: bool,
}

#[pymethods]
impl Utf8Validator {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn feed(&mut self, data: &[u8]) -> bool {
        self.failed = self.failed || self.inner.feed(data).is_err();
        !self.failed
    }

    fn finish(&self) -> bool {
        !self.failed && self.inner.finish().is_ok()
    }
}

// --- Engine.IO (zcasgi_core::engineio) ---

/// A packet as Python sees it: `(type, data)`, data `str` or (a binary message) `bytes`.
fn eio_packet_to_py<'py>(
    py: Python<'py>,
    packet: &engineio::Packet<'_>,
) -> PyResult<Bound<'py, PyTuple>> {
    let data: Bound<'py, PyAny> = match &packet.data {
        engineio::Data::Text(text) => PyString::new(py, text).into_any(),
        engineio::Data::Binary(bytes) => PyBytes::new(py, bytes).into_any(),
    };
    PyTuple::new(py, [(packet.kind as u8).into_pyobject(py)?.into_any(), data])
}

/// A packet from Python's `(type, data)`.
fn eio_packet_from_py<'a>(
    kind: &Bound<'_, PyAny>,
    data: &'a Bound<'_, PyAny>,
) -> PyResult<engineio::Packet<'a>> {
    let digit = int_in(kind, 6u8, || format!("packet type must be in 0..=6, not {kind}"))?;
    let kind =
        PacketType::from_digit(b'0' + digit).ok_or_else(|| PyValueError::new_err("packet type"))?;
    if let Ok(text) = data.cast::<PyString>() {
        return Ok(engineio::Packet::text(kind, text.to_cow()?.into_owned()));
    }
    let bytes = data.cast::<PyBytes>()?;
    if kind != PacketType::Message {
        return Err(PyValueError::new_err("binary packets can only be of type MESSAGE (4)"));
    }
    Ok(engineio::Packet::binary(bytes.as_bytes()))
}

/// The Engine.IO packet a WebSocket frame carries (`str`: a text frame, `bytes`: binary).
#[pyfunction]
fn eio_decode_packet<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    if let Ok(text) = frame.cast::<PyString>() {
        let text = text.to_cow()?;
        let packet = engineio::Packet::decode_text(&text, false).map_err(|e| engineio_error(&e))?;
        return eio_packet_to_py(py, &packet);
    }
    let bytes = frame.cast::<PyBytes>()?;
    eio_packet_to_py(py, &engineio::Packet::decode_binary(bytes.as_bytes()))
}

/// The WebSocket frame payload of an Engine.IO packet: `str` for text, `bytes` for binary.
#[pyfunction]
fn eio_encode_packet<'py>(
    py: Python<'py>,
    kind: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let packet = eio_packet_from_py(kind, data)?;
    let mut out = Vec::new();
    if packet.encode_websocket(&mut out) {
        let text = String::from_utf8(out)
            .map_err(|_| PySystemError::new_err("text packet is not UTF-8"))?;
        Ok(PyString::new(py, &text).into_any())
    } else {
        Ok(PyBytes::new(py, &out).into_any())
    }
}

/// The packets of a long-polling request body, under `max_bytes` and `max_packets`.
#[pyfunction]
#[pyo3(signature = (body, *, max_bytes = 1_000_000, max_packets = 16))]
fn eio_decode_payload<'py>(
    py: Python<'py>,
    body: &[u8],
    max_bytes: usize,
    max_packets: usize,
) -> PyResult<Bound<'py, PyList>> {
    let packets = engineio::decode_payload(body, PayloadLimits { max_bytes, max_packets })
        .map_err(|e| engineio_error(&e))?;
    let items = packets.iter().map(|p| eio_packet_to_py(py, p)).collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// A long-polling response body of `packets`, each `(type, data)`.
#[pyfunction]
fn eio_encode_payload(packets: &Bound<'_, PyAny>) -> PyResult<String> {
    let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = packets.extract()?;
    let decoded =
        items.iter().map(|(k, d)| eio_packet_from_py(k, d)).collect::<PyResult<Vec<_>>>()?;
    let mut out = String::new();
    engineio::encode_payload(&decoded, &mut out);
    Ok(out)
}
