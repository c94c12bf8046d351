//! Cross-origin checks, CORS response headers and the session cookie of the Engine.IO endpoint.
//!
//! The rules are python-engineio's (4.x, `BaseServer._cors_allowed_origins`, `_cors_headers`,
//! `_generate_sid_cookie` and the origin check at the top of `AsyncServer.handle_request`), so
//! that a browser sees the same answers from zcasgi's Engine.IO as from the stock server:
//!
//! - `cors_allowed_origins=None` ([`AllowedOrigins::SameOrigin`]) accepts the origin
//!   `<scheme>://<Host>`, and when the request carries `X-Forwarded-Proto` or
//!   `X-Forwarded-Host`, also the origin those name (their first comma-separated value);
//! - `'*'`, or a list containing `'*'` ([`AllowedOrigins::Any`]), accepts every origin;
//! - a string or another list ([`AllowedOrigins::List`]) accepts exactly those origins;
//! - `[]` ([`AllowedOrigins::Disabled`]) turns CORS handling off: no check, no headers.
//!
//! Only a request with a non-empty `Origin` is checked; a refused one is answered 400 with
//! [`CorsError`]'s message. Headers are read as python-engineio's ASGI driver builds its
//! environ: a name matches with `-` and `_` alike, repeated headers are joined with `,`, and a
//! value that is not UTF-8 is left out.

/// The origins a server accepts (python-engineio's `cors_allowed_origins`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Only the server's own origin (`None`, the default).
    #[default]
    SameOrigin,
    /// Every origin (`'*'`, or a list containing `'*'`).
    Any,
    /// Exactly these origins (a string, or a list without `'*'`).
    List(Vec<String>),
    /// CORS handling is off: no origin check and no CORS headers (`[]`).
    Disabled,
}

impl AllowedOrigins {
    /// The setting python-engineio reads from a string `cors_allowed_origins`.
    #[must_use]
    pub fn from_origin(origin: &str) -> Self {
        if origin == "*" {
            Self::Any
        } else {
            Self::List(vec![origin.to_owned()])
        }
    }

    /// The setting python-engineio reads from a list `cors_allowed_origins`.
    #[must_use]
    pub fn from_origins(origins: Vec<String>) -> Self {
        if origins.is_empty() {
            Self::Disabled
        } else if origins.iter().any(|o| o == "*") {
            Self::Any
        } else {
            Self::List(origins)
        }
    }
}

/// A request refused by the origin check; answered 400 with this message as the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// The request's `Origin` is not one the server accepts.
    #[error("{0} is not an accepted origin.")]
    NotAccepted(String),
}

/// The CORS policy of an Engine.IO endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// The origins accepted.
    pub origins: AllowedOrigins,
    /// Whether responses say `Access-Control-Allow-Credentials: true` (`cors_credentials`).
    pub credentials: bool,
}

impl Default for Cors {
    /// python-engineio's defaults: the same origin only, with credentials.
    fn default() -> Self {
        Self { origins: AllowedOrigins::SameOrigin, credentials: true }
    }
}

impl Cors {
    /// Checks the request's `Origin` against the accepted origins.
    ///
    /// `scheme` is the scheme of the server's own origin when no `X-Forwarded-Proto` says
    /// otherwise (python-engineio's `wsgi.url_scheme`; its ASGI driver always takes `"http"`).
    ///
    /// # Errors
    /// [`CorsError::NotAccepted`] when the request has a non-empty `Origin` that is not accepted.
    pub fn check(&self, req: &crate::handshake::Request, scheme: &str) -> Result<(), CorsError> {
        if self.origins == AllowedOrigins::Disabled {
            return Ok(());
        }
        match environ(req, b"origin") {
            Some(origin) if !origin.is_empty() && !self.accepts(req, scheme, &origin) => {
                Err(CorsError::NotAccepted(origin))
            }
            _ => Ok(()),
        }
    }

    /// The CORS headers python-engineio adds to every response to `req` (the preflight's too).
    ///
    /// `Access-Control-Allow-Origin` echoes an accepted `Origin`; an `OPTIONS` request also
    /// gets the allowed methods; `Access-Control-Request-Headers` is echoed as
    /// `Access-Control-Allow-Headers`; credentials are allowed when configured. `scheme` is as
    /// for [`check`](Self::check).
    #[must_use]
    pub fn headers(
        &self,
        req: &crate::handshake::Request,
        scheme: &str,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut headers = Vec::new();
        if self.origins == AllowedOrigins::Disabled {
            return headers;
        }
        if let Some(origin) = environ(req, b"origin") {
            if self.accepts(req, scheme, &origin) {
                headers.push((b"Access-Control-Allow-Origin".to_vec(), origin.into_bytes()));
            }
        }
        if req.method == "OPTIONS" {
            headers
                .push((b"Access-Control-Allow-Methods".to_vec(), b"OPTIONS, GET, POST".to_vec()));
        }
        if let Some(requested) = environ(req, b"access-control-request-headers") {
            headers.push((b"Access-Control-Allow-Headers".to_vec(), requested.into_bytes()));
        }
        if self.credentials {
            headers.push((b"Access-Control-Allow-Credentials".to_vec(), b"true".to_vec()));
        }
        headers
    }

    /// Whether `origin` is accepted for `req` (`Disabled` accepts nothing, as its list is `[]`).
    fn accepts(&self, req: &crate::handshake::Request, scheme: &str, origin: &str) -> bool {
        match &self.origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o == origin),
            AllowedOrigins::Disabled => false,
            AllowedOrigins::SameOrigin => same_origins(req, scheme).iter().any(|o| o == origin),
        }
    }
}

/// The server's own origins as python-engineio derives them from the request.
fn same_origins(req: &crate::handshake::Request, scheme: &str) -> Vec<String> {
    let Some(host) = environ(req, b"host") else {
        return Vec::new();
    };
    let proto = environ(req, b"x-forwarded-proto");
    let forwarded_host = environ(req, b"x-forwarded-host");
    // python-engineio's ASGI driver: `wsgi.url_scheme` is the whole `X-Forwarded-Proto`.
    let url_scheme = proto.as_deref().unwrap_or(scheme);
    let mut origins = vec![format!("{url_scheme}://{host}")];
    if proto.is_some() || forwarded_host.is_some() {
        let scheme = first_value(url_scheme);
        let host = first_value(forwarded_host.as_deref().unwrap_or(&host));
        origins.push(format!("{scheme}://{host}"));
    }
    origins
}

/// The first comma-separated value, stripped as Python's `str.strip()` strips.
fn first_value(value: &str) -> &str {
    let first = value.split(',').next().unwrap_or_default();
    first.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// The value python-engineio's ASGI driver puts in `environ['HTTP_<NAME>']`, if any.
///
/// `name` is lower case with `-`; a header named with `_` matches too. Repeated headers are
/// joined with `,`; values that are not UTF-8 are skipped.
fn environ(req: &crate::handshake::Request, name: &[u8]) -> Option<String> {
    let same_name = |n: &[u8]| {
        n.len() == name.len()
            && n.iter().zip(name).all(|(&a, &b)| a == b || (a == b'_' && b == b'-'))
    };
    let mut joined: Option<String> = None;
    for value in req.headers.iter().filter(|(n, _)| same_name(n)).map(|(_, v)| v) {
        let Ok(value) = std::str::from_utf8(value) else { continue };
        match &mut joined {
            Some(j) => {
                j.push(',');
                j.push_str(value);
            }
            None => joined = Some(value.to_owned()),
        }
    }
    joined
}

/// The session cookie set on a long-polling handshake (python-engineio's `cookie`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// The cookie's name.
    name: String,
    /// The attributes after `<name>=<sid>`, in order; `None` writes a bare flag (`Secure`).
    attributes: Vec<(String, Option<String>)>,
}

impl Cookie {
    /// The name a cookie dict without `name` gets.
    pub const DEFAULT_NAME: &'static str = "io";

    /// A cookie as python-engineio writes it from a dict: `name` and the other keys in order.
    #[must_use]
    pub fn new(name: impl Into<String>, attributes: Vec<(String, Option<String>)>) -> Self {
        Self { name: name.into(), attributes }
    }

    /// A cookie as python-engineio writes it from a string: `path=/; SameSite=Lax`.
    #[must_use]
    pub fn named(name: impl Into<String>) -> Self {
        Self::new(
            name,
            vec![("path".into(), Some("/".into())), ("SameSite".into(), Some("Lax".into()))],
        )
    }

    /// The `Set-Cookie` header carrying session `sid`.
    #[must_use]
    pub fn header(&self, sid: &str) -> (Vec<u8>, Vec<u8>) {
        let mut value = format!("{}={sid}", self.name);
        for (attribute, v) in &self.attributes {
            value.push_str("; ");
            value.push_str(attribute);
            if let Some(v) = v {
                value.push('=');
                value.push_str(v);
            }
        }
        (b"Set-Cookie".to_vec(), value.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    //! Each expectation is what python-engineio 4.15.1 answers for the same request through its
    //! ASGI driver (`translate_request`, then `_cors_allowed_origins`/`_cors_headers`).
    use super::*;
    use crate::handshake::Request;

    fn request(method: &str, headers: &[(&str, &[u8])]) -> Request {
        Request {
            method: method.into(),
            http_minor: 1,
            raw_path: b"/socket.io/".to_vec(),
            query_string: b"EIO=4&transport=polling".to_vec(),
            headers: headers.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec())).collect(),
        }
    }

    fn get(headers: &[(&str, &[u8])]) -> Request {
        request("GET", headers)
    }

    fn cors(origins: AllowedOrigins, credentials: bool) -> Cors {
        Cors { origins, credentials }
    }

    fn header_pairs(h: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&str, &str)> {
        h.iter()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap(), std::str::from_utf8(v).unwrap()))
            .collect()
    }

    fn not_accepted(origin: &str) -> Result<(), CorsError> {
        Err(CorsError::NotAccepted(origin.into()))
    }

    const ACAO: &str = "Access-Control-Allow-Origin";
    const ACAC: (&str, &str) = ("Access-Control-Allow-Credentials", "true");

    #[test]
    fn settings_read_as_python_engineio_reads_them() {
        assert_eq!(AllowedOrigins::from_origin("*"), AllowedOrigins::Any);
        assert_eq!(
            AllowedOrigins::from_origin("https://a"),
            AllowedOrigins::List(vec!["https://a".into()])
        );
        assert_eq!(AllowedOrigins::from_origin(""), AllowedOrigins::List(vec![String::new()]));
        assert_eq!(AllowedOrigins::from_origins(vec![]), AllowedOrigins::Disabled);
        assert_eq!(
            AllowedOrigins::from_origins(vec!["https://a".into(), "*".into()]),
            AllowedOrigins::Any
        );
        assert_eq!(
            AllowedOrigins::from_origins(vec!["https://a".into(), "https://b".into()]),
            AllowedOrigins::List(vec!["https://a".into(), "https://b".into()])
        );
        assert_eq!(Cors::default(), cors(AllowedOrigins::SameOrigin, true));
    }

    #[test]
    fn same_origin_accepts_the_host_with_the_scheme() {
        let c = Cors::default();
        let req = get(&[("host", b"example.com:8000"), ("origin", b"http://example.com:8000")]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert_eq!(
            header_pairs(&c.headers(&req, "http")),
            [(ACAO, "http://example.com:8000"), ACAC]
        );
        // the scheme counts: an https page is another origin for an http server
        let req = get(&[("host", b"example.com:8000"), ("origin", b"https://example.com:8000")]);
        assert_eq!(c.check(&req, "http"), not_accepted("https://example.com:8000"));
        assert_eq!(header_pairs(&c.headers(&req, "http")), [ACAC]);
        assert_eq!(c.check(&req, "https"), Ok(()));
        // another host, and a request without Host, are refused
        let req = get(&[("host", b"example.com"), ("origin", b"http://evil.com")]);
        assert_eq!(c.check(&req, "http"), not_accepted("http://evil.com"));
        let req = get(&[("origin", b"http://example.com")]);
        assert_eq!(c.check(&req, "http"), not_accepted("http://example.com"));
    }

    #[test]
    fn same_origin_behind_a_proxy() {
        let c = Cors::default();
        // X-Forwarded-Proto names the scheme of both origins
        let req = get(&[
            ("host", b"example.com"),
            ("x-forwarded-proto", b"https"),
            ("origin", b"https://example.com"),
        ]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        // a list of protocols: the first names the second origin; the whole value the first
        let req = get(&[
            ("host", b"example.com"),
            ("x-forwarded-proto", b"https, http"),
            ("origin", b"https://example.com"),
        ]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert_eq!(
            same_origins(&req, "http"),
            ["https, http://example.com", "https://example.com"]
        );
        // X-Forwarded-Host alone: the proxy's host with the server's scheme
        let req = get(&[
            ("host", b"backend:8000"),
            ("x-forwarded-host", b" public.example ,inner"),
            ("origin", b"http://public.example"),
        ]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert_eq!(same_origins(&req, "http"), ["http://backend:8000", "http://public.example"]);
        let req = get(&[
            ("host", b"backend:8000"),
            ("x-forwarded-host", b"public.example"),
            ("origin", b"https://public.example"),
        ]);
        assert_eq!(c.check(&req, "http"), not_accepted("https://public.example"));
        // both
        let req = get(&[
            ("host", b"backend:8000"),
            ("x-forwarded-proto", b"https"),
            ("x-forwarded-host", b"public.example"),
            ("origin", b"https://public.example"),
        ]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert_eq!(same_origins(&req, "http"), ["https://backend:8000", "https://public.example"]);
    }

    #[test]
    fn headers_are_read_as_the_asgi_environ_has_them() {
        let c = Cors::default();
        // a header spelt with `_` is the same environ key
        let req = get(&[
            ("host", b"backend"),
            ("x_forwarded_host", b"public"),
            ("origin", b"http://public"),
        ]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        // repeated headers are joined with ','
        let req = get(&[("host", b"a"), ("host", b"b"), ("origin", b"http://a,b")]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        // a value that is not UTF-8 is left out
        let req = get(&[("host", b"a"), ("origin", b"\xff"), ("origin", b"http://a")]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        let req = get(&[("host", b"a"), ("origin", b"\xff")]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert_eq!(header_pairs(&c.headers(&req, "http")), [ACAC]);
    }

    #[test]
    fn no_or_empty_origin_is_not_checked() {
        let c = cors(AllowedOrigins::List(vec!["https://a".into()]), false);
        let req = get(&[("host", b"example.com")]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert!(c.headers(&req, "http").is_empty());
        let req = get(&[("host", b"example.com"), ("origin", b"")]);
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert!(c.headers(&req, "http").is_empty());
        // '*' echoes even an empty origin, as python-engineio does
        let c = cors(AllowedOrigins::Any, false);
        assert_eq!(header_pairs(&c.headers(&req, "http")), [(ACAO, "")]);
    }

    #[test]
    fn any_accepts_every_origin() {
        for c in [
            cors(AllowedOrigins::from_origin("*"), true),
            cors(AllowedOrigins::from_origins(vec!["https://a".into(), "*".into()]), true),
        ] {
            let req = get(&[("host", b"example.com"), ("origin", b"http://evil.com")]);
            assert_eq!(c.check(&req, "http"), Ok(()));
            assert_eq!(header_pairs(&c.headers(&req, "http")), [(ACAO, "http://evil.com"), ACAC]);
        }
    }

    #[test]
    fn a_list_accepts_exactly_its_origins() {
        for c in [
            cors(AllowedOrigins::from_origin("https://a.example"), false),
            cors(
                AllowedOrigins::from_origins(vec!["https://b".into(), "https://a.example".into()]),
                false,
            ),
        ] {
            let req = get(&[("host", b"a.example"), ("origin", b"https://a.example")]);
            assert_eq!(c.check(&req, "http"), Ok(()));
            assert_eq!(header_pairs(&c.headers(&req, "http")), [(ACAO, "https://a.example")]);
            // the server's own origin is not implied
            let req = get(&[("host", b"a.example"), ("origin", b"http://a.example")]);
            assert_eq!(c.check(&req, "http"), not_accepted("http://a.example"));
            assert!(c.headers(&req, "http").is_empty());
        }
        // an empty List (python-engineio's `()` or a list it cannot match) refuses every origin
        let c = cors(AllowedOrigins::List(vec![]), true);
        let req = get(&[("host", b"a"), ("origin", b"http://a")]);
        assert_eq!(c.check(&req, "http"), not_accepted("http://a"));
        assert_eq!(header_pairs(&c.headers(&req, "http")), [ACAC]);
    }

    #[test]
    fn disabled_checks_nothing_and_adds_nothing() {
        let c = cors(AllowedOrigins::Disabled, true);
        let req = request(
            "OPTIONS",
            &[
                ("host", b"a"),
                ("origin", b"http://evil.com"),
                ("access-control-request-headers", b"x-token"),
            ],
        );
        assert_eq!(c.check(&req, "http"), Ok(()));
        assert!(c.headers(&req, "http").is_empty());
    }

    #[test]
    fn preflight_gets_methods_and_echoed_request_headers() {
        let c = cors(AllowedOrigins::Any, true);
        let req = request(
            "OPTIONS",
            &[
                ("host", b"a"),
                ("origin", b"http://b"),
                ("access-control-request-method", b"POST"),
                ("access-control-request-headers", b"content-type"),
                ("access-control-request-headers", b"x-token"),
            ],
        );
        assert_eq!(
            header_pairs(&c.headers(&req, "http")),
            [
                (ACAO, "http://b"),
                ("Access-Control-Allow-Methods", "OPTIONS, GET, POST"),
                ("Access-Control-Allow-Headers", "content-type,x-token"),
                ACAC,
            ]
        );
        // a refused origin still gets the rest; credentials off drops that header
        let c = cors(AllowedOrigins::SameOrigin, false);
        assert_eq!(
            header_pairs(&c.headers(&req, "http")),
            [
                ("Access-Control-Allow-Methods", "OPTIONS, GET, POST"),
                ("Access-Control-Allow-Headers", "content-type,x-token"),
            ]
        );
        // Access-Control-Request-Headers is echoed on any method
        let req = get(&[("access-control-request-headers", b"x-a")]);
        assert_eq!(
            header_pairs(&c.headers(&req, "http")),
            [("Access-Control-Allow-Headers", "x-a")]
        );
    }

    #[test]
    fn refusal_message_is_python_engineios() {
        assert_eq!(
            CorsError::NotAccepted("http://evil.com".into()).to_string(),
            "http://evil.com is not an accepted origin."
        );
    }

    #[test]
    fn cookie_from_a_string_or_a_dict() {
        let (name, value) = Cookie::named("io").header("abc");
        assert_eq!(name, b"Set-Cookie");
        assert_eq!(value, b"io=abc; path=/; SameSite=Lax");
        // {'name': 'sid', 'path': '/chat', 'Secure': True, 'HttpOnly': True, 'SameSite': 'None'}
        let cookie = Cookie::new(
            "sid",
            vec![
                ("path".into(), Some("/chat".into())),
                ("Secure".into(), None),
                ("HttpOnly".into(), None),
                ("SameSite".into(), Some("None".into())),
            ],
        );
        assert_eq!(
            cookie.header("x-Y_z").1,
            b"sid=x-Y_z; path=/chat; Secure; HttpOnly; SameSite=None"
        );
        // {'path': '/'}: the default name, and an attribute may be empty
        let cookie = Cookie::new(
            Cookie::DEFAULT_NAME,
            vec![("path".into(), Some("/".into())), ("Domain".into(), Some(String::new()))],
        );
        assert_eq!(cookie.header("s").1, b"io=s; path=/; Domain=");
        assert_eq!(Cookie::new("io", vec![]).header("s").1, b"io=s");
    }
}
