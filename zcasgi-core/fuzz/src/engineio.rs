//! Fuzz the Engine.IO v4 codec (`zcasgi_core::engineio`).
//!
//! - Arbitrary bytes as a long-polling body, under arbitrary limits: either packets or an
//!   error; the packets re-encode to a body that decodes to the same packets, every text packet
//!   has a type `0`–`6`, and the limits hold (never more packets than allowed, never a body
//!   over the byte limit accepted).
//! - Arbitrary text as a WebSocket text frame: either a packet or an error; a packet re-encodes
//!   to the same text.

use arbitrary::{Arbitrary, Unstructured};
use zcasgi_core::engineio::{decode_payload, encode_payload, Packet, PayloadLimits};

#[derive(Debug, Arbitrary)]
struct Input {
    max_bytes: u16,
    max_packets: u8,
    body: Vec<u8>,
}

/// Checks one input (see the module doc).
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else { return };
    let limits = PayloadLimits {
        max_bytes: usize::from(input.max_bytes),
        max_packets: usize::from(input.max_packets),
    };
    if let Ok(packets) = decode_payload(&input.body, limits) {
        assert!(input.body.len() <= limits.max_bytes);
        assert!(packets.len() <= limits.max_packets);
        let mut again = String::new();
        encode_payload(&packets, &mut again);
        let unlimited = PayloadLimits { max_bytes: usize::MAX, max_packets: usize::MAX };
        assert_eq!(decode_payload(again.as_bytes(), unlimited).unwrap(), packets);
    }
    if let Ok(text) = std::str::from_utf8(&input.body) {
        if let Ok(packet) = Packet::decode_text(text, false) {
            let mut out = Vec::new();
            assert!(packet.encode_websocket(&mut out));
            assert_eq!(out, text.as_bytes());
        }
    }
}
