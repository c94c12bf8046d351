//! Frame headers (RFC 6455 §5.2): decoding from bytes and encoding to bytes.
//!
//! The header is at most 14 bytes: 2 fixed bytes, 0, 2 or 8 bytes of extended length and
//! 0 or 4 bytes of masking key. Decoding never looks at the payload; the caller checks limits
//! on [`FrameHeader::payload_len`] before it buffers anything, then takes the payload in place.

mod mask;
mod opcode;

pub use mask::{apply_mask, apply_mask_bytes, copy_unmasked};
pub use opcode::{close_code, is_valid_close_code, OpCode};

use crate::error::ProtocolError;

/// Largest possible frame header, in bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1, RSV2 and RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Whether RSV1 is set (permessage-deflate's "compressed" bit, RFC 7692 §6).
    #[must_use]
    pub fn rsv1(&self) -> bool {
        self.rsv & 0b100 != 0
    }

    /// Encoded size of this header in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header into `out` and returns the number of bytes written.
    ///
    /// Lengths always use the minimal encoding (RFC 6455 §5.2).
    ///
    /// # Panics
    /// If `payload_len` has its most significant bit set, which no frame may have.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        assert!(self.payload_len >> 63 == 0, "payload length out of range");
        out[0] = u8::from(self.fin) << 7 | (self.rsv & 0b111) << 4 | u8::from(self.opcode);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                out[1] = mask_bit | 0x7e;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 0x7f;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }
}

/// An encoded frame header held inline: what goes on the wire before a payload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderBytes {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBytes {
    /// Encodes `header`.
    #[must_use]
    pub fn new(header: &FrameHeader) -> Self {
        let mut buf = [0; MAX_HEADER_LEN];
        let len = header.encode(&mut buf) as u8;
        Self { buf, len }
    }

    /// The encoded bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Debug for HeaderBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeaderBytes({:02x?})", self.as_slice())
    }
}

/// Decodes a frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole header, and otherwise the header
/// and its length in bytes. Only rules that concern the header bytes themselves are checked
/// here (the 64-bit length's top bit); the connection state machine checks the rest.
///
/// # Errors
/// [`ProtocolError::InvalidLength`] if a 64-bit length has its most significant bit set.
#[inline]
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut n) = match b1 & 0x7f {
        126 => {
            let Some(ext) = buf.get(2..4) else { return Ok(None) };
            (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
        }
        127 => {
            let Some(ext) = buf.get(2..10) else { return Ok(None) };
            let len = u64::from_be_bytes([
                ext[0], ext[1], ext[2], ext[3], ext[4], ext[5], ext[6], ext[7],
            ]);
            if len >> 63 != 0 {
                return Err(ProtocolError::InvalidLength);
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    let mask = if masked {
        let Some(key) = buf.get(n..n + 4) else { return Ok(None) };
        n += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let header = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0b111,
        opcode: OpCode::from(b0 & 0x0f),
        mask,
        payload_len,
    };
    Ok(Some((header, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: u64) -> FrameHeader {
        FrameHeader { fin, rsv: 0, opcode, mask, payload_len: len }
    }

    #[test]
    fn rfc6455_examples() {
        // RFC 6455 §5.7.
        let (h, n) = decode_header(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!((h, n), (header(true, OpCode::Text, None, 5), 2));
        let (h, n) = decode_header(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f]).unwrap().unwrap();
        assert_eq!((h, n), (header(true, OpCode::Text, Some([0x37, 0xfa, 0x21, 0x3d]), 5), 6));
        let (h, _) = decode_header(&[0x01, 0x03]).unwrap().unwrap();
        assert_eq!(h, header(false, OpCode::Text, None, 3));
        let (h, _) = decode_header(&[0x80, 0x02]).unwrap().unwrap();
        assert_eq!(h, header(true, OpCode::Continuation, None, 2));
        let (h, _) = decode_header(&[0x89, 0x05]).unwrap().unwrap();
        assert_eq!(h, header(true, OpCode::Ping, None, 5));
        let (h, n) = decode_header(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h, n), (header(true, OpCode::Binary, None, 256), 4));
        let (h, n) = decode_header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap().unwrap();
        assert_eq!((h, n), (header(true, OpCode::Binary, None, 65536), 10));
    }

    #[test]
    fn incomplete_headers() {
        let full = {
            let mut b = [0; MAX_HEADER_LEN];
            let n = header(true, OpCode::Binary, Some([1, 2, 3, 4]), 70000).encode(&mut b);
            b[..n].to_vec()
        };
        assert_eq!(full.len(), 14);
        for cut in 0..full.len() {
            assert_eq!(decode_header(&full[..cut]).unwrap(), None, "cut {cut}");
        }
        assert!(decode_header(&full).unwrap().is_some());
    }

    #[test]
    fn msb_length_rejected() {
        let buf = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_header(&buf), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn rsv_bits_and_reserved_opcodes() {
        let (h, _) = decode_header(&[0xF3, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b111);
        assert!(h.rsv1());
        assert_eq!(h.opcode, OpCode::Reserved(3));
    }

    #[test]
    fn encode_decode_round_trip_at_length_boundaries() {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x1_0000, u64::from(u32::MAX) + 1, (1 << 63) - 1] {
            for mask in [None, Some([0xde, 0xad, 0xbe, 0xef])] {
                for op in [OpCode::Text, OpCode::Binary, OpCode::Continuation, OpCode::Ping] {
                    let h = FrameHeader {
                        fin: len % 2 == 0,
                        rsv: 0b010,
                        opcode: op,
                        mask,
                        payload_len: len,
                    };
                    let enc = HeaderBytes::new(&h);
                    assert_eq!(enc.as_slice().len(), h.encoded_len());
                    let (d, n) = decode_header(enc.as_slice()).unwrap().unwrap();
                    assert_eq!((d, n), (h, h.encoded_len()), "len {len}");
                }
            }
        }
    }
}
