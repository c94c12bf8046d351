//! The Python exceptions of zcasgi and the single mapping from Rust errors to them.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use zcasgi_core::{ConfigError, HandshakeError, InvalidState, ProtocolError};

/// The exception classes, named as Python users see them (`zcasgi.ProtocolError`, ...).
mod classes {
    use pyo3::exceptions::{PyException, PyOSError};

    pyo3::create_exception!(
        zcasgi,
        ZcasgiError,
        PyException,
        "Base class of the errors zcasgi raises."
    );
    pyo3::create_exception!(
        zcasgi,
        ProtocolError,
        ZcasgiError,
        "The peer broke RFC 6455; `close_code` is the code the connection is failed with."
    );
    pyo3::create_exception!(
        zcasgi,
        HandshakeError,
        ZcasgiError,
        "A malformed or unsupported opening handshake; `status` is the HTTP status to answer."
    );
    pyo3::create_exception!(
        zcasgi,
        ClientDisconnected,
        PyOSError,
        "The client has gone: the message could not be sent."
    );
}

pub use classes::{ClientDisconnected, ZcasgiError};
use classes::{HandshakeError as HandshakeFailed, ProtocolError as ProtocolViolation};

/// Converts a protocol error into `zcasgi.ProtocolError` with its `close_code`.
pub fn protocol_error(py: Python<'_>, err: &ProtocolError) -> PyErr {
    let e = ProtocolViolation::new_err(err.to_string());
    let _ = e.value(py).setattr("close_code", err.close_code());
    e
}

/// Converts a handshake error into `zcasgi.HandshakeError` with its `status`.
pub fn handshake_error(py: Python<'_>, err: &HandshakeError) -> PyErr {
    let e = HandshakeFailed::new_err(err.to_string());
    let _ = e.value(py).setattr("status", err.status());
    e
}

/// Converts local API misuse into `ValueError` (bad arguments) or `ClientDisconnected`.
pub fn invalid_state(err: InvalidState) -> PyErr {
    match err {
        InvalidState::Closed => ClientDisconnected::new_err(err.to_string()),
        InvalidState::UnsendableCloseCode(_)
        | InvalidState::CloseReasonTooLong
        | InvalidState::PingTooLong(_) => PyValueError::new_err(err.to_string()),
    }
}

/// Converts a malformed Engine.IO packet or payload into `ValueError` (as python-engineio does).
pub fn engineio_error(err: &zcasgi_core::engineio::EngineIoError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Converts a configuration the server cannot run with into `ValueError` naming the option.
pub fn config_error(err: ConfigError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Converts TLS options the server cannot use into `ValueError` naming the option.
pub fn tls_error(err: &zcasgi_transport::tls::TlsError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Adds the exception classes to the module under their public names.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ZcasgiError", py.get_type::<ZcasgiError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolViolation>())?;
    m.add("HandshakeError", py.get_type::<HandshakeFailed>())?;
    m.add("ClientDisconnected", py.get_type::<ClientDisconnected>())?;
    Ok(())
}
