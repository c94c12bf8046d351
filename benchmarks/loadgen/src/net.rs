//! Targets and connections: loopback only, from several source addresses.
//!
//! One source address gives at most one ephemeral port range (about 28,000 ports) towards one
//! server port, so connection counts above that spread over 127.0.0.x source addresses. Each
//! socket sets `IP_BIND_ADDRESS_NO_PORT` before binding its source address, so the kernel picks
//! the port at `connect` time, per destination, instead of reserving one at `bind`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::tls::Stream;
use crate::ws::{self, Upgrade};

/// Where to connect: a loopback address, and the `Host` and path of the upgrade request.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address (always in 127.0.0.0/8).
    pub addr: SocketAddrV4,
    /// `host:port` for the `Host` header.
    pub host: String,
    /// Request path with query, starting with `/`.
    pub path: String,
    /// A `wss://` or `https://` URL: TLS over the connection.
    pub tls: bool,
}

impl Target {
    /// Parses `ws://`, `wss://`, `http://`, `https://` or `tcp://` URLs (or bare `host:port`)
    /// on 127.0.0.0/8.
    ///
    /// # Errors
    /// A message when the URL is malformed or not a loopback IPv4 address.
    pub fn parse(url: &str) -> Result<Self, String> {
        let tls = url.starts_with("wss://") || url.starts_with("https://");
        let rest = ["ws://", "wss://", "http://", "https://", "tcp://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .unwrap_or(url);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddrV4 =
            authority.parse().map_err(|e| format!("{url}: expected 127.0.0.x:PORT ({e})"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url}: only 127.0.0.0/8 targets are allowed"));
        }
        Ok(Self { addr, host: authority.to_owned(), path: path.to_owned(), tls })
    }

    /// This target with `suffix` appended to its path.
    pub fn join(&self, suffix: &str) -> Self {
        let base = self.path.trim_end_matches('/');
        Self {
            addr: self.addr,
            host: self.host.clone(),
            path: format!("{base}/{suffix}"),
            tls: self.tls,
        }
    }

    /// The upgrade request for this target.
    pub fn upgrade_request(&self) -> Vec<u8> {
        ws::upgrade_request(&self.host, &self.path)
    }
}

/// Checks that every source address is on loopback.
///
/// # Errors
/// A message naming the first address that is not.
pub fn check_sources(sources: &[Ipv4Addr]) -> Result<(), String> {
    match sources.iter().find(|ip| !ip.is_loopback()) {
        Some(ip) => Err(format!("source {ip} is not in 127.0.0.0/8")),
        None => Ok(()),
    }
}

/// The source address of connection number `index` (round-robin), if any were given.
pub fn source_for(sources: &[Ipv4Addr], index: usize) -> Option<Ipv4Addr> {
    if sources.is_empty() {
        None
    } else {
        Some(sources[index % sources.len()])
    }
}

fn set_bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is owned by `socket` and open; the option value points to a live
    // c_int whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens a TCP connection to `addr` from `source` (any port), with `TCP_NODELAY` set.
///
/// # Errors
/// The socket, bind or connect error.
pub async fn tcp_connect(addr: SocketAddrV4, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        set_bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    let stream = socket.connect(SocketAddr::V4(addr)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects and completes the opening handshake, within `timeout`.
///
/// Returns the stream and the bytes the server sent after its `101` head (for example an
/// Engine.IO open packet), which belong to the first frames.
///
/// # Errors
/// Connection errors, a refused upgrade, EOF during the handshake, or `TimedOut`.
pub async fn ws_connect(
    target: &Target,
    request: &[u8],
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> io::Result<(TcpStream, Vec<u8>)> {
    let attempt = async {
        let mut stream = tcp_connect(target.addr, source).await?;
        let rest = upgrade(&mut stream, request).await?;
        Ok((stream, rest))
    };
    within(timeout, attempt).await
}

/// [`ws_connect`] for a target that may be `wss://`: TLS (with `tls`) before the upgrade.
///
/// # Errors
/// As [`ws_connect`], and the TLS handshake's errors; `InvalidInput` for a `wss://` target
/// without a TLS client.
pub async fn stream_connect(
    target: &Target,
    request: &[u8],
    source: Option<Ipv4Addr>,
    timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> io::Result<(Stream, Vec<u8>)> {
    let attempt = async {
        let tcp = tcp_connect(target.addr, source).await?;
        let mut stream = match (target.tls, tls) {
            (false, _) => Stream::Plain(tcp),
            (true, Some(connector)) => crate::tls::handshake(connector, tcp).await?,
            (true, None) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "wss:// needs --ca-file"))
            }
        };
        let rest = upgrade(&mut stream, request).await?;
        Ok((stream, rest))
    };
    within(timeout, attempt).await
}

async fn within<T>(
    timeout: Duration,
    attempt: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// Sends the upgrade `request` and reads the `101` head; returns what followed it.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> io::Result<Vec<u8>> {
    stream.write_all(request).await?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Upgrade::Switched(rest) = ws::parse_upgrade_response(&head)? {
            return Ok(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls_only() {
        let t = Target::parse("ws://127.0.0.1:8001/").unwrap();
        assert_eq!(
            (t.addr.port(), t.path.as_str(), t.host.as_str()),
            (8001, "/", "127.0.0.1:8001")
        );
        let t = Target::parse("http://127.0.0.2:9/chat?x=1").unwrap();
        assert_eq!(t.path, "/chat?x=1");
        assert!(!t.tls);
        let t = Target::parse("wss://127.0.0.1:443/echo").unwrap();
        assert!(t.tls && t.path == "/echo");
        assert_eq!(Target::parse("127.0.0.1:7").unwrap().path, "/");
        assert!(Target::parse("ws://10.0.0.1:80/").is_err());
        assert!(Target::parse("ws://localhost:80/").is_err());
        let joined = Target::parse("http://127.0.0.1:5/").unwrap().join("socket.io/?EIO=4");
        assert_eq!(joined.path, "/socket.io/?EIO=4");
    }

    #[test]
    fn sources_round_robin() {
        let sources = [Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 2)];
        assert_eq!(source_for(&sources, 3), Some(sources[1]));
        assert_eq!(source_for(&[], 3), None);
        assert!(check_sources(&[Ipv4Addr::new(192, 168, 0, 1)]).is_err());
    }
}
