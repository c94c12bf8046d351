//! Engine.IO v4 packets and long-polling payloads, without I/O.
//!
//! An Engine.IO packet is a type (`0` open … `6` noop) and its data. On a WebSocket, a text
//! frame carries the type digit followed by the text, and a binary frame is a binary message
//! with no type byte. In a long-polling payload, packets are joined by the record separator
//! (`0x1e`) and a binary message is written as `b` followed by its base64.
//!
//! This module frames packets; what a packet means to a session (the handshake, pings, the
//! upgrade probe) is [`session`]'s business, and what a message means is Socket.IO's.

pub mod cors;
pub mod endpoint;
pub mod request;
pub mod session;

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// Separates the packets of a long-polling payload.
pub const RECORD_SEPARATOR: char = '\x1e';

/// The type of an Engine.IO packet (its digit on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// The server's handshake: session id, upgrades, ping interval and timeout, max payload.
    Open = 0,
    /// The session is closed.
    Close = 1,
    /// A heartbeat, or `probe` during an upgrade.
    Ping = 2,
    /// The answer to a ping.
    Pong = 3,
    /// Application data (Socket.IO's packets).
    Message = 4,
    /// The client switches to the transport it probed.
    Upgrade = 5,
    /// Nothing: ends a pending poll during an upgrade.
    Noop = 6,
}

impl PacketType {
    /// The packet type a wire digit names, if any.
    #[must_use]
    pub fn from_digit(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    /// This type's digit on the wire.
    #[must_use]
    pub fn digit(self) -> char {
        char::from(b'0' + self as u8)
    }
}

/// The data of a packet: text, or (messages only) binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// Text, possibly empty.
    Text(Cow<'a, str>),
    /// A binary message.
    Binary(Cow<'a, [u8]>),
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// What the packet is.
    pub kind: PacketType,
    /// What it carries.
    pub data: Data<'a>,
}

/// A packet or payload that is not Engine.IO v4, or is over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineIoError {
    /// A packet with no type.
    #[error("empty packet")]
    Empty,
    /// A packet whose first character is not a type digit `0`–`6` (nor `b` in a payload).
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A `b` packet whose data is not base64.
    #[error("invalid base64 in a binary packet")]
    InvalidBase64,
    /// A long-polling payload with more packets than allowed.
    #[error("payload of more than {max} packets")]
    TooManyPackets {
        /// The configured limit.
        max: usize,
    },
    /// A payload larger than the session's maximum.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The configured limit in bytes.
        max: usize,
    },
    /// A payload that is not UTF-8 (a long-polling body is text).
    #[error("payload is not UTF-8")]
    NotUtf8,
}

impl<'a> Packet<'a> {
    /// A text packet.
    #[must_use]
    pub fn text(kind: PacketType, text: impl Into<Cow<'a, str>>) -> Self {
        Self { kind, data: Data::Text(text.into()) }
    }

    /// A binary message.
    #[must_use]
    pub fn binary(data: impl Into<Cow<'a, [u8]>>) -> Self {
        Self { kind: PacketType::Message, data: Data::Binary(data.into()) }
    }

    /// The packet a WebSocket text frame (or one packet of a payload, with `b64` for a
    /// long-polling payload's `b` form) carries.
    ///
    /// # Errors
    /// [`EngineIoError::Empty`], [`EngineIoError::UnknownType`], or
    /// [`EngineIoError::InvalidBase64`] for a `b` packet (only with `b64`).
    pub fn decode_text(encoded: &'a str, b64: bool) -> Result<Self, EngineIoError> {
        let first = encoded.chars().next().ok_or(EngineIoError::Empty)?;
        if b64 && first == 'b' {
            let data = BASE64.decode(&encoded[1..]).map_err(|_| EngineIoError::InvalidBase64)?;
            return Ok(Self::binary(data));
        }
        let kind = u8::try_from(first)
            .ok()
            .and_then(PacketType::from_digit)
            .ok_or(EngineIoError::UnknownType(first))?;
        Ok(Self::text(kind, &encoded[1..]))
    }

    /// The packet a WebSocket binary frame carries: a binary message.
    #[must_use]
    pub fn decode_binary(encoded: &'a [u8]) -> Self {
        Self::binary(encoded)
    }

    /// Appends this packet in a long-polling payload's form (a binary message as `b` and base64).
    pub fn encode_polling(&self, out: &mut String) {
        match &self.data {
            Data::Text(text) => {
                out.push(self.kind.digit());
                out.push_str(text);
            }
            Data::Binary(bytes) => {
                out.push('b');
                BASE64.encode_string(bytes, out);
            }
        }
    }

    /// Appends this packet as a WebSocket frame's payload; true if the frame is text.
    pub fn encode_websocket(&self, out: &mut Vec<u8>) -> bool {
        match &self.data {
            Data::Text(text) => {
                let mut digit = [0; 4];
                out.extend_from_slice(self.kind.digit().encode_utf8(&mut digit).as_bytes());
                out.extend_from_slice(text.as_bytes());
                true
            }
            Data::Binary(bytes) => {
                out.extend_from_slice(bytes);
                false
            }
        }
    }

    /// This packet with its data owned.
    #[must_use]
    pub fn into_owned(self) -> Packet<'static> {
        let data = match self.data {
            Data::Text(text) => Data::Text(Cow::Owned(text.into_owned())),
            Data::Binary(bytes) => Data::Binary(Cow::Owned(bytes.into_owned())),
        };
        Packet { kind: self.kind, data }
    }
}

/// The limits a long-polling payload is decoded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Most bytes in one payload (Engine.IO's `maxPayload`).
    pub max_bytes: usize,
    /// Most packets in one payload.
    pub max_packets: usize,
}

impl Default for PayloadLimits {
    /// Engine.IO's default `maxPayload` (1,000,000 bytes), and python-engineio's 16 packets.
    fn default() -> Self {
        Self { max_bytes: 1_000_000, max_packets: 16 }
    }
}

/// The packets of a long-polling request body.
///
/// An empty body holds no packets.
///
/// # Errors
/// [`EngineIoError::PayloadTooLarge`], [`EngineIoError::NotUtf8`],
/// [`EngineIoError::TooManyPackets`], or the error of a packet that does not decode.
pub fn decode_payload(
    body: &[u8],
    limits: PayloadLimits,
) -> Result<Vec<Packet<'_>>, EngineIoError> {
    if body.len() > limits.max_bytes {
        return Err(EngineIoError::PayloadTooLarge { size: body.len(), max: limits.max_bytes });
    }
    let text = std::str::from_utf8(body).map_err(|_| EngineIoError::NotUtf8)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let count = text.matches(RECORD_SEPARATOR).count() + 1;
    if count > limits.max_packets {
        return Err(EngineIoError::TooManyPackets { max: limits.max_packets });
    }
    text.split(RECORD_SEPARATOR).map(|packet| Packet::decode_text(packet, true)).collect()
}

/// Appends `packets` as one long-polling response body.
pub fn encode_payload<'p, 'a: 'p>(
    packets: impl IntoIterator<Item = &'p Packet<'a>>,
    out: &mut String,
) {
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        packet.encode_polling(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polling(packets: &[Packet<'_>]) -> String {
        let mut out = String::new();
        encode_payload(packets, &mut out);
        out
    }

    #[test]
    fn packet_types_round_trip_through_their_digits() {
        for digit in b'0'..=b'6' {
            let kind = PacketType::from_digit(digit).unwrap();
            assert_eq!(kind.digit(), char::from(digit));
        }
        assert_eq!(PacketType::from_digit(b'7'), None);
        assert_eq!(PacketType::from_digit(b'b'), None);
    }

    #[test]
    fn text_packets_decode_to_their_type_and_the_rest() {
        let open = Packet::decode_text(r#"0{"sid":"x"}"#, false).unwrap();
        assert_eq!(open, Packet::text(PacketType::Open, r#"{"sid":"x"}"#));
        assert_eq!(Packet::decode_text("2probe", false).unwrap().data, Data::Text("probe".into()));
        assert_eq!(Packet::decode_text("6", false).unwrap(), Packet::text(PacketType::Noop, ""));
        assert_eq!(Packet::decode_text("", false), Err(EngineIoError::Empty));
        assert_eq!(Packet::decode_text("7", false), Err(EngineIoError::UnknownType('7')));
        assert_eq!(Packet::decode_text("é", false), Err(EngineIoError::UnknownType('é')));
        // `b` is a binary message only inside a long-polling payload.
        assert_eq!(Packet::decode_text("bAQI=", false), Err(EngineIoError::UnknownType('b')));
        assert_eq!(Packet::decode_text("bAQI=", true).unwrap(), Packet::binary(&[1u8, 2][..]));
        assert_eq!(Packet::decode_text("b!!", true), Err(EngineIoError::InvalidBase64));
    }

    #[test]
    fn websocket_frames_carry_a_digit_and_text_or_raw_bytes() {
        let mut out = Vec::new();
        assert!(Packet::text(PacketType::Message, "hi").encode_websocket(&mut out));
        assert_eq!(out, b"4hi");
        out.clear();
        assert!(!Packet::binary(&b"\x00\xff"[..]).encode_websocket(&mut out));
        assert_eq!(out, b"\x00\xff");
        assert_eq!(Packet::decode_binary(b"\x00\xff"), Packet::binary(&b"\x00\xff"[..]));
    }

    #[test]
    fn payloads_join_packets_with_the_record_separator() {
        let packets = [
            Packet::text(PacketType::Message, "hello"),
            Packet::binary(&[1u8, 2, 3, 4][..]),
            Packet::text(PacketType::Ping, ""),
        ];
        let body = polling(&packets);
        assert_eq!(body, "4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(decode_payload(body.as_bytes(), PayloadLimits::default()).unwrap(), packets);
        assert_eq!(decode_payload(b"", PayloadLimits::default()).unwrap(), vec![]);
    }

    #[test]
    fn payload_limits_hold() {
        let limits = PayloadLimits { max_bytes: 10, max_packets: 2 };
        assert_eq!(
            decode_payload(b"4aaaaaaaaaaa", limits),
            Err(EngineIoError::PayloadTooLarge { size: 12, max: 10 })
        );
        assert_eq!(
            decode_payload(b"2\x1e2\x1e2", limits),
            Err(EngineIoError::TooManyPackets { max: 2 })
        );
        assert_eq!(decode_payload(b"4\xff", limits), Err(EngineIoError::NotUtf8));
        assert_eq!(decode_payload(b"4a\x1e", limits), Err(EngineIoError::Empty));
    }
}
