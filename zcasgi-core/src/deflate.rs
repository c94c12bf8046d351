//! permessage-deflate (RFC 7692): negotiation and per-message (de)compression, server side.
//!
//! # Theory of operation
//!
//! Negotiation ([`negotiate`]) reads the client's offers in order (RFC 7692 §5) and accepts
//! the first valid one that this implementation can honour; an offer with an unknown, repeated
//! or malformed parameter is declined and the next one is tried (RFC 7692 §7). The agreed
//! [`DeflateParams`] give the response header value ([`DeflateParams::to_header`]) and configure
//! a per-connection [`Deflate`].
//!
//! A compressed message is one raw DEFLATE stream cut after a sync flush: the sender strips the
//! trailing `00 00 ff ff` of the flush and the receiver appends it again (RFC 7692 §7.2.1,
//! §7.2.2). With context takeover the LZ77 window carries over from one message to the next
//! in each direction; `*_no_context_takeover` resets it after every message (RFC 7692 §7.1.1).
//!
//! Inflating is bounded: [`Deflate::decompress`] stops as soon as the output would exceed the
//! message size limit and reports [`ProtocolError::MessageTooBig`] (close 1009), so a small
//! "decompression bomb" never costs more memory than the limit.
//!
//! The compressor and decompressor are allocated on first use (a zlib compressor with a 32 KiB
//! window holds about 370 KiB), so a connection that only receives, or only sends, pays for one.
//! Our side always inflates with a 32 KiB window, which can decode anything the client sends
//! whatever its window, so the response never limits `client_max_window_bits`.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ProtocolError;

/// The extension token of permessage-deflate (RFC 7692 §7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The tail of a sync flush that senders strip and receivers append (RFC 7692 §7.2.1).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest LZ77 window this implementation can compress with (zlib refuses 8 for raw deflate).
const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// The largest LZ77 window (RFC 7692 §7.1.2: window bits range from 8 to 15).
const MAX_WINDOW_BITS: u8 = 15;

/// Parameters agreed for one connection (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message (RFC 7692 §7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (RFC 7692 §7.1.1.2).
    pub client_no_context_takeover: bool,
    /// Base-2 logarithm of the server's LZ77 window, 9 to 15 (RFC 7692 §7.1.2.1).
    ///
    /// Sent back in the response only when `server_max_window_bits_in_response` is set.
    pub server_max_window_bits: u8,
    /// Whether the response carries `server_max_window_bits` (the offer had it).
    pub server_max_window_bits_in_response: bool,
}

impl Default for DeflateParams {
    /// Context takeover both ways and 32 KiB windows: the response to a bare offer.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            server_max_window_bits_in_response: false,
        }
    }
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value accepting these parameters (RFC 7692 §5, §7.1).
    ///
    /// # Examples
    /// ```
    /// use zcasgi_core::deflate::negotiate;
    /// let params = negotiate(["permessage-deflate; server_no_context_takeover"]).unwrap();
    /// assert_eq!(params.to_header(), "permessage-deflate; server_no_context_takeover");
    /// ```
    #[must_use]
    pub fn to_header(&self) -> String {
        let mut out = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits_in_response {
            out.push_str("; server_max_window_bits=");
            out.push_str(&self.server_max_window_bits.to_string());
        }
        out
    }
}

/// One permessage-deflate offer of a client, as parsed (RFC 7692 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// `server_no_context_takeover` was present (RFC 7692 §7.1.1.1).
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` was present (RFC 7692 §7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The value of `server_max_window_bits`, if present (RFC 7692 §7.1.2.1).
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`: `Some(None)` without a value, `Some(Some(n))` with one
    /// (RFC 7692 §7.1.2.2).
    pub client_max_window_bits: Option<Option<u8>>,
}

impl Offer {
    /// Parses one element of `Sec-WebSocket-Extensions` (RFC 6455 §9.1, RFC 7692 §7).
    ///
    /// Returns `None` for another extension, or for a permessage-deflate offer that must be
    /// declined: an unknown parameter, a repeated one, or an invalid value (RFC 7692 §7).
    #[must_use]
    pub fn parse(element: &str) -> Option<Self> {
        let mut parts = element.split(';');
        let name = parts.next()?.trim();
        if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
            return None;
        }
        let mut offer = Self::default();
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                None => (part.trim(), None),
            };
            match key {
                "server_no_context_takeover" => {
                    // RFC 7692 §7.1.1.1: no value; §7: no duplicates.
                    if value.is_some() || offer.server_no_context_takeover {
                        return None;
                    }
                    offer.server_no_context_takeover = true;
                }
                "client_no_context_takeover" => {
                    // RFC 7692 §7.1.1.2: no value; §7: no duplicates.
                    if value.is_some() || offer.client_no_context_takeover {
                        return None;
                    }
                    offer.client_no_context_takeover = true;
                }
                "server_max_window_bits" => {
                    // RFC 7692 §7.1.2.1: a value from 8 to 15 is required.
                    if offer.server_max_window_bits.is_some() {
                        return None;
                    }
                    offer.server_max_window_bits = Some(window_bits(value?)?);
                }
                "client_max_window_bits" => {
                    // RFC 7692 §7.1.2.2: the value is optional; if present, 8 to 15.
                    if offer.client_max_window_bits.is_some() {
                        return None;
                    }
                    let bits = match value {
                        Some(v) => Some(window_bits(v)?),
                        None => None,
                    };
                    offer.client_max_window_bits = Some(bits);
                }
                _ => return None,
            }
        }
        Some(offer)
    }

    /// The parameters to accept this offer with, or `None` if it cannot be honoured.
    ///
    /// `server_max_window_bits=8` is declined: zlib cannot compress raw DEFLATE with a
    /// 256-byte window, and answering with a larger one is not allowed (RFC 7692 §7.1.2.1).
    #[must_use]
    pub fn accept(&self) -> Option<DeflateParams> {
        let bits = self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
        if bits < MIN_COMPRESS_WINDOW_BITS {
            return None;
        }
        Some(DeflateParams {
            // RFC 7692 §7.1.1.1: a server accepting the offer includes the parameter.
            server_no_context_takeover: self.server_no_context_takeover,
            // RFC 7692 §7.1.1.2: optional for the server; we keep the client's context so its
            // messages compress better (our decompressor keeps its window either way).
            client_no_context_takeover: false,
            server_max_window_bits: bits,
            // RFC 7692 §7.1.2.1: the response echoes the value (we never go smaller).
            server_max_window_bits_in_response: self.server_max_window_bits.is_some(),
        })
    }
}

/// Removes the quotes of a quoted-string value (RFC 7230 §3.2.6); `None` if malformed.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else { return Some(value.to_owned()) };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Parses a window-bits value: decimal 8 to 15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: String) -> Option<u8> {
    match value.as_str() {
        "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15" => value.parse().ok(),
        _ => None,
    }
}

/// Picks the first acceptable permessage-deflate offer among `Sec-WebSocket-Extensions`
/// elements (RFC 7692 §5: the server accepts at most one offer, preferring the client's order).
///
/// Elements naming other extensions are skipped; invalid offers are declined (RFC 7692 §7).
///
/// # Examples
/// ```
/// use zcasgi_core::deflate::negotiate;
/// let offers = ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"];
/// assert_eq!(negotiate(offers).unwrap().to_header(), "permessage-deflate");
/// ```
pub fn negotiate<I>(elements: I) -> Option<DeflateParams>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    elements.into_iter().find_map(|e| Offer::parse(e.as_ref()).and_then(|o| o.accept()))
}

/// One connection's compressor and decompressor (RFC 7692 §6).
pub struct Deflate {
    params: DeflateParams,
    level: Compression,
    compress: Option<Compress>,
    decompress: Option<Decompress>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .field("level", &self.level.level())
            .field("compressor", &self.compress.is_some())
            .field("decompressor", &self.decompress.is_some())
            .finish()
    }
}

impl Deflate {
    /// The (de)compression state for agreed `params`, at zlib's default level (6).
    #[must_use]
    pub fn new(params: DeflateParams) -> Self {
        Self { params, level: Compression::default(), compress: None, decompress: None }
    }

    /// The agreed parameters.
    #[must_use]
    pub fn params(&self) -> &DeflateParams {
        &self.params
    }

    /// Compresses one message's payload (RFC 7692 §7.2.1): DEFLATE, sync flush, and the
    /// trailing `00 00 ff ff` removed. The frame carrying it must have RSV1 set.
    ///
    /// # Panics
    /// Only if zlib reports a stream error, which cannot happen for in-memory data.
    pub fn compress(&mut self, data: &[u8]) -> Bytes {
        if data.is_empty() {
            // RFC 7692 §7.2.3.6: an empty stored block; the compressor's state is untouched.
            return Bytes::from_static(&[0x00]);
        }
        let (level, bits) = (self.level, self.params.server_max_window_bits);
        let c =
            self.compress.get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let mut out = Vec::with_capacity(data.len() / 4 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                // Incompressible data: the rest of the input, plus block headers, will do.
                out.reserve(data.len() - pos + 64);
            }
            let before = c.total_in();
            c.compress_vec(&data[pos..], &mut out, FlushCompress::Sync)
                .expect("deflating in-memory data cannot fail");
            pos += (c.total_in() - before) as usize;
            // Output space left over means the flush is complete.
            if pos == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        debug_assert!(out.ends_with(&TRAILER), "a sync flush ends with 00 00 ff ff");
        if out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if self.params.server_no_context_takeover {
            // RFC 7692 §7.1.1.1: the next message starts with an empty window.
            c.reset();
        }
        into_bytes(out)
    }

    /// Decompresses one message's payload (RFC 7692 §7.2.2): `00 00 ff ff` appended, then
    /// inflated, producing at most `max` bytes.
    ///
    /// # Errors
    /// [`ProtocolError::MessageTooBig`] as soon as the output would exceed `max` (RFC 6455
    /// §7.4.1 code 1009; nothing more than `max` bytes is ever allocated), and
    /// [`ProtocolError::InvalidCompressedData`] for data that does not inflate (code 1007).
    pub fn decompress(&mut self, data: &[u8], max: usize) -> Result<Bytes, ProtocolError> {
        let d = self.decompress.get_or_insert_with(|| Decompress::new(false));
        let limit = max.saturating_add(1);
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).max(64).min(limit));
        let mut ended = false;
        'chunks: for chunk in [data, &TRAILER[..]] {
            let mut pos = 0;
            loop {
                if out.len() == out.capacity() {
                    // Doubling, but never past the limit: a bomb allocates at most `max + 1`.
                    let room = out.capacity().max(4096).min(limit - out.len());
                    out.reserve_exact(room);
                }
                let (in_before, out_before) = (d.total_in(), out.len());
                let status = d
                    .decompress_vec(&chunk[pos..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| ProtocolError::InvalidCompressedData)?;
                pos += (d.total_in() - in_before) as usize;
                if out.len() > max {
                    d.reset(false);
                    return Err(ProtocolError::MessageTooBig {
                        size: out.len() as u64,
                        max: max as u64,
                    });
                }
                if status == Status::StreamEnd {
                    // A block with BFINAL set ends the stream (RFC 7692 §7.2.3.4): what follows
                    // is padding, and the next message starts a new stream.
                    ended = true;
                    break 'chunks;
                }
                if pos == chunk.len() && out.len() < out.capacity() {
                    break;
                }
                if d.total_in() == in_before && out.len() == out_before {
                    // No progress with input left and room to write: the data is corrupt.
                    return Err(ProtocolError::InvalidCompressedData);
                }
            }
        }
        if ended || self.params.client_no_context_takeover {
            // RFC 7692 §7.1.1.2: the client starts each message with an empty window.
            d.reset(false);
        }
        Ok(into_bytes(out))
    }
}

/// Freezes a buffer, giving back its unused capacity if that is a large part of it (the
/// result may stay queued for a while).
fn into_bytes(mut buf: Vec<u8>) -> Bytes {
    if buf.capacity() - buf.len() > buf.len() / 4 + 1024 {
        buf.shrink_to_fit();
    }
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(offers: &[&str]) -> Option<String> {
        negotiate(offers).map(|p| p.to_header())
    }

    /// A deterministic, poorly compressible byte stream (xorshift).
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn negotiation_rfc7692_examples() {
        // RFC 7692 §5 and §7.1: the response to each offer (the first acceptable one wins).
        assert_eq!(header(&["permessage-deflate"]).unwrap(), "permessage-deflate");
        assert_eq!(
            header(&["permessage-deflate; client_max_window_bits"]).unwrap(),
            "permessage-deflate"
        );
        assert_eq!(
            header(&[
                "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
                "permessage-deflate; client_max_window_bits",
            ])
            .unwrap(),
            "permessage-deflate; server_max_window_bits=10"
        );
        assert_eq!(
            header(&["permessage-deflate; server_max_window_bits=10", "permessage-deflate"])
                .unwrap(),
            "permessage-deflate; server_max_window_bits=10"
        );
        assert_eq!(
            header(&["permessage-deflate; server_no_context_takeover"]).unwrap(),
            "permessage-deflate; server_no_context_takeover"
        );
        // client_no_context_takeover is the client's capability; we do not ask for it.
        assert_eq!(
            header(&["permessage-deflate; client_no_context_takeover"]).unwrap(),
            "permessage-deflate"
        );
        assert_eq!(
            header(&["permessage-deflate; client_max_window_bits=10"]).unwrap(),
            "permessage-deflate"
        );
    }

    #[test]
    fn negotiated_parameters() {
        let p = negotiate([
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits",
        ])
        .unwrap();
        assert_eq!(
            p,
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: false,
                server_max_window_bits: 9,
                server_max_window_bits_in_response: true,
            }
        );
        assert_eq!(
            p.to_header(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(negotiate(["permessage-deflate"]), Some(DeflateParams::default()));
        // Names are case-insensitive; whitespace around parameters is allowed; quoted values
        // are unquoted (RFC 6455 §9.1).
        assert_eq!(
            header(&["PerMessage-Deflate ;  server_max_window_bits = \"12\" "]).unwrap(),
            "permessage-deflate; server_max_window_bits=12"
        );
        assert_eq!(
            Offer::parse("permessage-deflate; client_max_window_bits=\"1\\5\""),
            Some(Offer { client_max_window_bits: Some(Some(15)), ..Offer::default() })
        );
    }

    #[test]
    fn invalid_offers_are_declined() {
        // RFC 7692 §7: unknown parameters, invalid values and duplicates decline the offer.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; client_max_window_bits=\"1\"0\"",
            "permessage-deflate; Server_No_Context_Takeover",
        ] {
            assert_eq!(Offer::parse(bad), None, "{bad}");
            assert_eq!(negotiate([bad]), None, "{bad}");
            // The next offer is tried.
            assert_eq!(
                negotiate([bad, "permessage-deflate; server_no_context_takeover"]),
                Some(DeflateParams {
                    server_no_context_takeover: true,
                    ..DeflateParams::default()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn window_of_256_bytes_is_declined() {
        // zlib cannot deflate with a 256-byte window; answering with more would break the rule.
        let offer = Offer::parse("permessage-deflate; server_max_window_bits=8").unwrap();
        assert_eq!(offer.server_max_window_bits, Some(8));
        assert_eq!(offer.accept(), None);
        assert_eq!(
            header(&["permessage-deflate; server_max_window_bits=8", "permessage-deflate"])
                .unwrap(),
            "permessage-deflate"
        );
        // A client limiting its own window to 256 bytes is fine: we inflate with 32 KiB.
        assert_eq!(
            header(&["permessage-deflate; client_max_window_bits=8"]).unwrap(),
            "permessage-deflate"
        );
    }

    #[test]
    fn other_extensions_are_skipped() {
        assert_eq!(negotiate(Vec::<String>::new()), None);
        assert_eq!(negotiate(["x-webkit-deflate-frame"]), None);
        assert_eq!(negotiate(["permessage-deflate-x"]), None);
        assert_eq!(header(&["x-foo; a=1", "permessage-deflate"]).unwrap(), "permessage-deflate");
    }

    #[test]
    fn rfc7692_examples_inflate() {
        let mut d = Deflate::new(DeflateParams::default());
        // §7.2.3.1: "Hello" compressed; §7.2.3.2: the second "Hello" refers to the first.
        assert_eq!(
            d.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            "Hello"
        );
        assert_eq!(d.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(), "Hello");
        // §7.2.3.3: a stored (uncompressed) block.
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(d.decompress(&stored, 100).unwrap(), "Hello");
        // §7.2.3.5: two DEFLATE blocks in one message.
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(d.decompress(&two, 100).unwrap(), "Hello");
        // §7.2.3.6: an empty message.
        assert_eq!(d.decompress(&[0x00], 100).unwrap(), "");
        // §7.2.3.4: a block with BFINAL set ends the stream; the next message starts afresh.
        let fin = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(d.decompress(&fin, 100).unwrap(), "Hello");
        assert_eq!(
            d.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            "Hello"
        );
    }

    #[test]
    fn rfc7692_examples_deflate() {
        let mut c = Deflate::new(DeflateParams::default());
        // §7.2.3.1 and §7.2.3.2: with context takeover the second "Hello" is a back-reference.
        assert_eq!(c.compress(b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..]);
        assert_eq!(c.compress(b"Hello"), [0xf2, 0x00, 0x11, 0x00, 0x00][..]);
        // §7.2.3.6: an empty message, twice (the second sync flush would emit nothing).
        assert_eq!(c.compress(b""), [0x00][..]);
        assert_eq!(c.compress(b""), [0x00][..]);
        // §7.1.1.1: without context takeover every "Hello" is compressed alone.
        let params = DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() };
        let mut c = Deflate::new(params);
        for _ in 0..3 {
            assert_eq!(c.compress(b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..]);
        }
    }

    fn messages() -> Vec<Vec<u8>> {
        // 8 KiB of text that compresses only by its alphabet, sent twice in a row.
        let text: Vec<u8> =
            noise(4096, 3).iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
        vec![
            b"Hello".to_vec(),
            Vec::new(),
            text.clone(),
            text,
            noise(100_000, 7),
            vec![0; 256 * 1024],
            "κόσμε".repeat(1000).into_bytes(),
        ]
    }

    #[test]
    fn round_trips_with_context_takeover() {
        for bits in 9..=15 {
            let params = DeflateParams { server_max_window_bits: bits, ..DeflateParams::default() };
            let mut tx = Deflate::new(params);
            let mut rx = Deflate::new(DeflateParams::default());
            let mut sizes = Vec::new();
            for m in messages() {
                let z = tx.compress(&m);
                sizes.push(z.len());
                assert_eq!(rx.decompress(&z, m.len()).unwrap(), m, "window bits {bits}");
            }
            // The second copy of the text refers back to the first (it fits the window).
            if bits >= 14 {
                assert!(sizes[3] < sizes[2] / 20, "{sizes:?}");
            }
            assert!(sizes[5] < 2048, "{sizes:?}");
        }
    }

    #[test]
    fn round_trips_without_context_takeover() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let mut tx = Deflate::new(params);
        let mut rx = Deflate::new(params);
        for m in messages() {
            let z = tx.compress(&m);
            // Each message decodes on its own: the compressor was reset.
            let mut fresh = Deflate::new(DeflateParams::default());
            assert_eq!(fresh.decompress(&z, m.len()).unwrap(), m);
            assert_eq!(rx.decompress(&z, m.len()).unwrap(), m);
        }
        let msgs = messages();
        assert_eq!(tx.compress(&msgs[2]), tx.compress(&msgs[3]));
    }

    #[test]
    fn decompression_bomb_is_message_too_big() {
        let mut tx = Deflate::new(DeflateParams::default());
        let bomb = tx.compress(&vec![0; 10 << 20]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let mut rx = Deflate::new(DeflateParams::default());
        let err = rx.decompress(&bomb, 1 << 20).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { size: (1 << 20) + 1, max: 1 << 20 });
        assert_eq!(err.close_code(), 1009);
        // The limit is inclusive.
        let mut tx = Deflate::new(DeflateParams::default());
        let z = tx.compress(&[b'a'; 5000]);
        let mut rx = Deflate::new(DeflateParams::default());
        assert_eq!(rx.decompress(&z, 5000).unwrap().len(), 5000);
        let mut rx = Deflate::new(DeflateParams::default());
        assert!(matches!(rx.decompress(&z, 4999), Err(ProtocolError::MessageTooBig { .. })));
    }

    #[test]
    fn invalid_data_is_1007() {
        for bad in [
            &[0xff, 0xff, 0xff][..],         // BTYPE 11 is reserved
            &[0x00, 0x05, 0x00, 0x00, 0x00], // stored block whose NLEN is not ~LEN
            &[0xf2, 0x00, 0x11, 0x00, 0x00], // a back-reference before any data
        ] {
            let mut d = Deflate::new(DeflateParams::default());
            let err = d.decompress(bad, 1000).unwrap_err();
            assert_eq!(err, ProtocolError::InvalidCompressedData, "{bad:02x?}");
            assert_eq!(err.close_code(), 1007);
        }
    }
}
