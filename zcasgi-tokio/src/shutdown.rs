//! Shutdown signalling.
//!
//! As in mini-redis: the accept loops hold a [`Shutdown`] listening on one `watch` channel that
//! [`crate::TokioBackend`]'s server flips once; connections, which keep their wait for as long
//! as they live, wait on the server's [`Stop`] instead, given at the same time. Every task
//! holds a guard of the server's `zcasgi_transport::Tracker` whose drop says that it is done.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};

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

    /// Waits for the signal; returns at once if it was already given, even before this
    /// listener was created. Cancel safe.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // `changed` rather than `wait_for`: every connection's task keeps this wait's state.
        // An error means the sender is gone: the server is being dropped.
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                break;
            }
        }
        self.is_shutdown = true;
    }
}

/// The shutdown signal as connections wait for it: a flag and one [`tokio::sync::Notify`]
/// shared by every connection, whose wait (a `Notified`, 64 bytes) every connection's task
/// keeps for as long as it lives — half of what a `watch` receiver and its `changed` wait take.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    /// Set once, by [`Stop::signal`].
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Gives the signal: every waiting connection is woken, later ones see the flag.
    pub(crate) fn signal(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// A wait for the signal: once enabled (`Notified::enable`), a signal given later wakes it;
    /// [`Stop::is_given`] tells whether it came before.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Whether the signal was given.
    pub(crate) fn is_given(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_seen_by_late_listeners() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, rx) = watch::channel(false);
        tx.send_replace(true);
        let mut late = Shutdown::new(rx);
        // Returns although the signal was given before the listener existed.
        rt.block_on(late.recv());
        assert!(late.is_shutdown);
    }

    #[test]
    fn stop_wakes_enabled_waits_and_is_seen_by_later_ones() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let stop = Stop::default();
        let early = stop.notified();
        tokio::pin!(early);
        early.as_mut().enable();
        assert!(!stop.is_given());
        stop.signal();
        // Completes: it was registered before the signal.
        rt.block_on(early);
        assert!(stop.is_given());
    }
}
