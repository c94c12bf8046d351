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
//! 3. the driver's deadline → [`Driver::on_tick`];
//! 4. the socket turning ready, in one wait for both directions through the waker slots of
//!    its registration (every connection keeps the state of its waits for as long as it
//!    lives, and these cost it nothing): writable while output is pending, readable
//!    while [`Driver::wants_read`] (re-evaluated on every turn, so a wake-up after the
//!    application drained its queue resumes reading) and the queued output that does not count
//!    against the application's sends — pongs, close frames, HTTP heads — stays within the
//!    configured `ws_write_high_water`: a peer that sends pings and never reads cannot grow the
//!    pong queue without bound. A readable socket is read; the loop writes on every turn.
//!
//! A peer that does not read therefore never stops commands, timers or shutdown from being
//! processed: pending output only adds an interest to the wait, and a peer that keeps sending
//! never starves the deadline, which comes first. Once the driver has closed the
//! connection and only has output left to write, the peer gets the protocol's close timeout to
//! take it; after that the socket is dropped (otherwise a peer that stopped reading would keep
//! its connection, and the output, forever: the keepalive and close timeouts end the protocol,
//! not the transport). Once [`Driver::is_finished`], the socket is half-closed and lingers
//! briefly (see [`Conn::close`]).
//!
//! Reading, writing and lingering are the shared steps of `zcasgi_transport` (`Session`,
//! `linger`), whose socket calls run inside `AsyncFd::try_io` ([`Tracked`]), so that tokio
//! learns of `WouldBlock` and clears the readiness it cached.
//!
//! In a worker process, each turn also makes the hand-off the driver may wait for, once its
//! output is written (`Context::hand_off`): a connection that went to the worker owning its
//! Engine.IO session ends its task without closing the socket (dropping the `AsyncFd` only
//! deregisters it and closes this process's descriptor). A TLS connection cannot leave the
//! process (`zcasgi_transport::relay`): its task goes on as a relay between the socket and the
//! pair end the hand-off gave it ([`Conn::relay`]), then closes the pair end and the socket.
//!
//! # Buffers
//!
//! An idle connection owns no read buffer. Reads go into the driver's own buffer when it is in
//! the middle of a frame or request ([`Driver::read_buffer`]), and otherwise into one buffer per
//! worker thread, borrowed only for the duration of one read and the synchronous driver call
//! that consumes it — the tokio counterpart of the mio backend's per-thread buffer. Payloads
//! split off that buffer keep its memory alive only as long as the application holds them.
//!
//! [`Driver`]: zcasgi_core::driver::Driver
//! [`Driver::is_finished`]: zcasgi_core::driver::Driver::is_finished
//! [`Driver::on_commands`]: zcasgi_core::driver::Driver::on_commands
//! [`Driver::on_shutdown`]: zcasgi_core::driver::Driver::on_shutdown
//! [`Driver::on_tick`]: zcasgi_core::driver::Driver::on_tick
//! [`Driver::read_buffer`]: zcasgi_core::driver::Driver::read_buffer
//! [`Driver::wants_read`]: zcasgi_core::driver::Driver::wants_read

use std::cell::Cell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Instant;

use bytes::BytesMut;
use socket2::{SockRef, Socket};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::{Interest, Ready};
use zcasgi_core::backend::{ConnId, LogLevel};
use zcasgi_transport::io::{abandon, discard, recv_into, send_vectored, Flush, Read};
use zcasgi_transport::linger::half_close;
use zcasgi_transport::relay::Pump;
use zcasgi_transport::{Accepted, Context, HandOff, Session};

use crate::server::{register, ConnGuard};
use crate::shutdown::Stop;

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

/// A connection's socket calls, made through tokio so that it learns of `WouldBlock`.
struct Tracked<'a>(&'a AsyncFd<Socket>);

impl zcasgi_transport::io::Socket for Tracked<'_> {
    fn recv(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.0.try_io(Interest::READABLE, |s| s.recv(buf))
    }

    fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_io(Interest::WRITABLE, |s| send_vectored(SockRef::from(s), bufs))
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.get_ref().shutdown(std::net::Shutdown::Write)
    }

    fn set_read_low_water(&self, bytes: usize) {
        zcasgi_transport::io::set_read_low_water(SockRef::from(self.0.get_ref()), bytes);
    }
}

/// What ended a wait in [`Conn::serve`].
enum Step<'a> {
    Shutdown,
    Commands,
    Writable,
    Tick,
    /// The socket turned readable (or failed, either way); the guard clears the readiness a
    /// read used up.
    Readable(io::Result<AsyncFdReadyGuard<'a, Socket>>),
}

/// Sets up connection `id`, just `accepted` (or handed over by another worker): its session,
/// and its socket registered with the runtime of the calling task. `None` if the socket could
/// not be registered (its driver has been told).
///
/// Done before the connection's task is spawned, so that the task holds only what serving
/// needs: every connection keeps its task's memory for as long as it lives.
pub(crate) fn open(ctx: &Context, id: ConnId, mut accepted: Accepted) -> Option<Conn> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = Box::new(Wake(wake.clone()));
    let mut session = ctx.session(id, notify, &mut accepted, Instant::now());
    match register(accepted.socket, Interest::READABLE | Interest::WRITABLE) {
        Ok(socket) => Some(Conn { session, socket, wake, read_closed: false, failed: false }),
        Err(e) => {
            session.driver_mut().on_io_error(&e);
            None
        }
    }
}

/// Serves `conn` until it is finished or handed to another worker; `guard` is dropped then.
///
/// Not an `async fn`: its arguments would be kept twice in the task (as arguments and as the
/// locals they are moved into) for the connection's whole life.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn`: see above
pub(crate) fn run(
    mut conn: Conn,
    guard: ConnGuard,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        let ctx = guard.ctx();
        let wake = conn.wake.clone();
        match conn.serve(ctx, &wake, guard.stop()).await {
            HandOff::Stay => conn.close().await,
            HandOff::Moved => {}
            HandOff::Relay(pair) => {
                match register(pair, Interest::READABLE | Interest::WRITABLE) {
                    // Boxed: few connections relay, and its state would grow every task.
                    Ok(pair) => Box::pin(conn.relay(pair)).await,
                    // The owner sees the end of its stream; the client, a closed connection.
                    Err(e) => ctx.log(LogLevel::Warning, format!("cannot register a relay: {e}")),
                }
                conn.close().await;
            }
        }
        drop(guard);
    }
}

/// A connection's socket and protocol state.
pub(crate) struct Conn {
    session: Session,
    socket: AsyncFd<Socket>,
    /// Wakes the task: the application queued commands, or took a message.
    wake: Arc<tokio::sync::Notify>,
    /// The peer closed its side: never read again.
    read_closed: bool,
    /// The socket failed: nothing more can be done with it.
    failed: bool,
}

impl Conn {
    /// The loop described in the module docs; returns once the driver is finished
    /// ([`HandOff::Stay`]) or the connection was handed to another worker.
    async fn serve(&mut self, ctx: &Context, wake: &tokio::sync::Notify, stop: &Stop) -> HandOff {
        let shutdown_signal = stop.notified();
        tokio::pin!(shutdown_signal);
        // Registered before the flag is read: a signal given from now on wakes the wait, and
        // a connection accepted just after the signal sees the flag.
        shutdown_signal.as_mut().enable();
        let mut shutting_down = stop.is_given();
        if shutting_down {
            self.session.driver_mut().on_shutdown(Instant::now());
        }
        let notified = wake.notified();
        tokio::pin!(notified);
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        // The sleep is set to the driver's deadline (its own deadline says which one).
        let mut armed = false;
        loop {
            self.flush();
            match ctx.hand_off(&mut self.session, self.socket.get_ref().as_fd(), Instant::now()) {
                HandOff::Stay => {}
                moved => return moved,
            }
            if self.session.is_finished() {
                return HandOff::Stay;
            }
            match self.session.deadline() {
                Some(at) if !armed || sleep.deadline() != at.into() => {
                    sleep.as_mut().reset(at.into());
                    armed = true;
                }
                Some(_) => {}
                None => armed = false,
            }
            let want_write = self.session.wants_write();
            let want_read = self.wants_read();
            let step = tokio::select! {
                biased;
                () = &mut shutdown_signal, if !shutting_down => Step::Shutdown,
                () = &mut notified => Step::Commands,
                () = &mut sleep, if armed => Step::Tick,
                // After the deadline: a peer that keeps sending must not starve the timers.
                step = poll_fn(|cx| poll_ready(&self.socket, want_read, want_write, cx)),
                    if want_read || want_write => step,
            };
            let now = Instant::now();
            match step {
                Step::Shutdown => {
                    shutting_down = true;
                    self.session.driver_mut().on_shutdown(now);
                }
                Step::Commands => {
                    // A fresh waiter; a wake-up arriving before it is polled leaves a permit.
                    notified.set(wake.notified());
                    self.session.driver_mut().on_commands(now);
                }
                Step::Tick => {
                    // Re-arm on the next turn even if the deadline did not move.
                    armed = false;
                    self.session.driver_mut().on_tick(now);
                }
                Step::Readable(Ok(mut guard)) => {
                    let read =
                        with_read_buf(|buf| self.session.read(&Tracked(&self.socket), buf, now));
                    // A read that emptied the receive queue: wait for the next edge rather
                    // than read again only to learn `WouldBlock`.
                    if read.drained(guard.ready().is_read_closed()) {
                        guard.clear_ready_matching(Ready::READABLE);
                    }
                    drop(guard);
                    self.note_read(read);
                }
                // Written at the top of the loop.
                Step::Writable => {}
                Step::Readable(Err(e)) => self.fail(&e),
            }
        }
    }

    /// Relays the TLS connection's plaintext to its owner through `pair` until the relay is
    /// finished (`zcasgi_transport::relay`), then closes `pair`. The server's shutdown does not
    /// end it: the owner ends the connection, and the relay follows.
    async fn relay(&mut self, pair: AsyncFd<Socket>) {
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        loop {
            let pumped = self.session.pump(&Tracked(&self.socket), &Tracked(&pair), Instant::now());
            let Some(relay) = self.session.relay() else { break };
            if relay.is_finished() {
                self.read_closed |= relay.is_client_done();
                break;
            }
            if pumped == Pump::More {
                tokio::task::yield_now().await;
                continue;
            }
            let deadline = relay.deadline();
            if let Some(at) = deadline {
                sleep.as_mut().reset(at.into());
            }
            // A readiness error shows in the next pump's socket call.
            tokio::select! {
                _ = self.socket.readable(), if relay.wants_read_client() => {}
                _ = self.socket.writable(), if relay.wants_write_client() => {}
                _ = pair.readable(), if relay.wants_read_pair() => {}
                _ = pair.writable(), if relay.wants_write_pair() => {}
                () = &mut sleep, if deadline.is_some() => {}
            }
        }
    }

    /// Whether to wait for the socket to become readable.
    fn wants_read(&self) -> bool {
        !self.read_closed && self.session.wants_read()
    }

    /// Keeps the connection's state in line with what a read gave.
    fn note_read(&mut self, read: Read) {
        match read {
            Read::Eof => self.read_closed = true,
            Read::Failed => self.failed = true,
            Read::Data { .. } | Read::WouldBlock | Read::Interrupted => {}
        }
    }

    /// Writes what the driver has queued until it is all written or the socket would block.
    fn flush(&mut self) {
        if self.session.flush(&Tracked(&self.socket)) == Flush::Failed {
            self.failed = true;
        }
    }

    fn fail(&mut self, err: &io::Error) {
        self.failed = true;
        self.session.driver_mut().on_io_error(err);
    }

    /// Closes the finished connection: half-closes it, then discards whatever the peer still
    /// sends until it closes too, at most for the linger time (`zcasgi_transport::linger`).
    async fn close(&mut self) {
        let input_done = self.read_closed || self.failed;
        let socket = &self.socket;
        let Some(until) = half_close(SockRef::from(socket.get_ref()), input_done, Instant::now())
        else {
            return;
        };
        let drain = async {
            while socket.readable().await.is_ok() {
                let read = with_read_buf(|buf| discard(buf, |b| recv_into(&Tracked(socket), b)));
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
        abandon(self.session.driver_mut());
    }
}

/// Whether `socket` turned readable (when `read`) or writable (when `write`), readable first.
///
/// Waits through the waker slots of the socket's registration rather than
/// [`AsyncFd::ready`], whose waiter would add ~140 bytes to every connection's task.
fn poll_ready<'a>(
    socket: &'a AsyncFd<Socket>,
    read: bool,
    write: bool,
    cx: &mut task::Context<'_>,
) -> Poll<Step<'a>> {
    if read {
        if let Poll::Ready(ready) = socket.poll_read_ready(cx) {
            return Poll::Ready(Step::Readable(ready));
        }
    }
    if write {
        if let Poll::Ready(ready) = socket.poll_write_ready(cx) {
            return Poll::Ready(ready.map_or_else(|e| Step::Readable(Err(e)), |_| Step::Writable));
        }
    }
    Poll::Pending
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
