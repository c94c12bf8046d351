//! One connection's task: a `select!` loop that moves bytes between a socket and a [`Driver`].
//!
//! # Theory of operation
//!
//! The loop first writes everything the driver has queued until the socket would block, then
//! waits for whichever comes first, in this order of preference (`biased`):
//!
//! 1. the server's shutdown signal (once) → [`Driver::on_shutdown`];
//! 2. the connection's wake-up (the application queued commands, or took a message while
//!    reading was paused) → [`Driver::on_commands`];
//! 3. the socket turning writable, while output is pending;
//! 4. the driver's deadline → [`Driver::on_tick`];
//! 5. the socket turning readable, while [`Driver::wants_read`] (re-evaluated on every turn, so
//!    a wake-up after the application drained its queue resumes reading) and the queued output
//!    that does not count against the application's sends — pongs, close frames, HTTP heads —
//!    stays within [`ServerConfig::write_high_water`]: a peer that sends pings and never reads
//!    cannot grow the pong queue without bound.
//!
//! A peer that does not read therefore never stops commands, timers or shutdown from being
//! processed: pending output only adds a branch to the wait. Once the driver has closed the
//! connection and only has output left to write, the peer gets the protocol's close timeout to
//! take it; after that the socket is dropped (otherwise a peer that stopped reading would keep
//! its connection, and the output, forever: the keepalive and close timeouts end the protocol,
//! not the transport). Once [`Driver::is_finished`], the socket is half-closed and lingers
//! briefly (see [`Conn::close`]).
//!
//! # Buffers
//!
//! An idle connection owns no read buffer. Reads go into the driver's own buffer when it is in
//! the middle of a frame or request ([`Driver::read_buffer`]), and otherwise into one buffer per
//! worker thread, borrowed only for the duration of a `try_read` and the synchronous driver
//! call that consumes it — the tokio counterpart of the mio backend's per-thread buffer.
//! Payloads split off that buffer keep its memory alive only as long as the application holds
//! them.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zcasgi_core::backend::{ConnId, EventSink, ServerConfig};
use zcasgi_core::driver::{Driver, MAX_IOVECS};

use crate::shutdown::Shutdown;

/// Bytes reserved for a read when a buffer runs short of spare capacity.
const READ_CHUNK: usize = 16 * 1024;

/// Spare capacity below which a buffer is topped up by [`READ_CHUNK`] before a read.
const MIN_SPARE: usize = 4 * 1024;

/// How long a finished connection waits for the peer to close its side (see [`Conn::close`]).
const LINGER: Duration = Duration::from_secs(1);

thread_local! {
    /// The worker thread's read buffer; taken out of the cell while in use.
    static READ_BUF: Cell<BytesMut> = Cell::new(BytesMut::new());
}

/// Wakes a connection's task: a permit is stored if the task is busy, so no wake-up is lost.
struct Wake(Arc<tokio::sync::Notify>);

impl zcasgi_core::backend::Notify for Wake {
    fn notify(&self) {
        self.0.notify_one();
    }
}

/// What ended a wait in [`Conn::serve`].
enum Step {
    Shutdown,
    Commands,
    Writable(io::Result<()>),
    Tick,
    Readable(io::Result<()>),
}

/// Serves one accepted connection until it is finished.
pub(crate) async fn run(
    id: ConnId,
    stream: TcpStream,
    client: SocketAddr,
    cfg: Arc<ServerConfig>,
    sink: Arc<dyn EventSink>,
    mut shutdown: Shutdown,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let server = stream.local_addr().ok();
    let notify = Box::new(Wake(wake.clone()));
    let driver = Driver::new(id, cfg, sink, notify, Some(client), server, Instant::now());
    let mut conn = Conn { driver, stream, read_closed: false, failed: false };
    conn.serve(&wake, &mut shutdown).await;
    conn.close(&mut shutdown).await;
}

/// A connection's socket and protocol state.
struct Conn {
    driver: Driver,
    stream: TcpStream,
    /// The peer closed its side: never read again.
    read_closed: bool,
    /// The socket failed: nothing more can be done with it.
    failed: bool,
}

impl Conn {
    /// The loop described in the module docs; returns once the driver is finished.
    async fn serve(&mut self, wake: &tokio::sync::Notify, shutdown: &mut Shutdown) {
        // Resolves at once for a connection accepted just after the signal.
        let mut shutting_down = false;
        let shutdown_signal = shutdown.recv();
        tokio::pin!(shutdown_signal);
        let notified = wake.notified();
        tokio::pin!(notified);
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush();
            if self.driver.is_finished() {
                return;
            }
            let deadline = self.driver.deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at.into());
                }
                armed = deadline;
            }
            let want_write = self.driver.wants_write();
            let want_read = self.wants_read();
            let step = tokio::select! {
                biased;
                () = &mut shutdown_signal, if !shutting_down => Step::Shutdown,
                () = &mut notified => Step::Commands,
                r = self.stream.writable(), if want_write => Step::Writable(r),
                () = &mut sleep, if armed.is_some() => Step::Tick,
                r = self.stream.readable(), if want_read => Step::Readable(r),
            };
            let now = Instant::now();
            match step {
                Step::Shutdown => {
                    shutting_down = true;
                    self.driver.on_shutdown(now);
                }
                Step::Commands => {
                    // A fresh waiter; a wake-up arriving before it is polled leaves a permit.
                    notified.set(wake.notified());
                    self.driver.on_commands(now);
                }
                Step::Tick => {
                    // Re-arm on the next turn even if the deadline did not move.
                    armed = None;
                    self.driver.on_tick(now);
                }
                Step::Readable(Ok(())) => self.read(now),
                // Written at the top of the loop.
                Step::Writable(Ok(())) => {}
                Step::Writable(Err(e)) | Step::Readable(Err(e)) => self.fail(&e),
            }
        }
    }

    /// Whether to wait for the socket to become readable.
    fn wants_read(&self) -> bool {
        !self.read_closed && self.driver.wants_read()
    }

    /// Reads once and hands the bytes to the driver.
    fn read(&mut self, now: Instant) {
        let result = if let Some(buf) = self.driver.read_buffer() {
            reserve_spare(buf);
            let r = self.stream.try_read_buf(buf);
            if matches!(r, Ok(n) if n > 0) {
                self.driver.on_read_buffered(now);
            }
            r
        } else {
            READ_BUF.with(|cell| {
                let mut buf = cell.take();
                reserve_spare(&mut buf);
                let r = self.stream.try_read_buf(&mut buf);
                if matches!(r, Ok(n) if n > 0) {
                    self.driver.on_read(&mut buf, now);
                }
                cell.set(buf);
                r
            })
        };
        match result {
            Ok(0) => {
                self.read_closed = true;
                self.driver.on_eof();
            }
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => self.fail(&e),
        }
    }

    /// Writes what the driver has queued until it is all written or the socket would block.
    fn flush(&mut self) {
        while self.driver.wants_write() {
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = self.driver.io_slices(&mut slices);
                if n == 0 {
                    return;
                }
                self.stream.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => {
                    self.fail(&io::ErrorKind::WriteZero.into());
                    return;
                }
                Ok(n) => self.driver.on_written(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, err: &io::Error) {
        self.failed = true;
        self.driver.on_io_error(err);
    }

    /// Closes the finished connection.
    ///
    /// RFC 6455 §7.1.1: the server closes the TCP connection first. It half-closes, then
    /// discards whatever the peer still sends until the peer closes too (at most [`LINGER`], cut
    /// short by server shutdown): closing a socket with unread input makes the kernel send a
    /// RST, which can destroy the close frame or error response still in flight to the peer.
    async fn close(&mut self, shutdown: &mut Shutdown) {
        if self.failed || self.stream.shutdown().await.is_err() {
            return;
        }
        if self.read_closed || shutdown.is_shutdown() {
            return;
        }
        let stream = &self.stream;
        let drain = async {
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                let r = READ_BUF.with(|cell| {
                    let mut buf = cell.take();
                    reserve_spare(&mut buf);
                    let r = stream.try_read_buf(&mut buf);
                    buf.clear();
                    cell.set(buf);
                    r
                });
                match r {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if is_transient(&e) => {}
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            () = drain => {}
            () = tokio::time::sleep(LINGER) => {}
            () = shutdown.recv() => {}
        }
    }
}

impl Drop for Conn {
    /// A connection dropped before it finished (its task was aborted when `join` timed out):
    /// the driver still owes the application a disconnect.
    fn drop(&mut self) {
        if !self.driver.is_finished() {
            let err = io::Error::new(io::ErrorKind::ConnectionAborted, "server stopped");
            self.driver.on_io_error(&err);
        }
    }
}

/// Makes sure a read has room for more than a few bytes.
fn reserve_spare(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(READ_CHUNK);
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
