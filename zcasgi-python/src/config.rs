//! Where configuration crosses into Rust: a `zcasgi.Config` read into a [`ServerConfig`].
//!
//! Each field of [`ServerConfig`] is read from the `zcasgi.Config` attribute of the same name,
//! in one place ([`extract`]); the defaults Python shows and the documented ranges it checks
//! come from the core too ([`server_defaults`], [`server_limits`]), so an option's name,
//! default and range are written once. Range checks and the rules between options are the
//! core's ([`ServerConfig::validate`]).
//!
//! Docstrings for Python users are in `python/zcasgi/_zcasgi.pyi`.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList};
use zcasgi_core::config::{Amount, Password};
use zcasgi_core::ServerConfig;

use crate::errors::{config_error, tls_error};

/// Adds the configuration functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(server_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(server_limits, m)?)?;
    m.add_function(wrap_pyfunction!(validate_config, m)?)?;
    Ok(())
}

/// A [`ServerConfig`] field as Python holds it.
trait Field: Sized {
    /// Reads the value of option `name`; `TypeError` or `ValueError` naming it.
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self>;
    /// The value as Python holds it.
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>>;
}

fn type_error(name: &str, expected: &str, value: &Bound<'_, PyAny>) -> PyErr {
    let got = value.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
    PyTypeError::new_err(format!("{name} must be {expected}, not {got}"))
}

macro_rules! integer_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
                if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
                    return Err(type_error(name, "an int", value));
                }
                // `zcasgi.Config` checked the documented range already; this guards other callers.
                value.extract().map_err(|_| {
                    PyValueError::new_err(format!("{name} is out of range, got {value}"))
                })
            }

            fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                Ok(self.into_pyobject(py)?.into_any())
            }
        }
    )*};
}

integer_field!(u8, u16, u64, usize);

impl Field for Option<PathBuf> {
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        if value.is_none() {
            return Ok(None);
        }
        // `zcasgi.Config` turned paths (os.PathLike) into str.
        let path: String = value.extract().map_err(|_| type_error(name, "a str path", value))?;
        Ok(Some(PathBuf::from(path)))
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Some(p) => Ok(p.to_string_lossy().into_pyobject(py)?.into_any()),
            None => Ok(py.None().into_bound(py)),
        }
    }
}

impl Field for Option<Password> {
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        if value.is_none() {
            return Ok(None);
        }
        let secret: String = value.extract().map_err(|_| type_error(name, "a str", value))?;
        Ok(Some(Password(secret)))
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Some(p) => Ok(p.0.as_str().into_pyobject(py)?.into_any()),
            None => Ok(py.None().into_bound(py)),
        }
    }
}

impl Field for bool {
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        value
            .cast::<PyBool>()
            .map(PyBoolMethods::is_true)
            .map_err(|_| type_error(name, "a bool", value))
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyBool::new(py, *self).to_owned().into_any())
    }
}

impl Field for Duration {
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        if value.is_instance_of::<PyBool>()
            || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
        {
            return Err(type_error(name, "a number of seconds", value));
        }
        let secs: f64 = value.extract()?;
        if !(secs >= 0.0 && secs.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "{name} must be a finite number of seconds >= 0, got {value}"
            )));
        }
        // Past what a Duration holds is past every documented maximum: `validate` says so.
        Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyFloat::new(py, self.as_secs_f64()).into_any())
    }
}

/// Extra response headers: a list of `(name, value)` str pairs.
impl Field for Vec<(String, String)> {
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        value.extract().map_err(|_| type_error(name, "a list of (name, value) str pairs", value))
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self)?.into_any())
    }
}

/// An optional option: `None` disables it (a count or a duration).
impl<T: Field> Field for Option<T> {
    fn read(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        if value.is_none() {
            return Ok(None);
        }
        T::read(name, value).map(Some)
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Some(v) => v.to_py(py),
            None => Ok(py.None().into_bound(py)),
        }
    }
}

/// The fields of [`ServerConfig`], each read from the `zcasgi.Config` attribute of the same
/// name, but those listed after `not options`, which keep their default here. A new field is one more name in the list below; the compiler insists, since both the
/// struct literal and the destructuring must name every field.
macro_rules! server_config_fields {
    ($($field:ident),* $(,)?; not options: $($other:ident),* $(,)?) => {
        /// Reads the options of `config` (a `zcasgi.Config`, or any object with the same
        /// attributes) into a [`ServerConfig`], without validating it.
        fn read(config: &Bound<'_, PyAny>) -> PyResult<ServerConfig> {
            Ok(ServerConfig {
                $($field: Field::read(
                    stringify!($field),
                    &config.getattr(pyo3::intern!(config.py(), stringify!($field)))?,
                )?,)*
                $($other: ServerConfig::default().$other,)*
            })
        }

        /// The default of every [`ServerConfig`] field, by name, as Python holds it.
        #[pyfunction]
        fn server_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
            let ServerConfig { $($field,)* $($other: _,)* } = ServerConfig::default();
            let dict = PyDict::new(py);
            $(dict.set_item(stringify!($field), $field.to_py(py)?)?;)*
            Ok(dict)
        }
    };
}

server_config_fields!(
    io_threads,
    max_connections,
    limit_concurrency,
    ws_max_size,
    ws_max_queue,
    ws_max_queue_bytes,
    ws_ping_interval,
    ws_ping_timeout,
    ws_per_message_deflate,
    ws_write_high_water,
    ws_write_low_water,
    handshake_timeout,
    timeout_keep_alive,
    http_max_body_size,
    close_timeout,
    shutdown_close_code,
    max_headers,
    max_header_bytes,
    ssl_certfile,
    ssl_keyfile,
    ssl_keyfile_password,
    ssl_ca_certs,
    ssl_cert_reqs,
    server_header,
    date_header,
    headers;
    // Set by `Core` from the loggers it logs to.
    not options: log,
);

/// Reads and validates the options of `config`: `TypeError` or `ValueError` naming the option.
pub fn extract(config: &Bound<'_, PyAny>) -> PyResult<ServerConfig> {
    let cfg = read(config)?;
    cfg.validate().map_err(config_error)?;
    Ok(cfg)
}

fn amount_to_py(py: Python<'_>, amount: Amount) -> PyResult<Bound<'_, PyAny>> {
    match amount {
        Amount::Count(n) => Ok(n.into_pyobject(py)?.into_any()),
        Amount::Seconds(d) => d.to_py(py),
    }
}

/// The documented range of every numeric option of the core: name -> `(min, max)`, ints for
/// counts, floats for seconds.
#[pyfunction]
fn server_limits(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    for (limit, _) in ServerConfig::default().limits() {
        let range = (amount_to_py(py, limit.min)?, amount_to_py(py, limit.max)?);
        dict.set_item(limit.option, range)?;
    }
    Ok(dict)
}

/// Checks the core's options of `config` as the server will: ranges, close code, water marks,
/// and the TLS files (read and loaded, the key matched against the certificate).
#[pyfunction]
fn validate_config(config: &Bound<'_, PyAny>) -> PyResult<()> {
    let cfg = extract(config)?;
    zcasgi_transport::tls::Acceptor::from_config(&cfg).map_err(|e| tls_error(&e))?;
    Ok(())
}
