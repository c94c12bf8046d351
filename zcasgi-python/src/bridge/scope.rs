//! The ASGI connection scope: `websocket` for an upgrade request, `http` for a plain one.
//!
//! # Memory
//!
//! Every idle WebSocket keeps its scope for as long as it lives, so a scope holds as few
//! objects of its own as it can: what never changes (the type, `asgi` versions, scheme, root
//! path, the listener's `server` address) and what repeats from one request to the next (header
//! names, whole `(name, value)` pairs such as `(b"upgrade", b"websocket")`, a path, a client
//! address behind a proxy) are immutable `str`/`bytes`/`tuple` objects shared between scopes
//! ([`ScopeBuilder`]). The
//! containers an application may mutate (the scope, `asgi`, `headers`, `extensions`) are its
//! own, so a change to one scope never shows in another.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};
use std::net::SocketAddr;

use zcasgi_core::backend::{ConnectInfo, LocalAddr, TlsInfo};
use zcasgi_core::handshake::Request;

/// Distinct header names whose `bytes` objects are shared; past this, new names get their own.
const MAX_SHARED_NAMES: usize = 128;
/// Longest header value that may be shared with the next request's.
const MAX_SHARED_VALUE: usize = 256;

/// Builds the ASGI scopes of one server, sharing their immutable parts between connections.
pub struct ScopeBuilder {
    root_path: String,
    root_path_str: Py<PyString>,
    /// The `server` entry of the latest scope, for the listener it was for.
    server: Option<(LocalAddr, Py<PyAny>)>,
    /// The client host of the latest scope (clients behind one proxy all share it).
    client_host: Option<(std::net::IpAddr, Py<PyString>)>,
    /// The `path` of the latest scope.
    path: Option<Py<PyString>>,
    /// The `raw_path` of the latest scope.
    raw_path: Option<Py<PyBytes>>,
    /// Each header name seen (up to [`MAX_SHARED_NAMES`]), with the latest short value it had.
    headers: HashMap<Box<[u8]>, SharedHeader>,
}

/// A header name's shared `bytes` object, and the `(name, value)` pair of the latest short
/// value sent with it.
struct SharedHeader {
    name: Py<PyBytes>,
    pair: Option<Py<PyTuple>>,
}

impl SharedHeader {
    /// The `(name, value)` pair for `value`: the latest one if `value` is the same again (a
    /// tuple of `bytes`, immutable, so scopes may share it), else a new one, kept for the next
    /// request if `value` is short.
    fn pair<'py>(&mut self, py: Python<'py>, value: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
        if let Some(pair) = &self.pair {
            let pair = pair.bind(py);
            if pair.get_item(1)?.cast::<PyBytes>()?.as_bytes() == value {
                return Ok(pair.clone());
            }
        }
        let pair =
            PyTuple::new(py, [self.name.bind(py).as_any(), PyBytes::new(py, value).as_any()])?;
        if value.len() <= MAX_SHARED_VALUE {
            self.pair = Some(pair.clone().unbind());
        }
        Ok(pair)
    }
}

/// `cached` if it holds `bytes`, else a new object that replaces it.
fn reuse_bytes<'py>(
    py: Python<'py>,
    cached: &mut Option<Py<PyBytes>>,
    bytes: &[u8],
) -> Bound<'py, PyBytes> {
    if let Some(c) = cached {
        if c.bind(py).as_bytes() == bytes {
            return c.bind(py).clone();
        }
    }
    let fresh = PyBytes::new(py, bytes);
    *cached = Some(fresh.clone().unbind());
    fresh
}

impl ScopeBuilder {
    /// Scopes for an application mounted at `root_path`.
    pub fn new(py: Python<'_>, root_path: String) -> Self {
        let root_path_str = PyString::new(py, &root_path).unbind();
        Self {
            root_path,
            root_path_str,
            server: None,
            client_host: None,
            path: None,
            raw_path: None,
            headers: HashMap::new(),
        }
    }

    /// Builds the ASGI `websocket` scope (or the `http` scope for a request without upgrade).
    pub fn scope<'py>(
        &mut self,
        py: Python<'py>,
        info: &ConnectInfo,
        state: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let websocket = info.upgrade.is_some();
        let scope =
            self.request_scope(py, &info.request, websocket, info.tls.is_some(), info.client)?;
        scope.set_item(intern!(py, "server"), self.server(py, info.server.as_ref())?)?;
        if let Some(upgrade) = &info.upgrade {
            scope.set_item(intern!(py, "subprotocols"), PyList::new(py, &upgrade.subprotocols)?)?;
        }
        if websocket || info.tls.is_some() {
            let ext = PyDict::new(py);
            if websocket {
                ext.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
            }
            if let Some(tls) = &info.tls {
                ext.set_item(intern!(py, "tls"), tls_extension(py, tls)?)?;
            }
            scope.set_item(intern!(py, "extensions"), ext)?;
        }
        if let Some(state) = state {
            scope.set_item(intern!(py, "state"), state.copy()?)?;
        }
        Ok(scope)
    }

    /// ASGI: `server` is (host, port), or (path, None) for a Unix socket.
    fn server(&mut self, py: Python<'_>, addr: Option<&LocalAddr>) -> PyResult<Py<PyAny>> {
        let Some(addr) = addr else { return Ok(py.None()) };
        if let Some((cached, server)) = &self.server {
            if cached == addr {
                return Ok(server.clone_ref(py));
            }
        }
        let server = match addr {
            LocalAddr::Inet(a) => (a.ip().to_string(), a.port()).into_py_any(py)?,
            LocalAddr::Unix(path) => (path.to_string_lossy(), py.None()).into_py_any(py)?,
        };
        self.server = Some((addr.clone(), server.clone_ref(py)));
        Ok(server)
    }

    /// ASGI: `client` is (host, port).
    fn client(&mut self, py: Python<'_>, addr: Option<SocketAddr>) -> PyResult<Py<PyAny>> {
        let Some(addr) = addr else { return Ok(py.None()) };
        let host = match &self.client_host {
            Some((ip, host)) if *ip == addr.ip() => host.clone_ref(py),
            _ => {
                let host = PyString::new(py, &addr.ip().to_string()).unbind();
                self.client_host = Some((addr.ip(), host.clone_ref(py)));
                host
            }
        };
        (host, addr.port()).into_py_any(py)
    }

    /// The `(name, value)` pairs of `scope["headers"]`, in a list of the scope's own.
    fn headers<'py>(&mut self, py: Python<'py>, req: &Request) -> PyResult<Bound<'py, PyList>> {
        let mut pairs = Vec::with_capacity(req.headers.len());
        for (name, value) in &req.headers {
            if let Some(shared) = self.headers.get_mut(name.as_slice()) {
                pairs.push(shared.pair(py, value)?);
                continue;
            }
            let mut shared = SharedHeader { name: PyBytes::new(py, name).unbind(), pair: None };
            pairs.push(shared.pair(py, value)?);
            if self.headers.len() < MAX_SHARED_NAMES {
                self.headers.insert(name.clone().into_boxed_slice(), shared);
            }
        }
        // Built whole: a list sized for its pairs, with no room to grow.
        PyList::new(py, pairs)
    }

    /// The part of an ASGI scope that a request head and its connection's client give: type,
    /// versions, scheme, method, paths, query string, headers and client.
    pub fn request_scope<'py>(
        &mut self,
        py: Python<'py>,
        req: &Request,
        websocket: bool,
        tls: bool,
        client: Option<SocketAddr>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope = PyDict::new(py);
        let kind = if websocket { intern!(py, "websocket") } else { intern!(py, "http") };
        scope.set_item(intern!(py, "type"), kind)?;
        let asgi = PyDict::new(py);
        asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
        asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.5"))?;
        scope.set_item(intern!(py, "asgi"), asgi)?;
        let version = if req.http_minor == 0 { intern!(py, "1.0") } else { intern!(py, "1.1") };
        scope.set_item(intern!(py, "http_version"), version)?;
        let scheme = match (websocket, tls) {
            (true, false) => intern!(py, "ws"),
            (true, true) => intern!(py, "wss"),
            (false, false) => intern!(py, "http"),
            (false, true) => intern!(py, "https"),
        };
        scope.set_item(intern!(py, "scheme"), scheme)?;
        if !websocket {
            scope.set_item(intern!(py, "method"), req.method.as_str())?;
        }
        let path = format!("{}{}", self.root_path, req.path());
        let path = match &self.path {
            Some(cached) if cached.bind(py).to_str()? == path => cached.bind(py).clone(),
            _ => {
                let fresh = PyString::new(py, &path);
                self.path = Some(fresh.clone().unbind());
                fresh
            }
        };
        scope.set_item(intern!(py, "path"), path)?;
        let mut raw_path = self.root_path.as_bytes().to_vec();
        raw_path.extend_from_slice(&req.raw_path);
        scope.set_item(intern!(py, "raw_path"), reuse_bytes(py, &mut self.raw_path, &raw_path))?;
        scope.set_item(intern!(py, "query_string"), PyBytes::new(py, &req.query_string))?;
        scope.set_item(intern!(py, "root_path"), self.root_path_str.bind(py))?;
        scope.set_item(intern!(py, "headers"), self.headers(py, req)?)?;
        scope.set_item(intern!(py, "client"), self.client(py, client)?)?;
        Ok(scope)
    }
}

/// The ASGI TLS extension (`scope["extensions"]["tls"]`): certificates as PEM strings.
fn tls_extension<'py>(py: Python<'py>, tls: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let ext = PyDict::new(py);
    ext.set_item(intern!(py, "server_cert"), tls.server_cert.as_deref().map(pem_certificate))?;
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
