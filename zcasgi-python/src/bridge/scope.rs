//! The ASGI connection scope: `websocket` for an upgrade request, `http` for a plain one.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3::{intern, IntoPyObjectExt};
use std::net::SocketAddr;

use zcasgi_core::backend::{ConnectInfo, LocalAddr, TlsInfo};
use zcasgi_core::handshake::Request;

/// Builds the ASGI `websocket` scope (or the `http` scope for a request without upgrade).
pub fn scope<'py>(
    py: Python<'py>,
    info: &ConnectInfo,
    root_path: &str,
    state: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let websocket = info.upgrade.is_some();
    let scope =
        request_scope(py, &info.request, websocket, info.tls.is_some(), info.client, root_path)?;
    // ASGI: `server` is (host, port), or (path, None) for a Unix socket.
    let server = match &info.server {
        Some(LocalAddr::Inet(a)) => (a.ip().to_string(), a.port()).into_py_any(py)?,
        Some(LocalAddr::Unix(path)) => (path.to_string_lossy(), py.None()).into_py_any(py)?,
        None => py.None(),
    };
    scope.set_item(intern!(py, "server"), server)?;
    if let Some(upgrade) = &info.upgrade {
        scope.set_item(intern!(py, "subprotocols"), PyList::new(py, &upgrade.subprotocols)?)?;
    }
    if websocket || info.tls.is_some() {
        let ext = PyDict::new(py);
        if websocket {
            ext.set_item("websocket.http.response", PyDict::new(py))?;
        }
        if let Some(tls) = &info.tls {
            ext.set_item("tls", tls_extension(py, tls)?)?;
        }
        scope.set_item(intern!(py, "extensions"), ext)?;
    }
    if let Some(state) = state {
        scope.set_item(intern!(py, "state"), state.copy()?)?;
    }
    Ok(scope)
}

/// The ASGI TLS extension (`scope["extensions"]["tls"]`): certificates as PEM strings.
fn tls_extension<'py>(py: Python<'py>, tls: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let ext = PyDict::new(py);
    ext.set_item("server_cert", tls.server_cert.as_deref().map(pem_certificate))?;
    let chain: Vec<String> = tls.client_cert_chain.iter().map(|c| pem_certificate(c)).collect();
    ext.set_item("client_cert_chain", chain)?;
    // Optional in the spec: the subject's RFC 4514 name would need an X.509 parser.
    ext.set_item("client_cert_name", py.None())?;
    // A certificate that failed verification ends the handshake: none reaches the app.
    ext.set_item("client_cert_error", py.None())?;
    ext.set_item("tls_version", tls.version)?;
    ext.set_item("cipher_suite", tls.cipher_suite)?;
    Ok(ext)
}

/// The part of an ASGI scope that a request head and its connection's client give: type,
/// versions, scheme, method, paths, query string, headers and client.
pub fn request_scope<'py>(
    py: Python<'py>,
    req: &Request,
    websocket: bool,
    tls: bool,
    client: Option<SocketAddr>,
    root_path: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), if websocket { "websocket" } else { "http" })?;
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.5")?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "http_version"), if req.http_minor == 0 { "1.0" } else { "1.1" })?;
    let scheme = match (websocket, tls) {
        (true, false) => "ws",
        (true, true) => "wss",
        (false, false) => "http",
        (false, true) => "https",
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
    if !websocket {
        scope.set_item(intern!(py, "method"), req.method.as_str())?;
    }
    let path = req.path();
    scope.set_item(intern!(py, "path"), format!("{root_path}{path}"))?;
    let mut raw_path = root_path.as_bytes().to_vec();
    raw_path.extend_from_slice(&req.raw_path);
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &raw_path))?;
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, &req.query_string))?;
    scope.set_item(intern!(py, "root_path"), root_path)?;
    let headers = PyList::empty(py);
    for (name, value) in &req.headers {
        headers.append(PyTuple::new(py, [PyBytes::new(py, name), PyBytes::new(py, value)])?)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    let client = match client {
        Some(a) => (a.ip().to_string(), a.port()).into_py_any(py)?,
        None => py.None(),
    };
    scope.set_item(intern!(py, "client"), client)?;
    Ok(scope)
}

/// A DER certificate as PEM (RFC 7468): base64 in lines of 64 characters.
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
