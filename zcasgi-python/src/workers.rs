//! Sticky Engine.IO sessions from Python: the session-id tag, the inboxes a supervisor makes
//! before forking, and a worker's sockets for [`crate::server::Core`].

use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use zcasgi_core::backend::WorkerSockets;
use zcasgi_core::sticky::{self, WorkerSlot};
use zcasgi_transport::handoff;

use crate::errors::config_error;

/// What `Core(worker=...)` takes: `(index, count, inbox_fd, peer_fds)`.
pub type WorkerArg = (u16, u16, i32, Vec<i32>);

/// Tags the Engine.IO session id `sid` with the index of the worker that created it.
#[pyfunction]
fn tag_session_id(sid: &str, worker: u16) -> String {
    sticky::tag_session_id(sid, worker)
}

/// Makes a worker's inbox; returns its receiving and its sending end (descriptors the caller
/// owns).
#[pyfunction]
fn inbox_pair() -> PyResult<(i32, i32)> {
    let (receiving, sending) = handoff::inbox_pair()?;
    Ok((receiving.into_raw_fd(), sending.into_raw_fd()))
}

/// A duplicate of the inbox end `fd` (the caller keeps its own), checked to be one.
fn inbox_end(fd: i32) -> PyResult<OwnedFd> {
    // SAFETY: fcntl has no memory-safety preconditions; the result is checked.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        let err = std::io::Error::last_os_error();
        return Err(PyOSError::new_err(format!("worker inbox descriptor {fd}: {err}")));
    }
    // SAFETY: `dup` is a fresh descriptor owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    handoff::check_inbox(owned.as_fd()).map_err(|e| {
        PyValueError::new_err(format!("worker inbox descriptor {fd} is not an inbox: {e}"))
    })?;
    Ok(owned)
}

/// The sockets of the worker `(index, count, inbox_fd, peer_fds)`: its slot, the receiving end
/// of its inbox and the sending end of every worker's inbox, by index (all duplicated).
///
/// # Errors
/// `ValueError` for an index not below the count, not one peer per worker, or a descriptor
/// that is not an inbox; `OSError` for a descriptor that is not open.
pub fn worker_sockets((index, count, inbox_fd, peer_fds): WorkerArg) -> PyResult<WorkerSockets> {
    let slot = WorkerSlot { index, count };
    let inbox = inbox_end(inbox_fd)?;
    let peers = peer_fds.into_iter().map(inbox_end).collect::<PyResult<Vec<_>>>()?;
    WorkerSockets::new(slot, inbox, peers).map_err(config_error)
}

/// Adds the functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(tag_session_id, m)?)?;
    m.add_function(wrap_pyfunction!(inbox_pair, m)?)?;
    Ok(())
}
