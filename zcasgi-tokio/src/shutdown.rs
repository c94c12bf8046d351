//! Shutdown signalling and "everything finished" tracking.
//!
//! As in mini-redis: every task holds a [`Shutdown`] listening on one `watch` channel that
//! [`crate::TokioBackend`]'s server flips once, and a [`TaskGuard`] whose drop tells the
//! [`Tracker`] that the task is done. The tracker is a counter behind a `std` mutex and condition
//! variable (not a tokio primitive) because `join` waits on it from a thread that is not part of
//! the runtime (Python's, with the GIL released).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// Listens for the server's shutdown signal.
#[derive(Debug)]
pub(crate) struct Shutdown {
    /// The signal has been received.
    is_shutdown: bool,
    /// `true` once the server shuts down; a dropped sender counts as shutdown too.
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A listener on `rx`.
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self { is_shutdown: false, rx }
    }

    /// Another listener on the same signal.
    pub(crate) fn listener(&self) -> Self {
        Self::new(self.rx.clone())
    }

    /// Whether the signal has been received.
    pub(crate) fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for the signal; returns at once if it was already given, even before this
    /// listener was created. Cancel safe.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // An error means the sender is gone: the server is being dropped.
        let _ = self.rx.wait_for(|&down| down).await;
        self.is_shutdown = true;
    }
}

/// Counts live tasks so that a thread outside the runtime can wait for all of them.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    live: Mutex<usize>,
    idle: Condvar,
}

impl Tracker {
    /// Registers one more live task; it counts until the guard is dropped.
    pub(crate) fn guard(self: &Arc<Self>) -> TaskGuard {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        TaskGuard(self.clone())
    }

    /// Blocks the calling thread until no task is live or `timeout` passed; returns whether
    /// every task finished.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let (live, _) = self
            .idle
            .wait_timeout_while(live, timeout, |n| *n > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *live == 0
    }
}

/// Keeps its task counted as live in a [`Tracker`] until dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard(Arc<Tracker>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let mut live = self.0.live.lock().unwrap_or_else(PoisonError::into_inner);
        *live -= 1;
        if *live == 0 {
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_waits_for_guards() {
        let tracker = Arc::new(Tracker::default());
        assert!(tracker.wait_idle(Duration::ZERO));
        let guard = tracker.guard();
        assert!(!tracker.wait_idle(Duration::from_millis(10)));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(guard);
        });
        assert!(tracker.wait_idle(Duration::from_secs(5)));
        t.join().unwrap();
    }

    #[test]
    fn shutdown_seen_by_late_listeners() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, rx) = watch::channel(false);
        tx.send_replace(true);
        let mut late = Shutdown::new(rx);
        assert!(!late.is_shutdown());
        rt.block_on(late.recv());
        assert!(late.is_shutdown());
    }
}
