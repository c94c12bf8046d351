//! What every thread or task of one server shares, whatever the event model.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use zcasgi_core::backend::{ConnId, Event, EventSink, LogLevel, Notify, ServerConfig};
use zcasgi_core::driver::Driver;

use crate::accept::{AcceptError, AcceptLog};
use crate::listener::Accepted;
use crate::session::Session;
use crate::tls::Acceptor;
use crate::tracker::Tracker;

/// The state one server's threads or tasks share: its configuration and sink, connection ids
/// (unique within the server), the accept error log, the open connection count and the
/// tracker that `join` waits on.
pub struct Context {
    cfg: Arc<ServerConfig>,
    sink: Arc<dyn EventSink>,
    /// The TLS configuration, when the server serves TLS.
    tls: Option<Acceptor>,
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
    /// The context of a server serving with `cfg` and reporting to `sink`.
    ///
    /// # Errors
    /// `InvalidInput` if the TLS options cannot be used (the message names the option;
    /// `zcasgi.Config` checks them before a server starts).
    pub fn new(cfg: Arc<ServerConfig>, sink: Arc<dyn EventSink>) -> io::Result<Self> {
        let tls = Acceptor::from_config(&cfg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Self {
            cfg,
            sink,
            tls,
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

    /// The session of connection `id`, just `accepted` at `now`.
    #[must_use]
    pub fn session(
        &self,
        id: ConnId,
        notify: Box<dyn Notify>,
        accepted: &Accepted,
        now: Instant,
    ) -> Session {
        // The core reads no clock: the wall-clock time of the accept dates its responses.
        let wall = SystemTime::now();
        let (client, server) = (accepted.client, accepted.server.clone());
        let mut driver =
            Driver::new(id, self.cfg.clone(), self.sink.clone(), notify, client, server, now, wall);
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
