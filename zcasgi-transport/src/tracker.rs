//! "Everything finished" tracking: a count of live threads or tasks that any thread can wait on.
//!
//! Each thread or task of a server holds a [`Guard`] from the server's [`Tracker`] and drops it
//! when it ends (normally, by a panic, or because its runtime dropped it). `join` waits on the
//! tracker from a thread that belongs to no runtime (Python's, with the GIL released), so the
//! count sits behind a `std` mutex and condition variable rather than a runtime's primitive.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Counts live threads or tasks so that another thread can wait for all of them.
#[derive(Debug, Default)]
pub struct Tracker {
    live: Mutex<usize>,
    idle: Condvar,
}

impl Tracker {
    /// A tracker with nothing live.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Counts one more live thread or task, until the guard is dropped.
    #[must_use = "the count drops with the guard"]
    pub fn guard(self: &Arc<Self>) -> Guard {
        *self.lock() += 1;
        Guard(self.clone())
    }

    /// How many guards are alive.
    #[must_use]
    pub fn live(&self) -> usize {
        *self.lock()
    }

    /// Blocks the calling thread until no guard is alive or `timeout` passed; returns whether
    /// everything finished.
    #[must_use]
    pub fn wait(&self, timeout: Duration) -> bool {
        let (live, _) = self
            .idle
            .wait_timeout_while(self.lock(), timeout, |n| *n > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *live == 0
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps its thread or task counted as live in a [`Tracker`] until dropped.
#[derive(Debug)]
pub struct Guard(Arc<Tracker>);

impl Drop for Guard {
    fn drop(&mut self) {
        let mut live = self.0.lock();
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
    fn waits_for_every_guard() {
        let tracker = Tracker::new();
        assert!(tracker.wait(Duration::ZERO));
        let guards = [tracker.guard(), tracker.guard()];
        assert_eq!(tracker.live(), 2);
        assert!(!tracker.wait(Duration::from_millis(10)));
        let t = std::thread::spawn(move || drop(guards));
        assert!(tracker.wait(Duration::from_secs(5)));
        assert_eq!(tracker.live(), 0);
        t.join().unwrap();
    }

    #[test]
    fn a_very_long_timeout_is_fine() {
        assert!(Tracker::new().wait(Duration::MAX));
    }
}
