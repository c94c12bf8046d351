//! One wake-up of the application per batch of events, not per event.
//!
//! An I/O thread that wakes the application's thread for the first event after each drain
//! ([`EventSink::push`]) makes it, on a core the two share, take the core at once and handle
//! that one event, then give the core back: about one pair of context switches per message. A
//! [`Batching`] sink instead delivers the events of its I/O threads with
//! [`EventSink::push_batched`] and wakes the application ([`EventSink::flush`]) when the thread
//! is about to wait ([`Batching::before_wait`]) or has delivered [`MAX_BATCH`] events since
//! its last wake-up, whichever comes first: the application then takes the whole batch in one
//! turn. Only threads that promise to call [`Batching::before_wait`] ([`Batching::enter`]) are
//! batched; events from any other thread wake the application as they always did.

use std::cell::Cell;
use std::sync::Arc;

use zcasgi_core::backend::{Event, EventSink};

/// Most events an I/O thread delivers without waking the application: a thread that never
/// waits (always busy) still wakes it this often.
pub const MAX_BATCH: usize = 64;

thread_local! {
    /// Events this thread delivered without waking the application since its last wake-up;
    /// `None` on a thread that did not [`Batching::enter`].
    static PENDING: Cell<Option<usize>> = const { Cell::new(None) };
}

/// An [`EventSink`] that wakes its consumer once per batch of each I/O thread's events.
pub struct Batching {
    inner: Arc<dyn EventSink>,
}

impl std::fmt::Debug for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batching").finish_non_exhaustive()
    }
}

impl Batching {
    /// Batches the events delivered to `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn EventSink>) -> Self {
        Self { inner }
    }

    /// Marks the calling thread as one that calls [`Batching::before_wait`] before it waits
    /// (and before it ends): its events are batched from now on.
    pub fn enter() {
        PENDING.with(|pending| {
            if pending.get().is_none() {
                pending.set(Some(0));
            }
        });
    }

    /// The calling thread is about to wait (or to end): wakes the consumer for the events it
    /// delivered since its last wake-up.
    pub fn before_wait(&self) {
        if PENDING.with(|pending| pending.replace(Some(0))).is_some_and(|n| n > 0) {
            self.inner.flush();
        }
    }

    /// Events the calling thread delivered without waking the consumer (`None`: its events
    /// are not batched).
    #[must_use]
    pub fn pending() -> Option<usize> {
        PENDING.with(Cell::get)
    }
}

impl EventSink for Batching {
    fn push(&self, event: Event) {
        match PENDING.with(Cell::get) {
            None => self.inner.push(event),
            Some(n) => {
                self.inner.push_batched(event);
                if n + 1 >= MAX_BATCH {
                    PENDING.with(|pending| pending.set(Some(0)));
                    self.inner.flush();
                } else {
                    PENDING.with(|pending| pending.set(Some(n + 1)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use zcasgi_core::backend::LogLevel;

    use super::*;

    /// Records how each event came and each flush.
    #[derive(Default)]
    struct Record(Mutex<Vec<&'static str>>);

    impl Record {
        fn take(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl EventSink for Record {
        fn push(&self, _event: Event) {
            self.0.lock().unwrap().push("push");
        }

        fn push_batched(&self, _event: Event) {
            self.0.lock().unwrap().push("batched");
        }

        fn flush(&self) {
            self.0.lock().unwrap().push("flush");
        }
    }

    fn event() -> Event {
        Event::Log { level: LogLevel::Debug, message: String::new() }
    }

    /// Runs `f` on a thread of its own with a batching sink; returns what reached the sink.
    fn on_a_thread(f: impl FnOnce(&Batching) + Send) -> Vec<&'static str> {
        let record = Arc::new(Record::default());
        let sink = Batching::new(record.clone());
        std::thread::scope(|s| {
            s.spawn(|| f(&sink));
        });
        record.take()
    }

    #[test]
    fn a_thread_that_did_not_enter_wakes_per_event() {
        let seen = on_a_thread(|sink| {
            sink.push(event());
            sink.push(event());
            sink.before_wait();
            assert_eq!(Batching::pending(), Some(0));
        });
        assert_eq!(seen, ["push", "push"]);
    }

    #[test]
    fn an_entered_thread_wakes_once_per_batch() {
        let seen = on_a_thread(|sink| {
            Batching::enter();
            sink.before_wait();
            sink.push(event());
            sink.push(event());
            assert_eq!(Batching::pending(), Some(2));
            sink.before_wait();
            sink.before_wait();
            assert_eq!(Batching::pending(), Some(0));
        });
        // No flush for an empty batch.
        assert_eq!(seen, ["batched", "batched", "flush"]);
    }

    #[test]
    fn a_busy_thread_wakes_every_max_batch_events() {
        let seen = on_a_thread(|sink| {
            Batching::enter();
            for _ in 0..=MAX_BATCH {
                sink.push(event());
            }
            assert_eq!(Batching::pending(), Some(1));
        });
        assert_eq!(seen.len(), MAX_BATCH + 2);
        assert_eq!(seen[MAX_BATCH], "flush");
        assert_eq!(seen.iter().filter(|s| **s == "flush").count(), 1);
    }
}
