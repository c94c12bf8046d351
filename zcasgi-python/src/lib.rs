//! The `zcasgi._zcasgi` extension module: registration only.

// Python classes are inspected from Python (repr), not with `{:?}`.
#![allow(missing_debug_implementations)]

mod access;
mod bridge;
mod codec;
mod config;
mod engineio;
mod errors;
mod server;
mod timer;
mod workers;

/// The compiled part of zcasgi.
#[pyo3::pymodule(gil_used = false)]
mod _zcasgi {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::bridge::{AsgiConn, Ready, SendWait, Waiter};
    #[pymodule_export]
    use crate::engineio::EngineIO;
    #[pymodule_export]
    use crate::server::Core;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("BACKENDS", crate::server::BACKENDS.to_vec())?;
        crate::errors::register(m)?;
        crate::codec::register(m)?;
        crate::config::register(m)?;
        crate::workers::register(m)?;
        Ok(())
    }
}
