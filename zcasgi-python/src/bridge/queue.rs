//! The queue of events from the I/O threads to the loop, with its eventfd wake-up.
//!
//! I/O threads push [`Event`]s into a lock-free queue. The loop is woken through one eventfd
//! registered with `loop.add_reader`, written only when the queue goes from idle to busy, so one
//! wake-up drains a whole batch; no `call_soon_threadsafe` per message. A backend whose I/O
//! threads say when they are about to wait ([`EventSink::push_batched`], [`EventSink::flush`])
//! has the eventfd written only then: the loop does not take the core the two may share after
//! every event.
//!
//! A backend with no I/O thread (`io_threads = 0`) pushes its events on the loop's own thread,
//! mostly during a turn of its loop, and the queue is drained right after the turn: such a
//! queue has no eventfd ([`EventQueue::unwoken`]). Events pushed outside a drain (an operation
//! the backend served at once, between turns) ask for a drain through the loop instead
//! ([`EventQueue::set_request`]), once per batch.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam_queue::SegQueue;
use zcasgi_core::backend::{Event, EventSink, TurnRequest};

/// The queue of events from the I/O threads to the loop, with its eventfd wake-up.
pub struct EventQueue {
    queue: SegQueue<Event>,
    /// Set by the first push after a drain; the eventfd is written (or, without one, the
    /// drain requested) only on that transition.
    armed: AtomicBool,
    /// The wake-up; `None` when the pushes come from the loop's thread.
    efd: Option<OwnedFd>,
    /// Without an eventfd: how a push outside a drain asks the loop for one.
    request: Mutex<Option<TurnRequest>>,
}

impl EventQueue {
    /// A queue with a fresh non-blocking eventfd.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { efd: Some(efd), ..Self::unwoken() })
    }

    /// A queue without a wake-up, for events pushed on the loop's thread and drained after.
    pub fn unwoken() -> Self {
        Self {
            queue: SegQueue::new(),
            armed: AtomicBool::new(false),
            efd: None,
            request: Mutex::new(None),
        }
    }

    /// Without an eventfd: the first push after a drain calls `request` for the next one
    /// (`None`: no more).
    pub fn set_request(&self, request: Option<TurnRequest>) {
        *self.request.lock().unwrap_or_else(PoisonError::into_inner) = request;
    }

    /// Without an eventfd: a drain begins, which takes the events pushed from now on.
    pub fn begin_drain(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Without an eventfd: the drain ended; events pushed during it, after it took the
    /// queue, ask for the next drain.
    pub fn end_drain(&self) {
        self.armed.store(false, Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.request_drain();
        }
    }

    fn request_drain(&self) {
        if !self.armed.swap(true, Ordering::SeqCst) {
            let request = self.request.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if !request.is_some_and(|request| request()) {
                // Nobody to ask (yet): the next drain takes them.
                self.armed.store(false, Ordering::SeqCst);
            }
        }
    }

    /// The descriptor to register with `loop.add_reader` (`None`: the queue has no wake-up).
    pub fn fd(&self) -> Option<i32> {
        self.efd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Takes every queued event; re-arms the wake-up first so that none is missed.
    pub fn drain(&self, into: &mut Vec<Event>) {
        if let Some(fd) = self.fd() {
            let mut counter = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a buffer of 8; errors (EAGAIN) are harmless.
            let _ = unsafe { libc::read(fd, counter.as_mut_ptr().cast(), 8) };
            self.armed.store(false, Ordering::SeqCst);
        }
        while let Some(ev) = self.queue.pop() {
            into.push(ev);
        }
    }
}

impl EventQueue {
    /// Writes the eventfd (without one, asks for a drain) unless the loop was already woken
    /// since its last drain.
    fn wake(&self) {
        let Some(fd) = self.fd() else {
            self.request_drain();
            return;
        };
        if !self.armed.swap(true, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a buffer of 8 to our own eventfd.
            let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
        }
    }
}

impl EventSink for EventQueue {
    fn push(&self, event: Event) {
        self.queue.push(event);
        self.wake();
    }

    fn push_batched(&self, event: Event) {
        self.queue.push(event);
    }

    fn flush(&self) {
        // An event the loop takes in a drain running now needs no wake-up; one it misses is
        // still queued here, and the drain has disarmed the wake-up before taking any.
        if !self.queue.is_empty() {
            self.wake();
        }
    }
}
