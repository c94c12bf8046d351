//! What every thread or task of one server shares, whatever the event model.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use zcasgi_core::backend::{
    ConnId, Event, EventSink, LocalAddr, LogLevel, Notify, ServerConfig, WorkerSockets,
};
use zcasgi_core::driver::{max_handoff_bytes, Driver};

use crate::accept::{AcceptError, AcceptLog};
use crate::handoff::{self, Origin, Received, Receiver};
use crate::listener::Accepted;
use crate::session::Session;
use crate::tls::Acceptor;
use crate::tracker::Tracker;

/// What [`Context::hand_off`] did with a connection.
#[derive(Debug)]
pub enum HandOff {
    /// Nothing, or not yet: the connection stays as it is.
    Stay,
    /// It went to its owner: the backend deregisters and drops the socket, without shutting
    /// it down.
    Moved,
    /// Its plaintext goes to its owner through this end of a socket pair (non-blocking,
    /// close-on-exec): the backend registers it beside the socket and pumps the session
    /// ([`Session::pump`]) on the readiness of either, and closes it once the session is
    /// finished, before the socket's own close.
    Relay(socket2::Socket),
}

/// A connected pair of Unix stream sockets, non-blocking and close-on-exec, for a relay:
/// (this process's end, the owner's end).
fn relay_pair() -> io::Result<(socket2::Socket, socket2::Socket)> {
    // `pair` makes both ends close-on-exec.
    let (ours, theirs) = socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    Ok((ours, theirs))
}

/// The state one server's threads or tasks share: its configuration and sink, connection ids
/// (unique within the server), the accept error log, the open connection count, the
/// tracker that `join` waits on, and in a worker process its slot and inboxes.
pub struct Context {
    cfg: Arc<ServerConfig>,
    sink: Arc<dyn EventSink>,
    /// The TLS configuration, when the server serves TLS.
    tls: Option<Acceptor>,
    /// In a worker process: its slot, and the sockets connections are handed over on.
    worker: Option<WorkerSockets>,
    next_id: AtomicU64,
    accept_log: AcceptLog,
    /// Connections accepted and not yet closed.
    connections: AtomicUsize,
    tracker: Arc<Tracker>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("next_id", &self.next_id)
            .field("connections", &self.connections)
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The context of a server serving with `cfg` and reporting to `sink`; in a worker process,
    /// `worker` is its slot and inboxes.
    ///
    /// # Errors
    /// `InvalidInput` if the TLS options cannot be used (the message names the option;
    /// `zcasgi.Config` checks them before a server starts).
    pub fn new(
        cfg: Arc<ServerConfig>,
        sink: Arc<dyn EventSink>,
        worker: Option<WorkerSockets>,
    ) -> io::Result<Self> {
        let tls = Acceptor::from_config(&cfg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Self {
            cfg,
            sink,
            tls,
            worker,
            next_id: AtomicU64::new(1),
            accept_log: AcceptLog::default(),
            connections: AtomicUsize::new(0),
            tracker: Tracker::new(),
        })
    }

    /// The server's configuration.
    #[must_use]
    pub fn cfg(&self) -> &Arc<ServerConfig> {
        &self.cfg
    }

    /// Sends a log record to the application side.
    pub fn log(&self, level: LogLevel, message: String) {
        self.sink.push(Event::Log { level, message });
    }

    /// A new connection id: 1, 2, 3… within this server.
    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The session of connection `id`, just `accepted` (or handed over) at `now`; the bytes
    /// another worker read from a connection it handed over are taken and fed to the driver.
    #[must_use]
    pub fn session(
        &self,
        id: ConnId,
        notify: Box<dyn Notify>,
        accepted: &mut Accepted,
        now: Instant,
    ) -> Session {
        // The core reads no clock: the wall-clock time of the accept dates its responses.
        let wall = SystemTime::now();
        let (client, server) = (accepted.client, accepted.server.clone());
        let mut driver =
            Driver::new(id, self.cfg.clone(), self.sink.clone(), notify, client, server, now, wall);
        if let Some(worker) = &self.worker {
            driver.set_worker(worker.slot());
        }
        if self.cfg.limit_concurrency.is_some_and(|limit| self.connection_count() > limit) {
            driver.set_overloaded();
        }
        if self.cfg.log.level == LogLevel::Trace {
            let socket =
                if matches!(accepted.server, Some(LocalAddr::Unix(_))) { "unix" } else { "tcp" };
            let tls = if self.tls.is_some() && accepted.handed.is_none() { "+tls" } else { "" };
            let from =
                if accepted.handed.is_some() { ", handed over by another worker" } else { "" };
            driver.trace_open(&format!("{socket}{tls}{from}"));
        }
        if let Some(mut bytes) = accepted.handed.take() {
            // Another worker read this much of it: a plain connection, or the pair end of a
            // TLS connection that worker relays (see `hand_off`), which the scope shows as
            // the TLS connection it is.
            if let Some(tls) = accepted.tls.take() {
                driver.set_tls(tls);
            }
            driver.on_handed_in(&mut bytes, now);
            return Session::plain(driver);
        }
        match self.tls.as_ref().map(Acceptor::stream) {
            None => Session::plain(driver),
            Some(Ok(tls)) => Session::tls(driver, tls),
            Some(Err(e)) => {
                // Not expected with a configuration that loaded: the connection is dropped.
                driver.on_io_error(&io::Error::other(format!("cannot start TLS: {e}")));
                Session::plain(driver)
            }
        }
    }

    /// The receiving end of this worker's inbox, for the backend to wait on; `None` outside a
    /// worker process.
    #[must_use]
    pub fn inbox(&self) -> Option<BorrowedFd<'_>> {
        self.worker.as_ref().map(|w| w.inbox().as_fd())
    }

    /// A buffer to receive hand-offs from the inbox with (one per thread or task that does).
    #[must_use]
    pub fn receiver(&self) -> Receiver {
        Receiver::new(max_handoff_bytes(&self.cfg))
    }

    /// Receives one connection handed over from the inbox; `Ok(None)` when a message carried
    /// none (it is logged).
    ///
    /// # Errors
    /// `WouldBlock` once the inbox is empty (or outside a worker process); any other error of
    /// `recvmsg`.
    pub fn receive(&self, receiver: &mut Receiver) -> io::Result<Option<Accepted>> {
        let inbox = self.inbox().ok_or(io::ErrorKind::WouldBlock)?;
        match receiver.recv(inbox)? {
            Received::Conn(conn) => Ok(Some(conn)),
            Received::Dropped(why) => {
                self.log(
                    LogLevel::Warning,
                    format!("dropped a hand-off from another worker: {why}"),
                );
                Ok(None)
            }
        }
    }

    /// Makes the hand-off that the connection of `session`, on socket `conn`, waits for, if
    /// any, and tells its driver how it went.
    ///
    /// A plain connection goes to its owner as it is: the backend then deregisters and drops
    /// the socket, without shutting it down or lingering (the owner serves it now). A TLS
    /// connection cannot leave this process, which holds its TLS state: the owner gets one end
    /// of a fresh socket pair instead, and the session becomes a relay between the socket and
    /// the other end, which the backend registers and pumps ([`crate::relay`]).
    pub fn hand_off(&self, session: &mut Session, conn: BorrowedFd<'_>, now: Instant) -> HandOff {
        let Some(worker) = &self.worker else { return HandOff::Stay };
        let tls = session.is_tls();
        let driver = session.driver_mut();
        let Some((owner, bytes)) = driver.handoff() else { return HandOff::Stay };
        let origin = Origin::of(driver);
        let mut relay = None;
        let result = match worker.peer(owner) {
            Some(inbox) if tls => relay_pair().and_then(|(ours, theirs)| {
                handoff::send(inbox.as_fd(), theirs.as_fd(), &origin, bytes)?;
                relay = Some(ours);
                Ok(())
            }),
            Some(inbox) => handoff::send(inbox.as_fd(), conn, &origin, bytes),
            None => Err(io::Error::other("no inbox for that worker")),
        };
        driver.on_handoff(result, now);
        if !driver.is_handed_off() {
            return HandOff::Stay;
        }
        match relay {
            Some(pair) => {
                session.start_relay(self.cfg.close_timeout);
                HandOff::Relay(pair)
            }
            None => HandOff::Moved,
        }
    }

    /// Classifies an `accept` error seen at `now`, and logs it (rate-limited) if accepting has
    /// to pause.
    pub fn accept_error(&self, err: &io::Error, now: Instant) -> AcceptError {
        let action = AcceptError::classify(err);
        if action == AcceptError::Backoff {
            if let Some(message) = self.accept_log.message(err, now) {
                self.log(LogLevel::Warning, message);
            }
        }
        action
    }

    /// Counts an accepted connection.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a closed connection.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
    }

    /// Connections accepted and not yet closed.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The tracker of the server's threads or tasks.
    #[must_use]
    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }
}
