//! Fuzz permessage-deflate (`zcasgi_core::deflate`, RFC 7692): negotiation from arbitrary
//! extension headers, inflation of arbitrary compressed messages, and compressed messages
//! through a connection.
//!
//! The input is read with `arbitrary` as one of four cases:
//! - `Negotiate`: arbitrary `Sec-WebSocket-Extensions` header values, split into elements as
//!   the handshake does: the agreed parameters have a window of 9 to 15 bits and never ask
//!   the client for `client_no_context_takeover`; the first element that is acceptable on its
//!   own is the one agreed; the response header, offered back, agrees to the same parameters;
//! - `Inflate`: arbitrary messages inflated within a limit: the output never exceeds it, an
//!   overflow reports exactly one byte more, and the first message inflates the same with a
//!   larger limit when it fits (so the limit only cuts, never changes, the output);
//! - `RoundTrip`: arbitrary messages compressed with any agreed parameters inflate back to
//!   themselves, in order;
//! - `Connection`: masked frames with RSV1 (compressed by a client, or arbitrary bytes) fed to
//!   a `Connection` with deflate and a small `max_message_size`: no message is larger than
//!   that after inflation, errors close with 1002, 1007 or 1009, and `Closed` is the last event.

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use zcasgi_core::deflate::{negotiate, Deflate, DeflateParams, Offer};
use zcasgi_core::handshake::Request;
use zcasgi_core::protocol::{Connection, Event, Message, ProtocolConfig};
use zcasgi_core::ProtocolError;

use super::common::client_frame;

#[derive(Debug, Arbitrary)]
enum Input {
    Negotiate(Vec<String>),
    Inflate { client_no_context_takeover: bool, max: u16, messages: Vec<Vec<u8>> },
    RoundTrip { bits: u8, no_context_takeover: bool, messages: Vec<(Vec<u8>, u8)> },
    Connection { max: u16, split: u8, frames: Vec<Frame> },
}

#[derive(Debug, Arbitrary)]
struct Frame {
    opcode: u8,
    fin: bool,
    rsv1: bool,
    payload: Payload,
}

#[derive(Debug, Arbitrary)]
enum Payload {
    /// Compressed by the client's compressor (with context takeover): `data` repeated up to
    /// this many bytes (at most 256 KiB: more than any limit here).
    Compressed(Vec<u8>, u16),
    Raw(Vec<u8>),
}

/// The target.
pub fn run(input: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(input)) else { return };
    match input {
        Input::Negotiate(values) => check_negotiation(values),
        Input::Inflate { client_no_context_takeover, max, messages } => {
            check_inflate(client_no_context_takeover, usize::from(max), &messages);
        }
        Input::RoundTrip { bits, no_context_takeover, messages } => {
            let params = DeflateParams {
                server_no_context_takeover: no_context_takeover,
                client_no_context_takeover: false,
                server_max_window_bits: 9 + bits % 7,
                server_max_window_bits_in_response: true,
            };
            let mut tx = Deflate::new(params);
            let mut rx = Deflate::new(DeflateParams {
                client_no_context_takeover: no_context_takeover,
                ..DeflateParams::default()
            });
            for (data, times) in messages {
                let message = data.repeat(usize::from(times % 64) + 1);
                let z = tx.compress(&message);
                assert_eq!(rx.decompress(&z, message.len()).unwrap(), message);
            }
        }
        Input::Connection { max, split, frames } => {
            check_connection(usize::from(max), split, &frames);
        }
    }
}

fn check_negotiation(values: Vec<String>) {
    let headers = values
        .into_iter()
        .map(|v| (b"sec-websocket-extensions".to_vec(), v.into_bytes()))
        .collect();
    let req = Request {
        method: "GET".into(),
        http_minor: 1,
        raw_path: b"/".to_vec(),
        query_string: Vec::new(),
        headers,
    };
    // As `validate_upgrade` splits them.
    let elements: Vec<String> = req
        .header_tokens(b"sec-websocket-extensions")
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    let first = elements.iter().find_map(|e| Offer::parse(e).and_then(|o| o.accept()));
    let agreed = negotiate(&elements);
    assert_eq!(agreed, first);
    if let Some(p) = agreed {
        assert!((9..=15).contains(&p.server_max_window_bits), "{p:?}");
        assert!(!p.client_no_context_takeover);
        assert_eq!(negotiate([p.to_header()]), Some(p), "{}", p.to_header());
    }
}

fn check_inflate(client_no_context_takeover: bool, max: usize, messages: &[Vec<u8>]) {
    let params = DeflateParams { client_no_context_takeover, ..DeflateParams::default() };
    let mut d = Deflate::new(params);
    for (i, m) in messages.iter().enumerate() {
        match d.decompress(m, max) {
            Ok(out) => {
                assert!(out.len() <= max);
                if i == 0 {
                    let large = Deflate::new(params).decompress(m, 1 << 20);
                    assert_eq!(large, Ok(out));
                }
            }
            Err(ProtocolError::MessageTooBig { size, max: reported }) => {
                assert_eq!((size, reported), (max as u64 + 1, max as u64));
                if i == 0 {
                    // With room enough, it is larger than the limit or corrupt further on.
                    match Deflate::new(params).decompress(m, 1 << 20) {
                        Ok(out) => assert!(out.len() > max),
                        Err(e) => assert!(matches!(
                            e,
                            ProtocolError::InvalidCompressedData
                                | ProtocolError::MessageTooBig { .. }
                        )),
                    }
                }
                // The connection fails here: nothing more is inflated.
                return;
            }
            Err(e) => {
                assert_eq!(e, ProtocolError::InvalidCompressedData);
                return;
            }
        }
    }
}

fn check_connection(max: usize, split: u8, frames: &[Frame]) {
    let config =
        ProtocolConfig { max_message_size: max, ping_interval: None, ..Default::default() };
    let mut conn = Connection::with_deflate(config, DeflateParams::default());
    let mut client = Deflate::new(DeflateParams::default());
    let mut wire = Vec::new();
    for f in frames {
        let payload = match &f.payload {
            Payload::Compressed(data, len) => {
                let message: Vec<u8> =
                    data.iter().copied().cycle().take(usize::from(*len) * 4).collect();
                client.compress(&message)
            }
            Payload::Raw(bytes) => Bytes::copy_from_slice(bytes),
        };
        // Data frames, continuations, and the control frames.
        let opcode = [0, 1, 2, 8, 9, 10][usize::from(f.opcode % 6)];
        wire.extend(client_frame(opcode, f.fin, f.rsv1, &payload));
    }
    let mut events = Vec::new();
    let mut error = None;
    for piece in wire.chunks(usize::from(split).max(1) * 7) {
        if let Err(e) = conn.receive_data(&mut BytesMut::from(piece)) {
            assert!(error.is_none(), "failed twice");
            assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
            error = Some(e);
        }
        events.extend(std::iter::from_fn(|| conn.next_event()));
    }
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::Message(Message::Text(m) | Message::Binary(m)) => {
                assert!(m.len() <= max, "a message of {} bytes over {max}", m.len());
            }
            Event::Closed { .. } => assert_eq!(i, events.len() - 1, "events after Closed"),
            Event::Ping(_) | Event::Pong(_) => {}
        }
    }
}
