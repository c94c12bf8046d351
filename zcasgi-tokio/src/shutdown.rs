//! Shutdown signalling.
//!
//! As in mini-redis: every task holds a [`Shutdown`] listening on one `watch` channel that
//! [`crate::TokioBackend`]'s server flips once, and a guard of the server's
//! `zcasgi_transport::Tracker` whose drop says that the task is done.

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
}
