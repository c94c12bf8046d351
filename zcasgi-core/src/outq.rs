//! The outgoing byte queue of one connection: frame headers beside payloads that are never
//! copied, written out with vectored writes.
//!
//! A payload is a [`Bytes`] that may own memory of the application (a Python `bytes` object
//! kept alive by reference): the queue only ever hands out slices of it.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

use crate::frame::HeaderBytes;

#[derive(Debug)]
struct Chunk {
    header: Option<HeaderBytes>,
    payload: Bytes,
    /// Bytes of this chunk that count against the application's send buffer.
    accounted: usize,
}

impl Chunk {
    fn header(&self) -> &[u8] {
        self.header.as_ref().map_or(&[], HeaderBytes::as_slice)
    }

    fn len(&self) -> usize {
        self.header().len() + self.payload.len()
    }
}

/// Bytes waiting to be written to the transport, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Total unwritten bytes.
    pending: usize,
}

impl OutQueue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Frees the memory of what was queued and written (an empty queue holds none).
    pub fn shrink_to_fit(&mut self) {
        self.chunks.shrink_to_fit();
    }

    /// Queues a frame: its encoded header, then its payload.
    ///
    /// `accounted` bytes are reported back by [`OutQueue::advance`] once the frame is written.
    pub fn push_frame(&mut self, header: HeaderBytes, payload: Bytes, accounted: usize) {
        self.pending += header.as_slice().len() + payload.len();
        self.chunks.push_back(Chunk { header: Some(header), payload, accounted });
    }

    /// Queues raw bytes (an HTTP response head or body).
    pub fn push_bytes(&mut self, data: Bytes, accounted: usize) {
        if data.is_empty() && accounted == 0 {
            return;
        }
        self.pending += data.len();
        self.chunks.push_back(Chunk { header: None, payload: data, accounted });
    }

    /// Whether nothing is waiting to be written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Number of bytes waiting to be written.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending
    }

    /// Fills `dst` with slices of the unwritten bytes, in order; returns how many it filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut skip = self.front_written;
        for chunk in &self.chunks {
            for part in [chunk.header(), &chunk.payload[..]] {
                if n == dst.len() {
                    return n;
                }
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                dst[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
            }
        }
        n
    }

    /// Marks `n` bytes as written; returns the accounted bytes of the chunks it completed.
    ///
    /// # Panics
    /// If `n` is more than [`OutQueue::len`].
    pub fn advance(&mut self, n: usize) -> usize {
        assert!(n <= self.pending, "advance past the end of the queue");
        self.pending -= n;
        let mut left = self.front_written + n;
        let mut released = 0;
        while let Some(front) = self.chunks.front() {
            let len = front.len();
            if left < len || (len == 0 && left == 0 && front.accounted == 0) {
                break;
            }
            left -= len;
            released += front.accounted;
            self.chunks.pop_front();
        }
        self.front_written = left;
        released
    }

    /// Moves everything queued in `other` behind what is queued here.
    pub fn append(&mut self, other: &mut OutQueue) {
        if other.front_written > 0 {
            // Keep only the unwritten part of other's front chunk.
            if let Some(front) = other.chunks.pop_front() {
                let mut bytes = Vec::with_capacity(front.len() - other.front_written);
                bytes.extend_from_slice(front.header());
                bytes.extend_from_slice(&front.payload);
                let rest = Bytes::from(bytes).slice(other.front_written..);
                other.chunks.push_front(Chunk {
                    header: None,
                    payload: rest,
                    accounted: front.accounted,
                });
            }
            other.front_written = 0;
        }
        self.pending += std::mem::take(&mut other.pending);
        self.chunks.append(&mut other.chunks);
    }

    /// Drops everything still queued; returns the accounted bytes it held.
    pub fn clear(&mut self) -> usize {
        let released = self.chunks.iter().map(|c| c.accounted).sum();
        self.chunks.clear();
        self.front_written = 0;
        self.pending = 0;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameHeader, OpCode};

    fn header(len: usize) -> HeaderBytes {
        HeaderBytes::new(&FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: len as u64,
        })
    }

    fn collect(q: &OutQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = q.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn partial_writes_preserve_order() {
        let mut q = OutQueue::new();
        q.push_bytes(Bytes::from_static(b"head"), 0);
        q.push_frame(header(3), Bytes::from_static(b"abc"), 3);
        q.push_frame(header(0), Bytes::new(), 7);
        q.push_frame(header(2), Bytes::from_static(b"de"), 2);
        let all = collect(&q);
        assert_eq!(all.len(), q.len());
        let mut written = Vec::new();
        let mut released = 0;
        // Write one byte at a time.
        while !q.is_empty() {
            let next = collect(&q);
            written.push(next[0]);
            released += q.advance(1);
        }
        assert_eq!(written, all);
        assert_eq!(released, 12);
        assert!(q.chunks.is_empty());
    }

    #[test]
    fn slices_limited_by_dst() {
        let mut q = OutQueue::new();
        for _ in 0..10 {
            q.push_frame(header(1), Bytes::from_static(b"x"), 1);
        }
        let mut slices = [IoSlice::new(&[]); 3];
        assert_eq!(q.io_slices(&mut slices), 3);
        assert_eq!(q.advance(3), 1);
        assert_eq!(q.clear(), 9);
        assert!(q.is_empty());
    }
}
