//! What to do when `accept` fails, and how such failures are logged.
//!
//! `accept(2)` fails for two unrelated reasons. Either one pending connection was aborted
//! before it was taken ("Linux `accept()` passes already-pending network errors on the new
//! socket as an error code"): that connection is lost and the next one can be accepted at
//! once. Or the listener cannot take any connection now — out of descriptors (`EMFILE`,
//! `ENFILE`), buffers or memory (`ENOBUFS`, `ENOMEM`), or anything unexpected: accepting again
//! at once would fail again and spin, so the backend pauses for [`BACKOFF`], leaving new
//! connections in the listen backlog, and logs the error through an [`AcceptLog`], at most once
//! a [`AcceptLog::INTERVAL`] for the whole server.

use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a backend stops accepting after an [`AcceptError::Backoff`] error.
pub const BACKOFF: Duration = Duration::from_millis(100);

/// What an `accept` error means for the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// One pending connection was lost (or the call was interrupted): accept the next at once.
    Skip,
    /// The listener cannot take connections now: stop accepting for [`BACKOFF`], then retry.
    Backoff,
}

impl AcceptError {
    /// Classifies an error returned by `accept`.
    ///
    /// `WouldBlock` is a [`AcceptError::Skip`]: nothing is lost and accepting may go on (a
    /// readiness loop checks it first, as "no connection waiting").
    #[must_use]
    pub fn classify(err: &io::Error) -> Self {
        if matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
        ) {
            return Self::Skip;
        }
        // accept(2), "Error handling": the network errors of the protocol are pending errors
        // of the new socket; EPERM is a firewall rule that refused this one connection.
        match err.raw_os_error() {
            Some(
                libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP
                | libc::ETIMEDOUT,
            ) => Self::Skip,
            _ => Self::Backoff,
        }
    }
}

/// Rate limit of the accept error log of one server, shared by its threads.
#[derive(Debug, Default)]
pub struct AcceptLog {
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    /// When an error was last logged.
    last: Option<Instant>,
    /// Errors not logged since.
    suppressed: u64,
}

impl AcceptLog {
    /// Shortest interval between two logged accept errors.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// The log message for a [`AcceptError::Backoff`] error seen at `now`, or `None` if one
    /// was logged less than [`AcceptLog::INTERVAL`] ago (the error is then counted, and the
    /// count is part of the next message).
    pub fn message(&self, err: &io::Error, now: Instant) -> Option<String> {
        let suppressed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.last.is_some_and(|at| now.saturating_duration_since(at) < Self::INTERVAL) {
                state.suppressed += 1;
                return None;
            }
            state.last = Some(now);
            std::mem::take(&mut state.suppressed)
        };
        let more = if suppressed > 0 {
            format!(" ({suppressed} more since the last report)")
        } else {
            String::new()
        };
        Some(format!("accept failed: {err}{more}; pausing accepts for {}ms", BACKOFF.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_skipped_and_resource_errors_back_off() {
        for errno in [libc::ECONNABORTED, libc::EPROTO, libc::EPERM, libc::ETIMEDOUT] {
            let err = io::Error::from_raw_os_error(errno);
            assert_eq!(AcceptError::classify(&err), AcceptError::Skip, "{err}");
        }
        for kind in [io::ErrorKind::Interrupted, io::ErrorKind::ConnectionReset] {
            assert_eq!(AcceptError::classify(&kind.into()), AcceptError::Skip);
        }
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EBADF] {
            let err = io::Error::from_raw_os_error(errno);
            assert_eq!(AcceptError::classify(&err), AcceptError::Backoff, "{err}");
        }
        assert_eq!(AcceptError::classify(&io::Error::other("?")), AcceptError::Backoff);
    }

    #[test]
    fn log_is_rate_limited_and_counts_what_it_left_out() {
        let log = AcceptLog::default();
        let err = io::Error::from_raw_os_error(libc::EMFILE);
        let t0 = Instant::now();
        let first = log.message(&err, t0).unwrap();
        assert!(first.starts_with("accept failed: "), "{first}");
        assert!(!first.contains("more since"), "{first}");
        assert_eq!(log.message(&err, t0 + Duration::from_millis(100)), None);
        assert_eq!(log.message(&err, t0 + Duration::from_millis(900)), None);
        let next = log.message(&err, t0 + AcceptLog::INTERVAL).unwrap();
        assert!(next.contains("(2 more since the last report)"), "{next}");
    }
}
