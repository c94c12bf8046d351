//! Moving bytes between a socket and a [`Driver`]: the read step, the vectored flush loop, and
//! the two socket calls they make.
//!
//! The socket calls take a [`SockRef`], so a readiness loop calls them on its own sockets and
//! tokio through `TcpStream::try_io`. Writes use `sendmsg` with `MSG_NOSIGNAL`: a write to a peer
//! that has gone returns `EPIPE` instead of raising `SIGPIPE`, which kills the process when the
//! embedding program (Python, a C host) did not ignore that signal (`writev` would raise it).
//!
//! The read step and the flush loop take the socket call as a closure and tell the driver what
//! happened; the backend keeps only its own readiness bookkeeping.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::time::Instant;

use bytes::BytesMut;
use socket2::SockRef;
use zcasgi_core::driver::{Driver, MAX_IOVECS};

/// Size of each allocation of a shared read buffer.
pub const READ_BUF_SIZE: usize = 64 * 1024;

/// Below this much free space, a shared read buffer gets a new allocation before a read.
pub const MIN_READ: usize = 4 * 1024;

/// Smallest growth of a driver's own read buffer when it is full.
const DIRECT_GROW: usize = 4 * 1024;

/// `send` flags: never raise `SIGPIPE` (see the module docs).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
const SEND_FLAGS: libc::c_int = 0;

/// Prepares an accepted TCP socket: `TCP_NODELAY` (best effort: a socket that refuses it still
/// works), and on Apple systems, which have no `MSG_NOSIGNAL`, `SO_NOSIGPIPE`.
pub fn configure(socket: SockRef<'_>) {
    let _ = socket.set_tcp_nodelay(true);
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    let _ = socket.set_nosigpipe(true);
}

/// The two socket calls of a connection, as its backend makes them: a readiness loop calls the
/// socket directly (the implementation for [`socket2::Socket`]); tokio wraps each call so that
/// it learns of `WouldBlock`.
pub trait Socket {
    /// Reads once into `buf`; returns the bytes read (0: end of stream).
    fn recv(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize>;
    /// Writes `bufs` with one vectored call that never raises `SIGPIPE` ([`send_vectored`]);
    /// returns the bytes written.
    fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Shuts the writing side down (the peer reads its end of stream).
    fn shutdown_write(&self) -> io::Result<()>;
    /// Sets the receive low-water mark: the socket reports itself readable once `bytes` are
    /// queued (or at the end of the stream), not at the first byte. Best effort: a socket
    /// without one ignores it.
    fn set_read_low_water(&self, bytes: usize) {
        let _ = bytes;
    }
}

impl Socket for socket2::Socket {
    fn recv(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        socket2::Socket::recv(self, buf)
    }

    fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(SockRef::from(self), bufs)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn set_read_low_water(&self, bytes: usize) {
        set_read_low_water(SockRef::from(self), bytes);
    }
}

/// Sets `SO_RCVLOWAT` (see [`Socket::set_read_low_water`]); errors are ignored (the mark is
/// an optimisation: without it the socket wakes its reader at the first byte, as by default).
pub fn set_read_low_water(socket: SockRef<'_>, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open (borrowed from a live socket), and `value` is a valid
    // `c_int` that outlives the call, whose size is passed.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Smallest rest of a frame worth waiting for in one read (see [`read_low_water`]).
pub const MIN_LOW_WATER: usize = 64 * 1024;

/// Most bytes a connection waits for before it reads (see [`read_low_water`]).
pub const MAX_LOW_WATER: usize = 1024 * 1024;

/// The receive low-water mark for a driver that awaits `awaited` bytes
/// ([`Driver::awaited_bytes`]): the rest of a large frame (up to [`MAX_LOW_WATER`]) arrives
/// whole before the reader wakes, so its payload takes one read instead of one per wake-up;
/// 1 (the default: wake at the first byte) otherwise.
#[must_use]
pub fn read_low_water(awaited: usize) -> usize {
    if awaited >= MIN_LOW_WATER {
        awaited.min(MAX_LOW_WATER)
    } else {
        1
    }
}

/// Reads once into the spare capacity of `buf` (which must have some); returns the bytes read.
pub fn recv_into(socket: &(impl Socket + ?Sized), buf: &mut BytesMut) -> io::Result<usize> {
    debug_assert!(buf.capacity() > buf.len(), "reading into a full buffer looks like EOF");
    let n = socket.recv(buf.spare_capacity_mut())?;
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity, and `n` is at most
    // its length, so the first `len + n` bytes of the buffer are initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes `bufs` with one `sendmsg` that never raises `SIGPIPE`; returns the bytes written.
pub fn send_vectored(socket: SockRef<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    socket.send_vectored_with_flags(bufs, SEND_FLAGS)
}

/// What one read from the socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Bytes were read (and given to the driver).
    Data {
        /// The read did not fill the room it was offered: the receive queue was emptied.
        short: bool,
    },
    /// The peer closed its side (the driver has been told).
    Eof,
    /// Nothing to read now.
    WouldBlock,
    /// A signal interrupted the call: read again.
    Interrupted,
    /// The socket failed (the driver has been told).
    Failed,
}

/// Whether a read that did not fill its room proves the receive queue empty, so that the
/// `WouldBlock` read can be skipped. True for epoll: data arriving after the read raises a new
/// edge.
const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl Read {
    /// Whether this read left the receive queue empty, so that the next read should wait for
    /// the socket to turn readable again: `WouldBlock`, or (on epoll) a read that did not fill
    /// its room. `half_closed`: the readiness that led to the read also reported the peer's
    /// half-close, which may have arrived before the read and raises no edge of its own; then
    /// only `WouldBlock` (or the end of stream) proves the queue empty.
    #[must_use]
    pub fn drained(self, half_closed: bool) -> bool {
        match self {
            Self::WouldBlock => true,
            Self::Data { short } => short && SHORT_READ_DRAINS && !half_closed,
            Self::Eof | Self::Interrupted | Self::Failed => false,
        }
    }

    /// Sorts the result of a read of `room` bytes.
    fn of(result: &io::Result<usize>, room: usize) -> Self {
        match result {
            Ok(0) => Self::Eof,
            Ok(n) => Self::Data { short: *n < room },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Self::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Self::Interrupted,
            Err(_) => Self::Failed,
        }
    }
}

/// Reads once into the driver's own buffer ([`Driver::read_buffer`]) or else into `shared`,
/// and hands what was read to the driver.
///
/// `recv` makes the socket call (normally [`recv_into`]). `shared` is a buffer the backend
/// lends to all its connections (one per thread): only the bytes read are split off it, so the
/// rest of its allocation serves the next read, and it gets a new allocation of
/// [`READ_BUF_SIZE`] when less than [`MIN_READ`] is left.
pub fn read(
    driver: &mut Driver,
    shared: &mut BytesMut,
    now: Instant,
    mut recv: impl FnMut(&mut BytesMut) -> io::Result<usize>,
) -> Read {
    let (result, room, direct) = if let Some(own) = driver.read_buffer() {
        if own.capacity() == own.len() {
            // Grow into a buffer of its own: `reserve` on a view of a shared buffer would
            // allocate a whole `READ_BUF_SIZE` (its original capacity) for a few bytes.
            let mut grown = BytesMut::with_capacity(own.len() + own.len().max(DIRECT_GROW));
            grown.extend_from_slice(own);
            *own = grown;
        }
        let room = own.capacity() - own.len();
        (recv(own), room, true)
    } else {
        let room = reserve(shared);
        (recv(shared), room, false)
    };
    let read = Read::of(&result, room);
    match (read, result) {
        (Read::Data { .. }, _) if direct => driver.on_read_buffered(now),
        (Read::Data { .. }, _) => {
            // Only the bytes read go to the driver: whatever it keeps pins no more.
            let mut input = shared.split();
            driver.on_read(&mut input, now);
        }
        (Read::Eof, _) => driver.on_eof(),
        (Read::Failed, Err(e)) => driver.on_io_error(&e),
        _ => {}
    }
    read
}

/// Reads once into `scratch` and drops what was read (a lingering connection's input).
/// [`Read::Eof`] and [`Read::Failed`] mean the socket can be closed now.
pub fn discard(
    scratch: &mut BytesMut,
    recv: impl FnOnce(&mut BytesMut) -> io::Result<usize>,
) -> Read {
    let room = reserve(scratch);
    let read = Read::of(&recv(scratch), room);
    scratch.clear();
    read
}

/// Gives `buf` room for a read; returns the room.
fn reserve(buf: &mut BytesMut) -> usize {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_BUF_SIZE);
    }
    buf.capacity() - buf.len()
}

/// How a [`flush`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued is written.
    Done,
    /// The socket is full: flush again once it is writable.
    Blocked,
    /// The socket failed (the driver has been told).
    Failed,
}

/// Writes the driver's out queue with vectored writes until it is empty or `write` would
/// block, reporting progress to the driver.
///
/// `write` makes the socket call (normally [`send_vectored`]).
pub fn flush(
    driver: &mut Driver,
    mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> Flush {
    while driver.wants_write() {
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = driver.io_slices(&mut slices);
            if n == 0 {
                break;
            }
            write(&slices[..n])
        };
        match result {
            Ok(0) => {
                driver.on_io_error(&io::ErrorKind::WriteZero.into());
                return Flush::Failed;
            }
            Ok(n) => driver.on_written(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
            Err(e) => {
                driver.on_io_error(&e);
                return Flush::Failed;
            }
        }
    }
    Flush::Done
}

/// Tells the application that a connection the server drops before it finished is gone
/// (a forced stop): it sees a disconnect with 1006.
pub fn abandon(driver: &mut Driver) {
    if !driver.is_finished() {
        driver.on_io_error(&io::Error::new(io::ErrorKind::ConnectionAborted, "server stopped"));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use zcasgi_core::backend::{Event, EventSink, ServerConfig};

    use super::*;

    #[test]
    fn only_an_empty_queue_is_drained() {
        assert!(Read::WouldBlock.drained(false));
        assert!(Read::WouldBlock.drained(true));
        assert_eq!(Read::Data { short: true }.drained(false), SHORT_READ_DRAINS);
        // A half-close reported with the readiness may predate the read: read until EOF.
        assert!(!Read::Data { short: true }.drained(true));
        assert!(!Read::Data { short: false }.drained(false));
        for read in [Read::Eof, Read::Interrupted, Read::Failed] {
            assert!(!read.drained(false), "{read:?}");
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<Event>>);

    impl EventSink for Sink {
        fn push(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    struct NoWake;

    impl zcasgi_core::backend::Notify for NoWake {
        fn notify(&self) {}
    }

    fn driver(sink: &Arc<Sink>) -> Driver {
        let cfg = Arc::new(ServerConfig::default());
        Driver::new(
            1,
            cfg,
            sink.clone(),
            Box::new(NoWake),
            None,
            None,
            Instant::now(),
            std::time::SystemTime::now(),
        )
    }

    /// A driver that has a 400 response to write, and nothing else to do; and those bytes.
    fn rejecting() -> (Driver, Vec<u8>) {
        let sink = Arc::new(Sink::default());
        let mut d = driver(&sink);
        assert_eq!(flush(&mut d, |_| unreachable!("nothing to write")), Flush::Done);
        d.on_read(&mut BytesMut::from(&b"NOT HTTP\r\n\r\n"[..]), Instant::now());
        let expected = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = d.io_slices(&mut slices);
            slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
        };
        (d, expected)
    }

    #[test]
    fn flush_writes_everything_across_short_writes_and_retries() {
        let (mut d, expected) = rejecting();
        assert!(expected.starts_with(b"HTTP/1.1 400"), "{expected:?}");
        let mut written = Vec::new();
        let mut calls = 0;
        let mut write = |bufs: &[IoSlice<'_>]| {
            calls += 1;
            match calls % 3 {
                // A short write of at most 5 bytes, an interrupted call, a full socket.
                1 => {
                    let first = &bufs[0][..bufs[0].len().min(5)];
                    written.extend_from_slice(first);
                    Ok(first.len())
                }
                2 => Err(io::ErrorKind::Interrupted.into()),
                _ => Err(io::ErrorKind::WouldBlock.into()),
            }
        };
        let mut blocked = 0;
        while flush(&mut d, &mut write) == Flush::Blocked {
            blocked += 1;
        }
        assert!(blocked > 0);
        assert_eq!(written, expected);
        assert!(d.is_finished());
    }

    #[test]
    fn flush_reports_a_failed_socket_to_the_driver() {
        let (mut d, _) = rejecting();
        assert_eq!(flush(&mut d, |_| Err(io::ErrorKind::BrokenPipe.into())), Flush::Failed);
        assert!(d.is_finished());
        let (mut d, _) = rejecting();
        assert_eq!(flush(&mut d, |_| Ok(0)), Flush::Failed);
        assert!(d.is_finished());
    }

    #[test]
    fn read_feeds_the_driver_and_reports_what_happened() {
        let sink = Arc::new(Sink::default());
        let mut d = driver(&sink);
        let mut shared = BytesMut::new();
        let head = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
        let got = read(&mut d, &mut shared, Instant::now(), |buf| {
            buf.extend_from_slice(head);
            Ok(head.len())
        });
        assert_eq!(got, Read::Data { short: true });
        assert!(shared.is_empty() && shared.capacity() >= MIN_READ, "the rest stays to read into");
        assert!(matches!(&sink.0.lock().unwrap()[..], [Event::HttpRequest(_), ..]));
        let never =
            |_: &mut BytesMut| -> io::Result<usize> { Err(io::ErrorKind::WouldBlock.into()) };
        assert_eq!(read(&mut d, &mut shared, Instant::now(), never), Read::WouldBlock);
        assert_eq!(read(&mut d, &mut shared, Instant::now(), |_| Ok(0)), Read::Eof);
    }

    #[test]
    fn discard_drops_what_it_reads() {
        let mut scratch = BytesMut::new();
        let got = discard(&mut scratch, |buf| {
            buf.extend_from_slice(b"late input");
            Ok(10)
        });
        assert_eq!(got, Read::Data { short: true });
        assert!(scratch.is_empty());
        assert_eq!(discard(&mut scratch, |_| Ok(0)), Read::Eof);
        let reset =
            |_: &mut BytesMut| -> io::Result<usize> { Err(io::ErrorKind::ConnectionReset.into()) };
        assert_eq!(discard(&mut scratch, reset), Read::Failed);
    }

    #[test]
    fn low_water_is_the_rest_of_a_large_frame_within_bounds() {
        assert_eq!(read_low_water(0), 1);
        assert_eq!(read_low_water(MIN_LOW_WATER - 1), 1);
        assert_eq!(read_low_water(MIN_LOW_WATER), MIN_LOW_WATER);
        assert_eq!(read_low_water(300_000), 300_000);
        assert_eq!(read_low_water(usize::MAX), MAX_LOW_WATER);
    }

    #[test]
    fn set_read_low_water_sets_so_rcvlowat() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let socket = socket2::Socket::from(ours);
        let get = || {
            use std::os::fd::AsRawFd;
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: the descriptor is open; `value` and `len` are valid for writes.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&raw mut value).cast(),
                    &raw mut len,
                )
            };
            assert_eq!(rc, 0);
            value
        };
        assert_eq!(get(), 1);
        Socket::set_read_low_water(&socket, 300_000);
        assert_eq!(get(), 300_000);
        Socket::set_read_low_water(&socket, 1);
        assert_eq!(get(), 1);
    }

    static SIGPIPES: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count_sigpipe(_: libc::c_int) {
        SIGPIPES.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts `SIGPIPE` instead of ignoring it (as the Rust runtime does) while alive.
    struct CountSigpipe(libc::sigaction);

    impl CountSigpipe {
        fn install() -> Self {
            // SAFETY: all-zero is a valid `sigaction` (no flags, empty mask, default handler).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = count_sigpipe as extern "C" fn(libc::c_int) as usize;
            // SAFETY: as above.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid `sigaction`s; the handler is async-signal-safe.
            assert_eq!(
                unsafe { libc::sigaction(libc::SIGPIPE, &raw const action, &raw mut old) },
                0
            );
            Self(old)
        }
    }

    impl Drop for CountSigpipe {
        fn drop(&mut self) {
            // SAFETY: restores the disposition saved by `install`.
            unsafe { libc::sigaction(libc::SIGPIPE, &raw const self.0, std::ptr::null_mut()) };
        }
    }

    #[test]
    fn send_vectored_never_raises_sigpipe() {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        // Writing after our own half-close fails with EPIPE, which raises SIGPIPE by default.
        ours.shutdown(Shutdown::Write).unwrap();
        let counting = CountSigpipe::install();
        let err = send_vectored(SockRef::from(&ours), &[IoSlice::new(b"late")]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        assert_eq!(SIGPIPES.load(Ordering::SeqCst), 0);
        // The control: `writev`, as tokio's `try_write_vectored` uses, raises it.
        let iov = libc::iovec { iov_base: b"late".as_ptr() as *mut libc::c_void, iov_len: 4 };
        // SAFETY: `iov` describes 4 readable bytes; the descriptor is open.
        assert_eq!(unsafe { libc::writev(ours.as_raw_fd(), &raw const iov, 1) }, -1);
        assert_eq!(SIGPIPES.load(Ordering::SeqCst), 1);
        drop(counting);
    }
}
