//! TLS with rustls between a connection's socket and its driver, written once for every
//! backend.
//!
//! # Theory of operation
//!
//! rustls' `ServerConnection` is sans-I/O, like the driver: a [`TlsStream`] feeds it the bytes
//! a socket call returns and takes the bytes to write, so the backends' event loops drive a TLS
//! connection exactly as a plain one, through [`crate::Session`].
//!
//! - **Read**: ciphertext is read from the socket straight into rustls' record buffer (the
//!   kernel's copy), decrypted there in place, and the plaintext is copied once into the
//!   driver's own buffer or the backend's shared read buffer, as a plain read would fill them.
//!   Every read hands all the plaintext it produced to the driver, so none waits inside rustls
//!   for an edge that will not come.
//! - **Write**: the driver's out queue is encrypted into rustls' outgoing buffer (one copy: the
//!   zero-copy send of a plain connection cannot survive encryption) while that buffer holds
//!   less than [`BUFFER_LIMIT`]; the driver counts those bytes as written, so back-pressure to
//!   the application works as without TLS. The ciphertext goes out with vectored writes.
//! - **Bounds**: a client cannot make a connection's TLS buffers grow: rustls takes at most one
//!   record (16 KiB and its overhead) into its receive buffer, its plaintext is drained after
//!   every read, and what the server encrypts is bounded by [`BUFFER_LIMIT`].
//! - **Failures**: a handshake that fails (garbage, a client certificate that does not verify,
//!   no common protocol version) or a bad record ends the connection: rustls' alert is written,
//!   the socket closed, and the driver logs the reason at DEBUG, never at ERROR — a remote
//!   client causes it. A client that speaks plain HTTP to the TLS port gets a plain-text
//!   `400 Bad Request` saying so, instead of an alert it cannot read.
//! - **Stalls**: the driver's request-head deadline (`handshake_timeout`) starts at the accept,
//!   so a client that stops in the middle of the handshake is closed when it passes.
//! - **Close**: once the driver is finished, a `close_notify` alert is sent before the
//!   transport's half-close and linger.
//!
//! ALPN offers `http/1.1` only. What the handshake established (version, cipher suite, the
//! client's certificate chain) reaches the application as the ASGI `tls` extension, through
//! [`Driver::set_tls`].
//!
//! A [`TlsStream`] holds all of one connection's TLS state: a process that hands connections
//! to another process can hand over a plain socket, but a TLS connection stays here, and its
//! plaintext is relayed to the other process ([`crate::relay`]).

use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig as RustlsConfig, ServerConnection};
use zcasgi_core::backend::{ServerConfig, TlsInfo};
use zcasgi_core::driver::Driver;

use crate::io::{Flush, Read, Socket};

/// Most bytes of encrypted output one connection buffers before the driver's output waits.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// The answer to a client that speaks plain HTTP to the TLS port.
const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
content-length: 47\r\nconnection: close\r\n\r\nThis port speaks TLS: use https:// or wss://.\r\n";

/// A TLS option that cannot be used, naming the option.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{option}: cannot read {}: {source}", path.display())]
    File {
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file that holds no PEM item of the kind the option needs, or a malformed one.
    #[error("{option}: {} holds no valid PEM {what}", path.display())]
    NoPem {
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for ("certificate", "private key").
        what: &'static str,
    },
    /// An encrypted key without `ssl_keyfile_password`.
    #[error("ssl_keyfile_password: the private key is encrypted; give its password")]
    PasswordNeeded,
    /// A key in the legacy OpenSSL encrypted PEM format (`Proc-Type: 4,ENCRYPTED`).
    #[error(
        "{0}: the key is encrypted in the legacy OpenSSL PEM format, which is not supported; \
         convert it to encrypted PKCS#8 (openssl pkcs8 -topk8 -in KEY -out KEY.p8) or decrypt it"
    )]
    LegacyEncryptedKey(&'static str),
    /// An encrypted PKCS#8 key that the password does not decrypt.
    #[error("ssl_keyfile_password: cannot decrypt the private key: {0}")]
    Decrypt(String),
    /// rustls refused what it was given (a key that does not match the certificate, a bad CA
    /// certificate, an unsupported key type).
    #[error("{option}: {source}")]
    Rejected {
        /// The option.
        option: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
}

impl TlsError {
    /// The option the error is about.
    #[must_use]
    pub fn option(&self) -> &'static str {
        match self {
            Self::File { option, .. }
            | Self::NoPem { option, .. }
            | Self::Rejected { option, .. }
            | Self::LegacyEncryptedKey(option) => option,
            Self::PasswordNeeded | Self::Decrypt(_) => "ssl_keyfile_password",
        }
    }
}

/// What every TLS connection of a server shares: the rustls configuration built from the
/// `ssl_*` options.
#[derive(Debug, Clone)]
pub struct Acceptor {
    config: Arc<RustlsConfig>,
    /// The server's certificate (DER), for the ASGI `tls` extension.
    server_cert: Vec<u8>,
}

impl Acceptor {
    /// The acceptor of a server configured with `cfg`; `None` if it serves plain TCP.
    ///
    /// # Errors
    /// A [`TlsError`] naming the option whose file is missing, unreadable or unusable, or a
    /// key that does not match the certificate.
    pub fn from_config(cfg: &ServerConfig) -> Result<Option<Self>, TlsError> {
        let Some(certfile) = &cfg.ssl_certfile else { return Ok(None) };
        let chain = certificates("ssl_certfile", certfile)?;
        let (key_option, keyfile) = match &cfg.ssl_keyfile {
            Some(path) => ("ssl_keyfile", path),
            None => ("ssl_certfile", certfile),
        };
        let password = cfg.ssl_keyfile_password.as_ref().map(|p| p.0.as_str());
        let key = private_key(key_option, keyfile, password)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = RustlsConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rejected { option: "ssl_certfile", source })?;
        let builder = match (&cfg.ssl_ca_certs, cfg.ssl_cert_reqs) {
            (Some(ca), reqs) if reqs > 0 => {
                let mut roots = RootCertStore::empty();
                for cert in certificates("ssl_ca_certs", ca)? {
                    roots
                        .add(cert)
                        .map_err(|source| TlsError::Rejected { option: "ssl_ca_certs", source })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if reqs == 1 { verifier.allow_unauthenticated() } else { verifier };
                let verifier = verifier.build().map_err(|e| TlsError::Rejected {
                    option: "ssl_ca_certs",
                    source: rustls::Error::General(e.to_string()),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let server_cert = chain[0].to_vec();
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Rejected { option: key_option, source })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self { config: Arc::new(config), server_cert }))
    }

    /// The TLS state of a connection just accepted.
    ///
    /// # Errors
    /// rustls' error if it cannot start a connection with this configuration.
    pub fn stream(&self) -> Result<TlsStream, rustls::Error> {
        let mut conn = ServerConnection::new(self.config.clone())?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsStream {
            conn,
            server_cert: Some(self.server_cert.clone()),
            state: State::Handshaking,
            first_byte: None,
            plain_reply: None,
            peer_closed: false,
        })
    }
}

fn read_file(option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File { option, path: path.to_owned(), source })
}

/// The PEM certificates of `path`, at least one.
fn certificates(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(option, path)?;
    let no_pem = || TlsError::NoPem { option, path: path.to_owned(), what: "certificate" };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| no_pem())?;
    if certs.is_empty() {
        return Err(no_pem());
    }
    Ok(certs)
}

/// The PEM private key of `path`: PKCS#8, PKCS#1 or SEC1, or encrypted PKCS#8 with `password`.
fn private_key(
    option: &'static str,
    path: &Path,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(option, path)?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::LegacyEncryptedKey(option));
    }
    if let Some(start) = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let password = password.ok_or(TlsError::PasswordNeeded)?;
        let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
        let no_pem = || TlsError::NoPem { option, path: path.to_owned(), what: "private key" };
        let end = text[start..].find(end_marker).ok_or_else(no_pem)? + start + end_marker.len();
        let (_, der) =
            pkcs8::der::pem::decode_vec(text[start..end].as_bytes()).map_err(|_| no_pem())?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| TlsError::Decrypt(e.to_string()))?;
        let plain = info.decrypt(password).map_err(|e| TlsError::Decrypt(e.to_string()))?;
        return Ok(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec()).into());
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoPem {
        option,
        path: path.to_owned(),
        what: "private key",
    })
}

/// Where a TLS connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The handshake is under way.
    Handshaking,
    /// The handshake is done and the driver knows what it established.
    Established,
    /// TLS failed: what is queued (an alert, or the plain-HTTP answer) is written, then the
    /// socket closes. Nothing more is read.
    Failed,
    /// The driver finished and `close_notify` is queued.
    Closing,
    /// The socket failed: nothing more can be read or written.
    Dead,
}

/// One connection's TLS state: rustls' connection and where the connection is.
#[derive(Debug)]
pub struct TlsStream {
    conn: ServerConnection,
    /// The server's certificate, until it is handed to the driver with the handshake's result.
    server_cert: Option<Vec<u8>>,
    state: State,
    /// The first byte the client sent (a TLS handshake record starts with 0x16; an HTTP request
    /// with a letter).
    first_byte: Option<u8>,
    /// The plain-text answer to a plain HTTP client; what of it is still to write.
    plain_reply: Option<Bytes>,
    /// The client sent `close_notify`: nothing more is read, what the driver still has to say
    /// is written.
    peer_closed: bool,
}

/// rustls reads from the socket through this.
struct SocketReader<'a, S: Socket + ?Sized> {
    socket: &'a S,
    first_byte: &'a mut Option<u8>,
}

impl<S: Socket + ?Sized> io::Read for SocketReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `recv` only writes initialised bytes into the slice, so viewing initialised
        // memory as possibly-uninitialised is sound: nothing uninitialised is written back.
        let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) };
        let n = self.socket.recv(uninit)?;
        if n > 0 && self.first_byte.is_none() {
            *self.first_byte = Some(buf[0]);
        }
        Ok(n)
    }
}

/// rustls writes to the socket through this.
struct SocketWriter<'a, S: Socket + ?Sized>(&'a S);

impl<S: Socket + ?Sized> io::Write for SocketWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsStream {
    /// Whether the connection reads from its socket (the driver decides as well).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.is_open() && !self.peer_closed
    }

    /// Whether encrypted output (or the plain-HTTP answer) waits to be written.
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.state != State::Dead && (self.plain_reply.is_some() || self.conn.wants_write())
    }

    /// Whether TLS is done with the socket: its last alert is written, or the socket failed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        match self.state {
            State::Dead => true,
            State::Failed | State::Closing => !self.wants_write(),
            State::Handshaking | State::Established => false,
        }
    }

    /// Reads once from `socket` into rustls and hands the plaintext to `driver`.
    pub fn read(
        &mut self,
        driver: &mut Driver,
        socket: &(impl Socket + ?Sized),
        shared: &mut BytesMut,
        now: Instant,
    ) -> Read {
        let mut reader = SocketReader { socket, first_byte: &mut self.first_byte };
        match self.conn.read_tls(&mut reader) {
            Ok(0) => {
                driver.on_eof();
                return Read::Eof;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Read::Interrupted,
            Err(e) => {
                self.state = State::Dead;
                driver.on_io_error(&e);
                return Read::Failed;
            }
        }
        let io_state = match self.conn.process_new_packets() {
            Ok(io_state) => io_state,
            Err(e) => {
                self.fail(driver, &e);
                return Read::Data { short: false };
            }
        };
        if self.state == State::Handshaking && !self.conn.is_handshaking() {
            self.state = State::Established;
            driver.set_tls(Arc::new(self.info()));
        }
        let plaintext = io_state.plaintext_bytes_to_read();
        if plaintext > 0 {
            self.deliver(driver, shared, plaintext, now);
        }
        if io_state.peer_has_closed() {
            // close_notify: the client's end of stream.
            self.peer_closed = true;
            driver.on_eof();
            return Read::Eof;
        }
        // How much the socket had left is unknown here: the caller reads until `WouldBlock`.
        Read::Data { short: false }
    }

    /// Moves `n` bytes of plaintext from rustls into the driver.
    fn deliver(&mut self, driver: &mut Driver, shared: &mut BytesMut, n: usize, now: Instant) {
        if let Some(own) = driver.read_buffer() {
            fill(own, &mut self.conn.reader(), n);
            driver.on_read_buffered(now);
        } else {
            fill(shared, &mut self.conn.reader(), n);
            let mut input = shared.split();
            driver.on_read(&mut input, now);
        }
    }

    /// TLS failed: the connection ends after rustls' alert, or the plain-text answer to a
    /// client that speaks plain HTTP.
    fn fail(&mut self, driver: &mut Driver, err: &rustls::Error) {
        let handshaking = self.state == State::Handshaking;
        self.state = State::Failed;
        let plain_http = handshaking && self.first_byte.is_some_and(|b| b.is_ascii_uppercase());
        let reason = if plain_http {
            // The alert would be gibberish to it: answer in its own protocol instead.
            while self.conn.wants_write() {
                if self.conn.write_tls(&mut io::sink()).is_err() {
                    break;
                }
            }
            self.plain_reply = Some(Bytes::from_static(PLAIN_HTTP_REPLY));
            "a plain HTTP request on the TLS port".to_owned()
        } else if handshaking {
            format!("TLS handshake failed: {err}")
        } else {
            format!("TLS failed: {err}")
        };
        driver.on_io_error(&io::Error::new(io::ErrorKind::InvalidData, reason));
    }

    /// What the handshake established.
    fn info(&mut self) -> TlsInfo {
        TlsInfo {
            version: self.conn.protocol_version().map_or(0, u16::from),
            cipher_suite: self.conn.negotiated_cipher_suite().map_or(0, |s| u16::from(s.suite())),
            server_cert: self.server_cert.take(),
            client_cert_chain: self
                .conn
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
                .unwrap_or_default(),
        }
    }

    /// Encrypts what the driver has queued and writes it, until everything is written or the
    /// socket would block.
    pub fn flush(&mut self, driver: &mut Driver, socket: &(impl Socket + ?Sized)) -> Flush {
        loop {
            if self.state == State::Dead {
                return Flush::Failed;
            }
            if self.is_open() {
                self.encrypt(driver);
                if driver.is_finished() {
                    self.conn.send_close_notify();
                    self.state = State::Closing;
                }
            }
            match self.write(socket) {
                Ok(()) => {}
                Err(WriteEnd::Blocked) => return Flush::Blocked,
                Err(WriteEnd::Failed(e)) => {
                    self.state = State::Dead;
                    driver.on_io_error(&e);
                    return Flush::Failed;
                }
            }
            // Output left behind a full TLS buffer goes on now that the buffer is empty.
            if !(self.is_open() && driver.wants_write()) {
                return Flush::Done;
            }
        }
    }

    /// Relay ([`crate::relay`]): reads once from `socket` into rustls and appends the
    /// plaintext to `into`. `Eof`: the client's `close_notify` or end of stream; `Failed`: the
    /// socket failed, or TLS did (rustls' alert is then queued).
    pub(crate) fn read_plaintext(
        &mut self,
        socket: &(impl Socket + ?Sized),
        into: &mut BytesMut,
    ) -> Read {
        let mut reader = SocketReader { socket, first_byte: &mut self.first_byte };
        match self.conn.read_tls(&mut reader) {
            Ok(0) => return Read::Eof,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Read::Interrupted,
            Err(_) => {
                self.state = State::Dead;
                return Read::Failed;
            }
        }
        let Ok(io_state) = self.conn.process_new_packets() else {
            self.state = State::Failed;
            return Read::Failed;
        };
        let plaintext = io_state.plaintext_bytes_to_read();
        if plaintext > 0 {
            fill(into, &mut self.conn.reader(), plaintext);
        }
        if io_state.peer_has_closed() {
            self.peer_closed = true;
            return Read::Eof;
        }
        Read::Data { short: false }
    }

    /// Relay: encrypts as much of `plain` as rustls' outgoing buffer has room for (see
    /// [`BUFFER_LIMIT`]); returns how much.
    pub(crate) fn write_plaintext(&mut self, plain: &[u8]) -> usize {
        if !self.is_open() {
            return 0;
        }
        self.conn.writer().write(plain).unwrap_or(0)
    }

    /// Relay: queues `close_notify`; nothing more is encrypted.
    pub(crate) fn close(&mut self) {
        if self.is_open() {
            self.conn.send_close_notify();
            self.state = State::Closing;
        }
    }

    /// Relay: writes the queued ciphertext until it is all written or the socket would block.
    pub(crate) fn write_queued(&mut self, socket: &(impl Socket + ?Sized)) -> Flush {
        if self.state == State::Dead {
            return Flush::Failed;
        }
        match self.write(socket) {
            Ok(()) => Flush::Done,
            Err(WriteEnd::Blocked) => Flush::Blocked,
            Err(WriteEnd::Failed(_)) => {
                self.state = State::Dead;
                Flush::Failed
            }
        }
    }

    /// Whether the socket failed: nothing more can be read or written.
    pub(crate) fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// Whether the driver's output (or a relay's) still goes through TLS.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Established)
    }

    /// Moves the driver's output into rustls while its buffer has room: the transport's flush
    /// loop, writing into rustls instead of a socket, where a full buffer is a full socket.
    fn encrypt(&mut self, driver: &mut Driver) {
        let conn = &mut self.conn;
        let moved = crate::io::flush(driver, |bufs| match conn.writer().write_vectored(bufs) {
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            other => other,
        });
        if moved == Flush::Failed {
            self.state = State::Failed;
        }
    }

    /// Writes what is queued for the socket.
    fn write(&mut self, socket: &(impl Socket + ?Sized)) -> Result<(), WriteEnd> {
        if let Some(reply) = &mut self.plain_reply {
            while !reply.is_empty() {
                match socket.send(&[IoSlice::new(reply)]) {
                    Ok(0) => return Err(WriteEnd::Failed(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        let _ = reply.split_to(n);
                    }
                    Err(e) => WriteEnd::sort(e)?,
                }
            }
            self.plain_reply = None;
            return Ok(());
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut SocketWriter(socket)) {
                Ok(0) => return Err(WriteEnd::Failed(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) => WriteEnd::sort(e)?,
            }
        }
        Ok(())
    }
}

/// Why writing to the socket stopped before everything was written.
enum WriteEnd {
    /// The socket is full.
    Blocked,
    /// The socket failed.
    Failed(io::Error),
}

impl WriteEnd {
    /// Sorts a failed socket call: `Ok` to retry at once (interrupted).
    fn sort(err: io::Error) -> Result<(), Self> {
        match err.kind() {
            io::ErrorKind::Interrupted => Ok(()),
            io::ErrorKind::WouldBlock => Err(Self::Blocked),
            _ => Err(Self::Failed(err)),
        }
    }
}

/// Appends the `n` bytes `reader` has (rustls' decrypted plaintext) to `buf`.
fn fill(buf: &mut BytesMut, reader: &mut impl io::Read, n: usize) {
    let start = buf.len();
    buf.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        match reader.read(&mut buf[start + got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(start + got);
}
