//! Fuzz the frame decoder and `Connection::receive_data` with arbitrary client bytes.
//!
//! The first input byte picks the message size limit and a chunk size; the rest is the stream.
//! Besides "never panics", it checks:
//! - every decoded header re-encodes to bytes that decode to the same header;
//! - word-wise masking (`apply_mask`, `copy_unmasked`) equals the byte-wise reference;
//! - a connection fed the stream whole, or in chunks through `receive_data` and the
//!   `read_buffer`/`receive_buffered` path the backends use, gives the same events, error and
//!   output bytes;
//! - errors carry close code 1002, 1007 or 1009, and leave a close frame with that code queued
//!   and a final `Closed` event; text messages are valid UTF-8.

use bytes::BytesMut;
use zcasgi_core::frame::{
    apply_mask, apply_mask_bytes, copy_unmasked, decode_header, HeaderBytes, MAX_HEADER_LEN,
};
use zcasgi_core::protocol::{Connection, Event, Message, ProtocolConfig};
use zcasgi_core::ProtocolError;

const LIMITS: [usize; 4] = [16 << 20, 1000, 10, 0];

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<ProtocolError>,
    output: Vec<u8>,
}

/// Feeds `data` in chunks of `chunk` bytes (the whole at once for `None`).
fn feed(data: &[u8], max_message_size: usize, chunk: Option<usize>) -> Outcome {
    let config = ProtocolConfig { max_message_size, ping_interval: None, ..Default::default() };
    let mut conn = Connection::new(config);
    let mut outcome = Outcome { events: Vec::new(), error: None, output: Vec::new() };
    let step = chunk.unwrap_or(data.len()).max(1);
    for (i, piece) in data.chunks(step).enumerate() {
        let result = match conn.read_buffer() {
            // Alternate between the two input paths when the connection offers its buffer.
            Some(buf) if i % 2 == 1 => {
                buf.extend_from_slice(piece);
                conn.receive_buffered()
            }
            _ => conn.receive_data(&mut BytesMut::from(piece)),
        };
        if let Err(e) = result {
            assert!(outcome.error.is_none(), "a closed connection failed again");
            assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
            outcome.error = Some(e);
        }
        outcome.events.extend(std::iter::from_fn(|| conn.next_event()));
        outcome.output.extend(super::common::drain(conn.out_queue()).0);
    }
    if let Some(e) = &outcome.error {
        let code = e.close_code().to_be_bytes();
        assert!(conn.is_closed());
        assert!(outcome.output.ends_with(&[0x88, 2, code[0], code[1]]), "{e:?}");
        let closed = Event::Closed { code: e.close_code(), reason: String::new() };
        assert_eq!(outcome.events.last(), Some(&closed));
    }
    for event in &outcome.events {
        if let Event::Message(Message::Text(text)) = event {
            assert!(std::str::from_utf8(text).is_ok(), "text message is not UTF-8");
        }
    }
    outcome
}

fn check_headers_and_masks(data: &[u8]) {
    let mut pos = 0;
    while let Ok(Some((header, n))) = decode_header(&data[pos..]) {
        assert!((2..=MAX_HEADER_LEN).contains(&n));
        // Non-minimal length encodings decode; re-encoding is minimal and decodes the same.
        assert!(n >= header.encoded_len());
        let encoded = HeaderBytes::new(&header);
        let len = encoded.as_slice().len();
        assert_eq!(len, header.encoded_len());
        assert_eq!(decode_header(encoded.as_slice()), Ok(Some((header, len))));
        let Some(payload) =
            usize::try_from(header.payload_len).ok().and_then(|l| data.get(pos + n..)?.get(..l))
        else {
            break;
        };
        let key = header.mask.unwrap_or([0xa5, 0x5a, 0x0f, 0xf0]);
        let offset = n; // any offset will do: use the header length
        let mut fast = payload.to_vec();
        let mut slow = payload.to_vec();
        let mut fused = vec![0; payload.len()];
        apply_mask(&mut fast, key, offset);
        apply_mask_bytes(&mut slow, key, offset);
        copy_unmasked(&mut fused, payload, key, offset);
        assert_eq!(fast, slow);
        assert_eq!(fused, slow);
        pos += n + payload.len();
    }
}

/// The target: the first byte picks the size limit and chunk size, the rest is the stream.
pub fn run(input: &[u8]) {
    let Some((&control, data)) = input.split_first() else { return };
    check_headers_and_masks(data);
    let limit = LIMITS[usize::from(control & 3)];
    let chunk = usize::from(control >> 2) + 1;
    let whole = feed(data, limit, None);
    let split = feed(data, limit, Some(chunk));
    assert_eq!(whole, split, "chunk size {chunk}");
}
