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
use crate::handoff::{self, Received, Receiver};
use crate::listener::Accepted;
use crate::session::Session;
use crate::tls::Acceptor;
use crate::tracker::Tracker;

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
            // Another worker read this much of it: a plain connection (TLS ones stay where
            // they are, see `hand_off`).
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
    /// any, and tells its driver how it went. Returns whether the connection went to its
    /// owner: the backend then deregisters and drops the socket, without shutting it down or
    /// lingering (the owner serves it now).
    ///
    /// A TLS connection cannot be handed over: its TLS state is in this process. Its request
    /// for another worker's session is answered 503 (and logged), never served here.
    pub fn hand_off(&self, session: &mut Session, conn: BorrowedFd<'_>, now: Instant) -> bool {
        let Some(worker) = &self.worker else { return false };
        let tls = session.is_tls();
        let driver = session.driver_mut();
        let Some((owner, bytes)) = driver.handoff() else { return false };
        let result = match worker.peer(owner) {
            _ if tls => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a TLS connection cannot leave the process that holds its TLS state \
                 (terminate TLS in front of the workers, see docs/deployment.md)",
            )),
            Some(inbox) => handoff::send(inbox.as_fd(), conn, bytes),
            None => Err(io::Error::other("no inbox for that worker")),
        };
        driver.on_handoff(result, now);
        driver.is_handed_off()
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
