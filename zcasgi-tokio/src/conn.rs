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
//!    stays within the configured `ws_write_high_water`: a peer that sends pings and never reads
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
//! Reading, writing and lingering are the shared steps of `zcasgi_transport` (`io::read`,
//! `io::flush`, `linger`), whose socket calls run inside `TcpStream::try_io`, so that tokio
//! learns of `WouldBlock` and clears the readiness it cached.
//!
//! # Buffers
//!
//! An idle connection owns no read buffer. Reads go into the driver's own buffer when it is in
//! the middle of a frame or request ([`Driver::read_buffer`]), and otherwise into one buffer per
//! worker thread, borrowed only for the duration of one read and the synchronous driver call
//! that consumes it — the tokio counterpart of the mio backend's per-thread buffer. Payloads
//! split off that buffer keep its memory alive only as long as the application holds them.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use zcasgi_core::backend::ConnId;
use zcasgi_core::driver::Driver;
use zcasgi_transport::io::{abandon, discard, recv_into, send_vectored, Flush, Read};
use zcasgi_transport::linger::half_close;
use zcasgi_transport::Context;

use crate::shutdown::Shutdown;

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

/// Serves connection `id`, just accepted from `client`, until it is finished.
pub(crate) async fn run(
    ctx: &Context,
    id: ConnId,
    stream: TcpStream,
    client: SocketAddr,
    mut shutdown: Shutdown,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let server = stream.local_addr().ok();
    let notify = Box::new(Wake(wake.clone()));
    let driver = ctx.driver(id, notify, Some(client), server, Instant::now());
    let mut conn = Conn { driver, stream, read_closed: false, failed: false };
    conn.serve(&wake, &mut shutdown).await;
    conn.close().await;
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
        let Self { driver, stream, .. } = self;
        let result = with_read_buf(|buf| {
            zcasgi_transport::io::read(driver, buf, now, |b| {
                stream.try_io(Interest::READABLE, || recv_into(SockRef::from(&*stream), b))
            })
        });
        match result {
            Read::Eof => self.read_closed = true,
            Read::Failed => self.failed = true,
            Read::Data { .. } | Read::WouldBlock | Read::Interrupted => {}
        }
    }

    /// Writes what the driver has queued until it is all written or the socket would block.
    fn flush(&mut self) {
        let Self { driver, stream, .. } = self;
        let flushed = zcasgi_transport::io::flush(driver, |bufs| {
            stream.try_io(Interest::WRITABLE, || send_vectored(SockRef::from(&*stream), bufs))
        });
        if flushed == Flush::Failed {
            self.failed = true;
        }
    }

    fn fail(&mut self, err: &io::Error) {
        self.failed = true;
        self.driver.on_io_error(err);
    }

    /// Closes the finished connection: half-closes it, then discards whatever the peer still
    /// sends until it closes too, at most for the linger time (`zcasgi_transport::linger`).
    async fn close(&mut self) {
        let input_done = self.read_closed || self.failed;
        let Some(until) = half_close(SockRef::from(&self.stream), input_done, Instant::now())
        else {
            return;
        };
        let stream = &self.stream;
        let drain = async {
            while stream.readable().await.is_ok() {
                let read = with_read_buf(|buf| {
                    discard(buf, |b| {
                        stream.try_io(Interest::READABLE, || recv_into(SockRef::from(stream), b))
                    })
                });
                if matches!(read, Read::Eof | Read::Failed) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout_at(until.into(), drain).await;
    }
}

impl Drop for Conn {
    /// A connection dropped before it finished (its task was aborted when `join` timed out):
    /// the driver still owes the application a disconnect.
    fn drop(&mut self) {
        abandon(&mut self.driver);
    }
}

/// Runs `f` with the worker thread's read buffer.
fn with_read_buf<R>(f: impl FnOnce(&mut BytesMut) -> R) -> R {
    READ_BUF.with(|cell| {
        let mut buf = cell.take();
        let r = f(&mut buf);
        cell.set(buf);
        r
    })
}
