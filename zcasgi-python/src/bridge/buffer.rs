//! Zero-copy payloads: a Python `bytes` or `str` lent to the I/O threads inside a [`Bytes`].
//!
//! The [`Bytes`] keeps a reference to the Python object until the last slice of it is dropped
//! (after the socket write), and points straight into the object's immutable buffer: a payload
//! the application sends is never copied on its way to the socket.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// A Python `bytes` or `str` whose (immutable) buffer is lent to the I/O thread.
struct PyBuffer {
    _owner: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer refers to the immutable buffer of a `bytes` object or the cached UTF-8
// buffer of a `str`, which live as long as the object; `_owner` keeps the object alive, and
// nothing writes to the buffer. Dropping a `Py` off the GIL defers the decref to PyO3's pool.
unsafe impl Send for PyBuffer {}

impl AsRef<[u8]> for PyBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: the buffer is alive and immutable while `self` is.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Wraps `bytes` without copying it.
pub(crate) fn bytes_of(obj: &Bound<'_, PyBytes>) -> Bytes {
    let data = obj.as_bytes();
    if data.is_empty() {
        return Bytes::new();
    }
    Bytes::from_owner(PyBuffer {
        ptr: data.as_ptr(),
        len: data.len(),
        _owner: obj.clone().into_any().unbind(),
    })
}

/// Wraps the UTF-8 buffer of a `str` without copying it.
pub(super) fn bytes_of_str(obj: &Bound<'_, PyString>) -> PyResult<Bytes> {
    let s = obj.to_str()?;
    if s.is_empty() {
        return Ok(Bytes::new());
    }
    Ok(Bytes::from_owner(PyBuffer {
        ptr: s.as_ptr(),
        len: s.len(),
        _owner: obj.clone().into_any().unbind(),
    }))
}

/// Wraps `bytes` without copying it; copies other bytes-like objects (`bytearray`,
/// `memoryview`: mutable, so they cannot be lent).
pub(super) fn bytes_like(obj: &Bound<'_, PyAny>) -> Option<Bytes> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Some(bytes_of(b)),
        Err(_) => obj.extract::<Vec<u8>>().ok().map(Bytes::from),
    }
}
