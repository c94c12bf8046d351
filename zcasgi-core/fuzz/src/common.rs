//! Helpers shared by the targets.

use std::io::IoSlice;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use zcasgi_core::driver::{Driver, MAX_IOVECS};
use zcasgi_core::frame::{apply_mask_bytes, FrameHeader, HeaderBytes, OpCode};
use zcasgi_core::outq::OutQueue;

/// Most application headers the targets put in a response.
pub const MAX_HEADERS: usize = 64;

/// A wall-clock time from arbitrary seconds: 1970 to about year 36,800 (past the last date an
/// HTTP date can show, and far from overflowing when time passes).
pub fn wall(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs % (1 << 40))
}

/// Checks the headers the core adds to every response: one `date` (an IMF-fixdate) and one
/// `server`, unless the application gave its own (`given`, lower-case names).
pub fn check_default_headers(headers: &[(String, Vec<u8>)], given: &[&str]) {
    for (name, len) in [("date", Some(29)), ("server", None)] {
        if !given.contains(&name) {
            let found = values(headers, name);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            if let Some(len) = len {
                assert_eq!(found[0].len(), len, "{:?}", String::from_utf8_lossy(found[0]));
            }
        }
    }
}

/// A client frame (RFC 6455 §5.2): `payload` masked with a fixed key, RSV1 set if `rsv1`.
pub fn client_frame(opcode: u8, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let header = FrameHeader {
        fin,
        rsv: if rsv1 { 4 } else { 0 },
        opcode: OpCode::from(opcode),
        mask: Some(MASK),
        payload_len: payload.len() as u64,
    };
    let mut out = HeaderBytes::new(&header).as_slice().to_vec();
    let mut masked = payload.to_vec();
    apply_mask_bytes(&mut masked, MASK, 0);
    out.extend(masked);
    out
}

/// Most slices read from a queue at once.
const SLICES: usize = 64;

/// Takes everything out of `q`, returning the bytes and the accounted bytes released.
pub fn drain(q: &mut OutQueue) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut released = 0;
    while !q.is_empty() {
        let n = {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let n = q.io_slices(&mut slices);
            let before = out.len();
            for s in &slices[..n] {
                out.extend_from_slice(s);
            }
            out.len() - before
        };
        released += q.advance(n);
    }
    (out, released)
}

/// Cuts `data` into pieces whose lengths come from `sizes` (cycled; 0 counts as 1), the last
/// piece taking what is left.
pub fn pieces<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).map_or(rest.len(), |&s| usize::from(s).max(1));
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
        i += 1;
    }
    out
}

/// Parses an HTTP/1.1 response head at the start of `buf`: status, headers (names lower-cased)
/// and head length. Panics unless the head is complete and well-formed.
pub fn parse_response(buf: &[u8]) -> (u16, Vec<(String, Vec<u8>)>, usize) {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut resp = httparse::Response::new(&mut storage);
    let shown = || String::from_utf8_lossy(&buf[..buf.len().min(300)]).into_owned();
    let status = resp.parse(buf).unwrap_or_else(|e| panic!("bad response head: {e}: {}", shown()));
    let httparse::Status::Complete(len) = status else {
        panic!("partial response head: {}", shown())
    };
    assert_eq!(resp.version, Some(1), "responses are HTTP/1.1");
    let headers =
        resp.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    (resp.code.expect("a status code"), headers, len)
}

/// The values of header `name` (lower case) among `headers`.
pub fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect()
}

/// Hands `data` read from the socket to `driver` at `now`, as a backend does: through the
/// driver's own buffer when it has one.
pub fn read_into(driver: &mut Driver, data: &[u8], now: Instant) {
    if let Some(buf) = driver.read_buffer() {
        buf.extend_from_slice(data);
        driver.on_read_buffered(now);
    } else {
        driver.on_read(&mut BytesMut::from(data), now);
    }
}

/// Writes at most `max` bytes (at least one) of what `driver` has to write, as a backend does,
/// appending them to `written`; nothing if the driver does not want to write.
pub fn write_from(driver: &mut Driver, written: &mut Vec<u8>, max: usize) {
    if !driver.wants_write() {
        return;
    }
    let chunk: Vec<u8> = {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = driver.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    };
    assert!(!chunk.is_empty(), "the driver wants to write but has no bytes");
    let n = chunk.len().min(max.max(1));
    written.extend_from_slice(&chunk[..n]);
    driver.on_written(n);
}
