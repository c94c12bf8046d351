//! Client-side WebSocket framing, written for a load generator.
//!
//! Outgoing frames are masked with one fixed key and built once: a connection writes the same
//! pre-masked bytes again and again, so the hot path neither masks nor allocates. Incoming
//! (server, unmasked) frames go through [`FrameReader`], which decodes headers with
//! `zcasgi_core::frame::decode_header` and skips payloads in place: it copies nothing but
//! control-frame payloads, and data payloads only when asked to collect them.

use std::io;

use zcasgi_core::frame::MAX_HEADER_LEN;
use zcasgi_core::frame::{apply_mask, decode_header, FrameHeader, HeaderBytes, OpCode};

/// The masking key of every frame this client sends (RFC 6455 §5.7's example key).
///
/// RFC 6455 §5.3 asks clients for unpredictable keys to protect intermediaries; a benchmark on
/// loopback has none, and a fixed key lets frames be masked once.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The `Sec-WebSocket-Key` of every handshake (RFC 6455 §1.3's sample nonce).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Largest response head accepted during the opening handshake.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A payload of `size` printable ASCII bytes (valid UTF-8, so it also works as text).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// One complete, masked, final frame carrying `payload`.
pub fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some(MASK),
        payload_len: payload.len() as u64,
    };
    let head = HeaderBytes::new(&header);
    let mut out = Vec::with_capacity(head.as_slice().len() + payload.len());
    out.extend_from_slice(head.as_slice());
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], MASK, 0);
    out
}

/// `copies` back-to-back copies of a masked binary frame of `size` bytes.
pub fn binary_frames(size: usize, copies: usize) -> Vec<u8> {
    masked_frame(OpCode::Binary, &payload(size)).repeat(copies.max(1))
}

/// A masked close frame with status 1000 (RFC 6455 §5.5.1).
pub fn close_frame() -> Vec<u8> {
    masked_frame(OpCode::Close, &1000u16.to_be_bytes())
}

/// The HTTP/1.1 upgrade request for `path` on `host` (RFC 6455 §4.1).
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Outcome of feeding bytes of the handshake response.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete yet.
    Partial,
    /// `101 Switching Protocols`; the bytes after the head (frames already sent) follow.
    Switched(Vec<u8>),
}

/// Checks the accumulated response bytes `head` for a complete `101` response.
///
/// # Errors
/// `InvalidData` when the status is not 101 or the head is too large.
pub fn parse_upgrade_response(head: &[u8]) -> io::Result<Upgrade> {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(invalid("handshake response head too large"));
        }
        return Ok(Upgrade::Partial);
    };
    let status_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status_line.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(status_line).into_owned();
        return Err(invalid(&format!("upgrade refused: {line}")));
    }
    Ok(Upgrade::Switched(head[end + 4..].to_vec()))
}

/// An `InvalidData` I/O error with `message`.
pub fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Something [`FrameReader`] found in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message of `len` payload bytes; `data` holds it when collecting.
    Message {
        /// Payload bytes over all of the message's frames.
        len: u64,
        /// Whether it was a text message.
        text: bool,
        /// The payload when the reader collects data, else empty.
        data: &'a [u8],
    },
    /// A ping with its payload (answer with a pong).
    Ping(&'a [u8]),
    /// A close frame: the server is closing.
    Close,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Current {
    opcode: OpCode,
    fin: bool,
    remaining: u64,
}

/// Incremental decoder of the frames a server sends.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes of a header split across reads.
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// The frame being read, between its header and the end of its payload.
    current: Option<Current>,
    /// Payload bytes of the current data message so far, and whether it is text.
    message_len: u64,
    message_text: bool,
    /// Collected data payload, when collecting (`Some`).
    data: Option<Vec<u8>>,
    control: Vec<u8>,
}

impl FrameReader {
    /// A reader that collects data payloads when `collect` is set (else only counts them).
    pub fn new(collect: bool) -> Self {
        Self {
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            current: None,
            message_len: 0,
            message_text: false,
            data: collect.then(Vec::new),
            control: Vec::with_capacity(125),
        }
    }

    /// Decodes `input`, calling `on` for every complete message, ping and close.
    ///
    /// # Errors
    /// `InvalidData` for frames a server must not send: masked, reserved opcodes, oversized
    /// control frames, or a 64-bit length with its top bit set.
    pub fn feed(&mut self, mut input: &[u8], mut on: impl FnMut(Event<'_>)) -> io::Result<()> {
        while !input.is_empty() {
            let Some(mut current) = self.current else {
                let Some((header, used)) = self.take_header(input)? else {
                    // Fewer bytes than a header so far: all of `input` was stashed.
                    return Ok(());
                };
                input = &input[used..];
                self.start_frame(&header)?;
                if header.payload_len == 0 {
                    self.finish_frame(&mut on);
                }
                continue;
            };
            let take = current.remaining.min(input.len() as u64) as usize;
            let (chunk, rest) = input.split_at(take);
            if current.opcode.is_control() {
                self.control.extend_from_slice(chunk);
            } else {
                self.message_len += take as u64;
                if let Some(data) = &mut self.data {
                    data.extend_from_slice(chunk);
                }
            }
            current.remaining -= take as u64;
            self.current = Some(current);
            input = rest;
            if current.remaining == 0 {
                self.finish_frame(&mut on);
            }
        }
        Ok(())
    }

    /// Decodes the next header from the stashed bytes and `input`; returns it with the number
    /// of bytes of `input` it used, or `None` after stashing all of `input`.
    fn take_header(&mut self, input: &[u8]) -> io::Result<Option<(FrameHeader, usize)>> {
        let have = self.header_len;
        if have == 0 {
            if let Some(decoded) = decode_header(input).map_err(|e| invalid(&e.to_string()))? {
                return Ok(Some(decoded));
            }
            self.header[..input.len()].copy_from_slice(input);
            self.header_len = input.len();
            return Ok(None);
        }
        let take = (MAX_HEADER_LEN - have).min(input.len());
        self.header[have..have + take].copy_from_slice(&input[..take]);
        if let Some((header, len)) =
            decode_header(&self.header[..have + take]).map_err(|e| invalid(&e.to_string()))?
        {
            self.header_len = 0;
            return Ok(Some((header, len - have)));
        }
        // Still short of a header, so `take` was all of `input`.
        self.header_len += take;
        Ok(None)
    }

    fn start_frame(&mut self, header: &FrameHeader) -> io::Result<()> {
        if header.mask.is_some() {
            return Err(invalid("masked frame from the server"));
        }
        match header.opcode {
            OpCode::Reserved(op) => return Err(invalid(&format!("reserved opcode {op:#x}"))),
            op if op.is_control() && header.payload_len > 125 => {
                return Err(invalid("control frame longer than 125 bytes"));
            }
            OpCode::Text => self.message_text = true,
            OpCode::Binary => self.message_text = false,
            _ => {}
        }
        self.current =
            Some(Current { opcode: header.opcode, fin: header.fin, remaining: header.payload_len });
        Ok(())
    }

    fn finish_frame(&mut self, on: &mut impl FnMut(Event<'_>)) {
        let Some(current) = self.current.take() else { return };
        match current.opcode {
            OpCode::Ping => on(Event::Ping(&self.control)),
            OpCode::Close => on(Event::Close),
            OpCode::Pong | OpCode::Reserved(_) => {}
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if current.fin {
                    let data = self.data.as_deref().unwrap_or_default();
                    on(Event::Message { len: self.message_len, text: self.message_text, data });
                    self.message_len = 0;
                    if let Some(data) = &mut self.data {
                        data.clear();
                    }
                }
            }
        }
        if current.opcode.is_control() {
            self.control.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let header =
            FrameHeader { fin, rsv: 0, opcode, mask: None, payload_len: payload.len() as u64 };
        let mut out = HeaderBytes::new(&header).as_slice().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn events(reader: &mut FrameReader, bytes: &[u8], step: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for chunk in bytes.chunks(step) {
            reader
                .feed(chunk, |event| {
                    seen.push(match event {
                        Event::Message { len, text, data } => {
                            format!("msg {len} {text} {}", String::from_utf8_lossy(data))
                        }
                        Event::Ping(p) => format!("ping {}", String::from_utf8_lossy(p)),
                        Event::Close => "close".to_owned(),
                    });
                })
                .unwrap();
        }
        seen
    }

    #[test]
    fn whole_split_and_bytewise_agree() {
        let mut stream = server_frame(OpCode::Text, false, b"hel");
        stream.extend(server_frame(OpCode::Ping, true, b"p"));
        stream.extend(server_frame(OpCode::Continuation, true, b"lo"));
        stream.extend(server_frame(OpCode::Binary, true, &[b'x'; 300]));
        stream.extend(server_frame(OpCode::Binary, true, &vec![b'y'; 70_000]));
        stream.extend(server_frame(OpCode::Binary, true, b""));
        stream.extend(server_frame(OpCode::Close, true, &1000u16.to_be_bytes()));
        let expected = vec![
            "ping p".to_owned(),
            "msg 5 true hello".to_owned(),
            format!("msg 300 false {}", "x".repeat(300)),
            format!("msg 70000 false {}", "y".repeat(70_000)),
            "msg 0 false ".to_owned(),
            "close".to_owned(),
        ];
        for step in [stream.len(), 7, 3, 1] {
            assert_eq!(events(&mut FrameReader::new(true), &stream, step), expected, "{step}");
        }
    }

    #[test]
    fn counts_without_collecting() {
        let stream = server_frame(OpCode::Binary, true, &[1; 64]).repeat(3);
        let mut reader = FrameReader::new(false);
        let mut lens = Vec::new();
        reader
            .feed(&stream, |e| {
                if let Event::Message { len, data, .. } = e {
                    assert!(data.is_empty());
                    lens.push(len);
                }
            })
            .unwrap();
        assert_eq!(lens, [64, 64, 64]);
    }

    #[test]
    fn rejects_masked_and_reserved_frames() {
        let masked = masked_frame(OpCode::Binary, b"abc");
        assert!(FrameReader::new(false).feed(&masked, |_| {}).is_err());
        assert!(FrameReader::new(false).feed(&[0x83, 0x00], |_| {}).is_err());
    }

    #[test]
    fn masked_frame_round_trips() {
        let frame = masked_frame(OpCode::Binary, b"payload");
        let (header, n) = decode_header(&frame).unwrap().unwrap();
        assert_eq!(header.mask, Some(MASK));
        let mut body = frame[n..].to_vec();
        apply_mask(&mut body, MASK, 0);
        assert_eq!(body, b"payload");
    }

    #[test]
    fn upgrade_response() {
        assert_eq!(parse_upgrade_response(b"HTTP/1.1 101 Sw").unwrap(), Upgrade::Partial);
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x01a";
        assert_eq!(parse_upgrade_response(ok).unwrap(), Upgrade::Switched(b"\x81\x01a".to_vec()));
        assert!(parse_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
