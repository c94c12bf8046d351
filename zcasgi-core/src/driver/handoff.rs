//! Handing a connection to the worker that owns the Engine.IO session its request names.
//!
//! # Theory of operation
//!
//! When a request head names a session of another worker ([`crate::sticky`]), the driver stops
//! reading and keeps every byte it read (the head and whatever came after it). Once the output
//! of earlier requests on the connection is written, it asks the backend to hand the
//! connection over ([`super::Driver::handoff`]). The owner's inbox may be full (the owner is
//! busy, or being replaced): the hand-off is retried with a growing delay, and if it has not
//! gone through by `handshake_timeout` after the request arrived, the driver answers the
//! request itself with 503.
//!
//! ```text
//!   Waiting ──output written, retry time──► (backend sends) ──sent──► handed off
//!      ▲                                          │ inbox full
//!      └──────────── retry later ◄────────────────┘
//!      └─ give-up time, or the send failed ──► 503
//! ```

use std::time::{Duration, Instant};

use bytes::BytesMut;

/// First delay before retrying a hand-off the owner's inbox had no room for.
const FIRST_RETRY: Duration = Duration::from_millis(2);

/// Longest delay between two tries.
const MAX_RETRY: Duration = Duration::from_millis(200);

/// A connection waiting to be handed to another worker.
#[derive(Debug)]
pub(super) struct HandOff {
    /// The owner's worker index.
    owner: u16,
    /// Every byte read from the connection and not served.
    bytes: BytesMut,
    /// Past this instant the request is answered here, with 503.
    give_up: Instant,
    /// Not tried again before this instant (the inbox was full).
    retry_at: Option<Instant>,
    /// The delay before the next retry.
    delay: Duration,
}

impl HandOff {
    /// A hand-off of `bytes` to worker `owner`, given up at `give_up`.
    pub(super) fn new(owner: u16, bytes: BytesMut, give_up: Instant) -> Self {
        Self { owner, bytes, give_up, retry_at: None, delay: FIRST_RETRY }
    }

    /// The owner's index and the bytes to pass along, if it may be tried at `now`.
    pub(super) fn ready(&self, now: Instant) -> Option<(u16, &[u8])> {
        self.retry_at.is_none_or(|at| now >= at).then_some((self.owner, &self.bytes[..]))
    }

    /// The owner's inbox had no room at `now`: try again later.
    pub(super) fn busy(&mut self, now: Instant) {
        self.retry_at = Some(now + self.delay);
        self.delay = (self.delay * 2).min(MAX_RETRY);
    }

    /// Whether it is time to give up at `now`.
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        now >= self.give_up
    }

    /// When the driver must next be ticked: the retry or the give-up time.
    pub(super) fn deadline(&self) -> Instant {
        self.retry_at.map_or(self.give_up, |at| at.min(self.give_up))
    }

    /// The owner's index.
    pub(super) fn owner(&self) -> u16 {
        self.owner
    }

    /// Every byte read from the connection: the request head first.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_until_the_give_up_time() {
        let now = Instant::now();
        let give_up = now + Duration::from_secs(1);
        let mut h = HandOff::new(2, BytesMut::from(&b"GET"[..]), give_up);
        assert_eq!(h.ready(now), Some((2, &b"GET"[..])));
        assert_eq!(h.deadline(), give_up);
        h.busy(now);
        assert_eq!(h.ready(now), None);
        assert_eq!(h.deadline(), now + FIRST_RETRY);
        assert!(h.ready(now + FIRST_RETRY).is_some());
        let mut at = now;
        for _ in 0..20 {
            h.busy(at);
            at = h.deadline();
        }
        assert_eq!(h.deadline(), give_up, "retries never pass the give-up time");
        assert!(h.is_expired(give_up) && !h.is_expired(now + Duration::from_millis(999)));
    }
}
