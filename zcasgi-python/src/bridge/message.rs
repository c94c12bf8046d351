//! Reading the fields of the messages an application passes to ASGI `send()`.
//!
//! Missing optional fields take their ASGI defaults; a missing required field or a value of the
//! wrong type is a `ValueError` or `TypeError` raised in the application's `send()`.

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::buffer::bytes_like;

/// Header names and values, as ASGI passes them.
pub(super) type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// The message's `type`.
pub(super) fn message_type<'py>(message: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyString>> {
    let kind = message
        .get_item(intern!(message.py(), "type"))?
        .ok_or_else(|| PyValueError::new_err("ASGI message without 'type'"))?;
    kind.cast_into::<PyString>().map_err(|_| PyTypeError::new_err("'type' must be a str"))
}

/// The field `name`, unless it is missing or `None`.
pub(super) fn field<'py>(
    message: &Bound<'py, PyDict>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(message.get_item(name)?.filter(|v| !v.is_none()))
}

/// The `headers` field: an iterable of `(name, value)` byte pairs (none if missing).
pub(super) fn headers(message: &Bound<'_, PyDict>) -> PyResult<Headers> {
    let Some(h) = message.get_item(intern!(message.py(), "headers"))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in h.try_iter()? {
        let (name, value): (Vec<u8>, Vec<u8>) = item?.extract()?;
        out.push((name, value));
    }
    Ok(out)
}

/// `status` and `headers` of `http.response.start` or `websocket.http.response.start`.
pub(super) fn response_start(message: &Bound<'_, PyDict>) -> PyResult<(u16, Headers)> {
    let status: u16 = message
        .get_item(intern!(message.py(), "status"))?
        .ok_or_else(|| PyValueError::new_err("'status' is required"))?
        .extract()?;
    if !(100..=599).contains(&status) {
        return Err(PyValueError::new_err(format!("invalid HTTP status {status}")));
    }
    Ok((status, headers(message)?))
}

/// `body` (never copied if it is `bytes`) and `more_body` of `http.response.body` or
/// `websocket.http.response.body`.
pub(super) fn response_body(message: &Bound<'_, PyDict>) -> PyResult<(Bytes, bool)> {
    let py = message.py();
    let body = match field(message, intern!(py, "body"))? {
        Some(b) => bytes_like(&b).ok_or_else(|| PyTypeError::new_err("'body' must be bytes"))?,
        None => Bytes::new(),
    };
    let more = match message.get_item(intern!(py, "more_body"))? {
        Some(v) => v.is_truthy()?,
        None => false,
    };
    Ok((body, more))
}
