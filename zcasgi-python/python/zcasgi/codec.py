"""The sans-I/O WebSocket codec of zcasgi, exposed for tests and tools.

These are thin bindings over the Rust protocol core (``zcasgi-core``) that the server itself
runs: the same frame decoder, masking, UTF-8 validator, opening-handshake parser and connection
state machine, and the Engine.IO v4 packet and long-polling payload codec (``eio_*``). Nothing
here does I/O; bytes go in, frames, events and bytes come out, and time is
passed in. The property tests in ``tests/test_codec_properties.py`` drive the core through this
module. See ``docs/codec.md``.

Example:
    >>> from zcasgi import codec
    >>> conn = codec.Connection()
    >>> conn.receive_data(codec.encode_frame(codec.Opcode.TEXT, b"Hello", mask=b"abcd"))
    >>> conn.events()
    [('text', 'Hello')]
"""

from __future__ import annotations

import enum

from ._zcasgi import (
    ClientDisconnected,
    Connection,
    Frame,
    FrameDecoder,
    HandshakeError,
    ProtocolError,
    Utf8Validator,
    accept_key,
    apply_mask,
    eio_decode_packet,
    eio_decode_payload,
    eio_encode_packet,
    eio_encode_payload,
    encode_frame,
    parse_handshake,
    validate_utf8_stream,
)

__all__ = [
    "ClientDisconnected",
    "Connection",
    "Frame",
    "FrameDecoder",
    "HandshakeError",
    "Opcode",
    "ProtocolError",
    "Utf8Validator",
    "accept_key",
    "apply_mask",
    "eio_decode_packet",
    "eio_decode_payload",
    "eio_encode_packet",
    "eio_encode_payload",
    "encode_frame",
    "parse_handshake",
    "validate_utf8_stream",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2). ``Frame.opcode`` is a plain ``int`` that compares equal."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        """Whether this is a control opcode (0x8-0xF)."""
        return bool(self & 0x8)
