//! Connection deadlines of one reactor thread: a min-heap with lazy deletion.
//!
//! Each connection has at most one *armed* deadline (`Conn::armed` in the reactor). Arming a
//! new one pushes an entry and leaves the old one in the heap; an entry is live only while it
//! matches its connection's id and armed instant, so cancelling is free and a stale entry is
//! skipped when it surfaces. The reactor compacts the heap when stale entries pile up.
//!
//! A heap rather than a hashed wheel: WebSocket deadlines (handshake, ping, pong, close) are few
//! per connection and rarely re-armed, so pushes are rare and `O(log n)` is cheap, while the
//! heap gives exact expiry and an exact poll timeout with no tick thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use zcasgi_core::backend::ConnId;

/// One armed deadline: when, and which connection (slab slot plus id as the generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) at: Instant,
    pub(crate) slot: usize,
    pub(crate) id: ConnId,
}

/// The deadlines of one reactor thread, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Arms a deadline.
    pub(crate) fn push(&mut self, entry: Entry) {
        self.heap.push(Reverse(entry));
    }

    /// The earliest deadline, live or stale.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0.at)
    }

    /// Moves every entry due at `now` into `due`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant, due: &mut Vec<Entry>) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if e.at > now {
                break;
            }
            due.push(*e);
            self.heap.pop();
        }
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries for which `live` is false.
    pub(crate) fn retain(&mut self, mut live: impl FnMut(&Entry) -> bool) {
        self.heap.retain(|e| live(&e.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::default();
        for (i, d) in [30, 10, 20, 40].into_iter().enumerate() {
            timers.push(Entry { at: t0 + ms(d), slot: i, id: i as u64 });
        }
        assert_eq!(timers.next_deadline(), Some(t0 + ms(10)));
        let mut due = Vec::new();
        timers.pop_due(t0 + ms(25), &mut due);
        assert_eq!(due.iter().map(|e| e.slot).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(30)));
        timers.retain(|e| e.slot != 0);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(40)));
    }
}
