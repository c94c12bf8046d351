"""Unit tests of ``zcasgi.codec``: RFC 6455 examples, every protocol error, handshake vectors.

The property tests are in ``test_codec_properties.py``; these pin down exact bytes and exact
close codes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import zcasgi
from zcasgi import codec
from zcasgi.codec import Connection, Frame, FrameDecoder, Opcode

MASK = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 §5.7


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A client frame: masked with the RFC 6455 §5.7 key."""
    return codec.encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=MASK)


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return masked(Opcode.CLOSE, code.to_bytes(2, "big") + reason)


# --- RFC 6455 §5.7 examples -------------------------------------------------------------------

RFC_EXAMPLES = [
    # (description, wire bytes, expected frame)
    ("unmasked text", "810548656c6c6f", Frame(1, b"Hello")),
    ("masked text", "818537fa213d7f9f4d5158", Frame(1, b"Hello", masked=True)),
    ("fragment 1", "010348656c", Frame(1, b"Hel", fin=False)),
    ("fragment 2", "80026c6f", Frame(0, b"lo")),
    ("unmasked ping", "890548656c6c6f", Frame(9, b"Hello")),
    ("masked pong", "8a8537fa213d7f9f4d5158", Frame(10, b"Hello", masked=True)),
]


@pytest.mark.parametrize(("name", "wire", "frame"), RFC_EXAMPLES, ids=[e[0] for e in RFC_EXAMPLES])
def test_rfc6455_examples_decode(name: str, wire: str, frame: Frame) -> None:
    data = bytes.fromhex(wire)
    assert FrameDecoder().feed(data) == [frame]
    # Byte by byte: nothing until the last byte.
    decoder = FrameDecoder()
    for i, byte in enumerate(data):
        frames = decoder.feed(bytes([byte]))
        assert frames == ([frame] if i == len(data) - 1 else [])
    assert decoder.buffered == 0


@pytest.mark.parametrize(("name", "wire", "frame"), RFC_EXAMPLES, ids=[e[0] for e in RFC_EXAMPLES])
def test_rfc6455_examples_encode(name: str, wire: str, frame: Frame) -> None:
    mask = MASK if frame.masked else None
    encoded = codec.encode_frame(frame.opcode, frame.payload, fin=frame.fin, mask=mask)
    assert encoded.hex() == wire


def test_rfc6455_length_examples() -> None:
    # 256 bytes binary in a single unmasked frame: 16-bit length.
    wire = codec.encode_frame(Opcode.BINARY, bytes(256))
    assert wire[:4] == bytes.fromhex("827e0100")
    assert len(wire) == 4 + 256
    # 64 KiB binary in a single unmasked frame: 64-bit length.
    wire = codec.encode_frame(Opcode.BINARY, bytes(65536))
    assert wire[:10] == bytes.fromhex("827f0000000000010000")
    assert FrameDecoder().feed(wire) == [Frame(2, bytes(65536))]


def test_rfc6455_fragmented_message_through_connection() -> None:
    conn = Connection()
    conn.receive_data(masked(Opcode.TEXT, b"Hel", fin=False))
    assert conn.events() == []
    conn.receive_data(masked(Opcode.PING, b"Hello"))
    assert conn.events() == [("ping", b"Hello")]
    assert conn.data_to_send() == bytes.fromhex("8a0548656c6c6f")  # the pong, unmasked
    conn.receive_data(masked(Opcode.CONTINUATION, b"lo"))
    assert conn.events() == [("text", "Hello")]


# --- masking ----------------------------------------------------------------------------------


def test_apply_mask_rfc_example() -> None:
    assert codec.apply_mask(bytes.fromhex("7f9f4d5158"), MASK) == b"Hello"
    assert codec.apply_mask(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")


def test_apply_mask_offset() -> None:
    whole = codec.apply_mask(b"Hello, world", MASK)
    assert codec.apply_mask(b"Hello, world"[5:], MASK, 5) == whole[5:]
    assert codec.apply_mask(b"", MASK, 3) == b""


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_mask_must_be_four_bytes(mask: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        codec.apply_mask(b"x", mask)
    with pytest.raises(ValueError, match="4 bytes"):
        codec.encode_frame(1, b"x", mask=mask)


def test_apply_mask_negative_offset() -> None:
    with pytest.raises(ValueError, match="offset"):
        codec.apply_mask(b"x", MASK, -1)


@pytest.mark.parametrize(("opcode", "rsv"), [(16, 0), (-1, 0), (1, 8), (1, -1), (2**70, 0)])
def test_encode_frame_ranges(opcode: int, rsv: int) -> None:
    with pytest.raises(ValueError, match="must be in"):
        codec.encode_frame(opcode, b"", rsv=rsv)


def test_encode_frame_builds_invalid_frames_on_purpose() -> None:
    # Reserved opcode, RSV bits, fragmented and oversized control frames: all encodable.
    assert codec.encode_frame(0xB, b"", rsv=0b111, fin=False) == b"\x7b\x00"
    assert codec.encode_frame(Opcode.PING, bytes(126))[:4] == b"\x89\x7e\x00\x7e"


# --- FrameDecoder -----------------------------------------------------------------------------


def test_decoder_rejects_64_bit_length_with_msb_set() -> None:
    decoder = FrameDecoder()
    with pytest.raises(zcasgi.ProtocolError, match="most significant bit") as info:
        decoder.feed(bytes.fromhex("827f8000000000000000"))
    assert info.value.close_code == 1002
    # Stopped for good.
    with pytest.raises(zcasgi.ProtocolError):
        decoder.feed(b"")


def test_decoder_max_size_before_payload() -> None:
    decoder = FrameDecoder(max_size=100)
    assert decoder.feed(codec.encode_frame(2, bytes(100))) == [Frame(2, bytes(100))]
    # The header alone is enough to fail.
    with pytest.raises(zcasgi.ProtocolError, match="101 bytes exceeds the limit of 100") as info:
        decoder.feed(codec.encode_frame(2, bytes(101))[:4])
    assert info.value.close_code == 1009


def test_decoder_returns_frames_before_an_error_then_raises() -> None:
    decoder = FrameDecoder()
    good = codec.encode_frame(1, b"ok")
    frames = decoder.feed(good + bytes.fromhex("827fffffffffffffffff"))
    assert frames == [Frame(1, b"ok")]
    with pytest.raises(zcasgi.ProtocolError) as info:
        decoder.feed(b"")
    assert info.value.close_code == 1002


def test_decoder_checks_no_message_rules() -> None:
    # Unmasked, RSV bits, reserved opcode, fragmented long control frame: decoded as they are.
    data = codec.encode_frame(0x3, b"a", rsv=0b101) + codec.encode_frame(9, bytes(200), fin=False)
    assert FrameDecoder().feed(data) == [
        Frame(3, b"a", rsv=0b101),
        Frame(9, bytes(200), fin=False),
    ]


def test_decoder_buffers_partial_frames() -> None:
    decoder = FrameDecoder()
    data = codec.encode_frame(2, b"abcdef", mask=MASK)
    assert decoder.feed(data[:5]) == []
    assert decoder.buffered == 5
    assert decoder.feed(data[5:] + data[:1]) == [Frame(2, b"abcdef", masked=True)]
    assert decoder.buffered == 1


def test_decoder_max_size_validation() -> None:
    with pytest.raises(ValueError, match="max_size"):
        FrameDecoder(max_size=-1)


def test_frame_value_semantics() -> None:
    frame = Frame(Opcode.TEXT, b"x", fin=False, rsv=4, masked=True)
    assert (frame.opcode, frame.payload, frame.fin, frame.rsv, frame.masked) == (
        1,
        b"x",
        False,
        4,
        True,
    )
    assert frame == Frame(1, b"x", fin=False, rsv=4, masked=True)
    assert frame != Frame(1, b"x", fin=False, rsv=4, masked=False)
    assert frame != (1, b"x")
    assert len({frame, Frame(1, b"x", fin=False, rsv=4, masked=True)}) == 1
    assert repr(frame) == "Frame(opcode=1, payload=b'x', fin=False, rsv=4, masked=True)"
    with pytest.raises(AttributeError):
        frame.fin = True  # type: ignore[misc]


# --- Connection: every protocol error with its close code -------------------------------------

PROTOCOL_ERRORS = [
    # (variant, input, close code, message fragment)
    ("ReservedBitsSet", masked(1, b"x", rsv=0b100), 1002, "reserved bits set"),
    ("ReservedOpcode 0x3", masked(0x3, b""), 1002, "reserved opcode 0x3"),
    ("ReservedOpcode 0xb", masked(0xB, b""), 1002, "reserved opcode 0xb"),
    ("UnmaskedFrame", codec.encode_frame(1, b"hi"), 1002, "not masked"),
    ("FragmentedControlFrame", masked(9, b"", fin=False), 1002, "fragmented control frame"),
    ("ControlFrameTooLong", masked(9, bytes(126)), 1002, "126 bytes exceeds 125"),
    ("UnexpectedContinuation", masked(0, b"x"), 1002, "continuation frame without"),
    (
        "ExpectedContinuation",
        masked(1, b"a", fin=False) + masked(2, b"b"),
        1002,
        "fragmented message is in progress",
    ),
    ("InvalidLength", bytes.fromhex("82ff8000000000000000") + MASK, 1002, "most significant"),
    ("InvalidUtf8", masked(1, b"\xce\xba\xff"), 1007, "invalid UTF-8 in text"),
    ("InvalidUtf8 truncated", masked(1, b"\xce"), 1007, "invalid UTF-8 in text"),
    (
        "InvalidUtf8 across fragments",
        masked(1, b"\xf4", fin=False) + masked(0, b"\x90\x80\x80"),
        1007,
        "invalid UTF-8 in text",
    ),
    ("InvalidClosePayload", masked(8, b"\x03"), 1002, "close frame payload of 1 byte"),
    ("InvalidCloseCode 1005", close_frame(1005), 1002, "invalid close code 1005"),
    ("InvalidCloseCode 999", close_frame(999), 1002, "invalid close code 999"),
    ("InvalidCloseCode 5000", close_frame(5000), 1002, "invalid close code 5000"),
    ("InvalidCloseReason", close_frame(1000, b"\xff"), 1007, "invalid UTF-8 in close reason"),
    (
        "MessageTooBig",
        b"\x82\xff" + (16 * 1024 * 1024 + 1).to_bytes(8, "big") + MASK,
        1009,
        "16777217 bytes exceeds the limit of 16777216",
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "code", "message"), PROTOCOL_ERRORS, ids=[e[0] for e in PROTOCOL_ERRORS]
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_protocol_errors(name: str, data: bytes, code: int, message: str, bytewise: bool) -> None:
    conn = Connection()
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    with pytest.raises(zcasgi.ProtocolError, match=message) as info:
        for chunk in chunks:
            conn.receive_data(chunk)
    assert isinstance(info.value, zcasgi.ZcasgiError)
    assert info.value.close_code == code
    # The connection failed itself: close frame queued, closed event, no more reading.
    assert conn.is_closed and not conn.is_open
    assert conn.data_to_send()[-4:] == b"\x88\x02" + code.to_bytes(2, "big")
    assert conn.events()[-1] == ("closed", code, "")
    conn.receive_data(masked(1, b"late"))
    assert conn.events() == []
    assert conn.data_to_send() == b""


def test_message_too_big_across_fragments() -> None:
    conn = Connection(max_message_size=100)
    conn.receive_data(masked(2, bytes(60), fin=False))
    with pytest.raises(zcasgi.ProtocolError, match="101 bytes exceeds the limit of 100") as info:
        conn.receive_data(masked(0, bytes(41)))
    assert info.value.close_code == 1009
    # Control frames do not count against the message.
    conn = Connection(max_message_size=10)
    conn.receive_data(masked(1, b"12345", fin=False) + masked(9, bytes(100)))
    conn.receive_data(masked(0, b"67890"))
    assert conn.events() == [("ping", bytes(100)), ("text", "1234567890")]


def test_keepalive_timeout_closes_with_1011() -> None:
    conn = Connection(ping_interval=1.0, ping_timeout=1.0)
    assert conn.on_tick(50.0) == 51.0
    assert conn.data_to_send() == b""
    assert conn.on_tick(51.0) == 52.0
    ping = conn.data_to_send()
    assert ping[:2] == b"\x89\x08"
    assert conn.on_tick(52.0) is None
    assert conn.is_closed
    assert conn.data_to_send() == b"\x88\x02\x03\xf3"
    assert conn.events() == [("closed", 1011, "")]


def test_keepalive_pong_keeps_the_connection() -> None:
    conn = Connection(ping_interval=5.0, ping_timeout=2.0)
    assert conn.on_tick(0.0) == 5.0
    assert conn.on_tick(5.0) == 7.0
    ping = conn.data_to_send()
    conn.receive_data(masked(Opcode.PONG, b"other"))
    assert conn.on_tick(6.0) == 7.0  # an unrelated pong does not count
    conn.receive_data(masked(Opcode.PONG, ping[2:]))
    assert conn.on_tick(7.5) == 10.0
    assert conn.is_open
    assert conn.events() == [("pong", b"other"), ("pong", ping[2:])]


# --- Connection: normal operation -------------------------------------------------------------


def test_messages_and_automatic_pong() -> None:
    conn = Connection()
    conn.receive_data(masked(1, "κόσμε".encode()) + masked(2, b"\x00\x01") + masked(9, b"p"))
    assert conn.events() == [("text", "κόσμε"), ("binary", b"\x00\x01"), ("ping", b"p")]
    assert conn.data_to_send() == b"\x8a\x01p"
    assert conn.data_to_send() == b""


def test_send_frames_are_unmasked_and_minimal() -> None:
    conn = Connection()
    conn.send_text("hi")
    conn.send_binary(bytes(200))
    conn.send_ping(b"?")
    conn.send_ping()
    assert conn.data_to_send() == (
        b"\x81\x02hi" + b"\x82\x7e\x00\xc8" + bytes(200) + b"\x89\x01?" + b"\x89\x00"
    )


def test_send_ping_too_long() -> None:
    with pytest.raises(ValueError, match="125"):
        Connection().send_ping(bytes(126))


def test_peer_close_is_echoed() -> None:
    conn = Connection()
    conn.receive_data(close_frame(4001, "bye ✓".encode()))
    assert conn.events() == [("closed", 4001, "bye ✓")]
    assert conn.data_to_send() == b"\x88\x02\x0f\xa1"
    assert conn.is_closed


def test_empty_close_is_1005() -> None:
    conn = Connection()
    conn.receive_data(masked(8, b""))
    assert conn.events() == [("closed", 1005, "")]
    assert conn.data_to_send() == b"\x88\x00"


def test_local_close_handshake() -> None:
    conn = Connection()
    conn.send_close(1000, "done")
    conn.send_close(1001, "ignored")  # a second close is a no-op
    assert conn.data_to_send() == b"\x88\x06\x03\xe8done"
    assert not conn.is_open and not conn.is_closed
    conn.receive_data(masked(1, b"discarded"))
    conn.receive_data(close_frame(1000))
    assert conn.events() == [("closed", 1000, "")]
    assert conn.data_to_send() == b""
    assert conn.is_closed


def test_close_timeout() -> None:
    conn = Connection(close_timeout=3.0)
    conn.send_close()
    assert conn.on_tick(10.0) == 13.0
    assert conn.on_tick(12.9) == 13.0
    assert conn.on_tick(13.0) is None
    assert conn.events() == [("closed", 1006, "")]


def test_eof_is_1006() -> None:
    conn = Connection()
    conn.receive_data(masked(1, b"partial")[:4])
    conn.receive_eof()
    assert conn.events() == [("closed", 1006, "")]
    conn.receive_eof()
    assert conn.events() == []


def test_send_after_close_raises_client_disconnected() -> None:
    conn = Connection()
    conn.receive_data(close_frame(1000))
    sends: list[Callable[[], None]] = [
        lambda: conn.send_text("x"),
        lambda: conn.send_binary(b"x"),
        conn.send_ping,
    ]
    for send in sends:
        with pytest.raises(zcasgi.ClientDisconnected) as info:
            send()
        assert isinstance(info.value, OSError)
    conn.send_close()  # no-op, no error


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65536, -1])
def test_send_close_unsendable_codes(code: int) -> None:
    conn = Connection()
    with pytest.raises(ValueError, match=f"close code {code} may not be sent"):
        conn.send_close(code)
    assert conn.is_open
    assert conn.data_to_send() == b""


def test_send_close_reason_too_long() -> None:
    conn = Connection()
    conn.send_close(1000, "é" * 61 + "x")  # 123 bytes
    with pytest.raises(ValueError, match="123 bytes"):
        Connection().send_close(1000, "é" * 62)  # 124 bytes


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_message_size": -1},
        {"ping_interval": 0.0},
        {"ping_interval": -1.0},
        {"ping_timeout": float("nan")},
        {"close_timeout": float("inf")},
    ],
)
def test_connection_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Connection(**kwargs)  # type: ignore[arg-type]


def test_on_tick_rejects_non_finite_time() -> None:
    with pytest.raises(ValueError, match="out of range"):
        Connection(close_timeout=1.0).on_tick(float("nan"))


# --- UTF-8 ------------------------------------------------------------------------------------


def test_utf8_validator_fails_fast() -> None:
    v = codec.Utf8Validator()
    assert v.feed("κόσμε".encode())
    assert v.feed(b"\xf4")
    assert not v.finish()  # unfinished code point
    assert not v.feed(b"\x90")  # above U+10FFFF: fails before the rest arrives
    assert not v.feed(b"ok")  # stays failed
    assert not v.finish()


def test_validate_utf8_stream() -> None:
    text = "€𝄞€".encode()
    for cut in range(len(text) + 1):
        assert codec.validate_utf8_stream([text[:cut], text[cut:]])
    assert codec.validate_utf8_stream([])
    assert codec.validate_utf8_stream(iter([b"a", b"", b"b"]))
    assert not codec.validate_utf8_stream([b"\xed", b"\xa0\x80"])  # surrogate
    assert not codec.validate_utf8_stream([b"\xe2\x82"])  # truncated


# --- handshake --------------------------------------------------------------------------------

RFC_REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def test_accept_key_rfc6455() -> None:
    # RFC 6455 §1.3.
    assert codec.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_handshake_rfc_request() -> None:
    request = codec.parse_handshake(RFC_REQUEST + b"\x81\x85")  # frames may follow the head
    assert request is not None
    assert request == {
        "method": "GET",
        "http_version": "1.1",
        "path": "/chat",
        "raw_path": b"/chat",
        "query_string": b"room=1",
        "headers": [
            (b"host", b"server.example.com"),
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"origin", b"http://example.com"),
            (b"sec-websocket-protocol", b"chat, superchat"),
            (b"sec-websocket-version", b"13"),
        ],
        "subprotocols": ["chat", "superchat"],
        "extensions": [],
        "accept_key": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "head_length": len(RFC_REQUEST),
    }


def test_parse_handshake_needs_the_whole_head() -> None:
    for cut in range(len(RFC_REQUEST)):
        assert codec.parse_handshake(RFC_REQUEST[:cut]) is None


def test_parse_handshake_path_and_extensions() -> None:
    data = RFC_REQUEST.replace(b"/chat?room=1", b"/a%20b/%E2%82%AC?x=%20").replace(
        b"Origin: http://example.com\r\n",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\n",
    )
    request = codec.parse_handshake(data)
    assert request is not None
    assert request["path"] == "/a b/€"
    assert request["raw_path"] == b"/a%20b/%E2%82%AC"
    assert request["query_string"] == b"x=%20"
    assert request["extensions"] == ["permessage-deflate; client_max_window_bits", "x-foo"]


def _replace_header(name: bytes, value: bytes | None) -> bytes:
    lines = [
        line
        for line in RFC_REQUEST.split(b"\r\n")
        if not line.lower().startswith(name.lower() + b":")
    ]
    if value is not None:
        lines.insert(1, name + b": " + value)
    return b"\r\n".join(lines)


HANDSHAKE_ERRORS = [
    ("POST", RFC_REQUEST.replace(b"GET", b"POST", 1), 400, "method must be GET"),
    ("HTTP/1.0", RFC_REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400, "HTTP/1.1"),
    ("no Upgrade", _replace_header(b"Upgrade", None), 426, "not a WebSocket upgrade"),
    ("Upgrade: h2c", _replace_header(b"Upgrade", b"h2c"), 426, "not a WebSocket upgrade"),
    ("no Connection", _replace_header(b"Connection", b"keep-alive"), 426, "not a WebSocket"),
    ("no key", _replace_header(b"Sec-WebSocket-Key", None), 400, "Sec-WebSocket-Key"),
    ("short key", _replace_header(b"Sec-WebSocket-Key", b"c2hvcnQ="), 400, "Sec-WebSocket-Key"),
    ("bad key", _replace_header(b"Sec-WebSocket-Key", b"!!!"), 400, "Sec-WebSocket-Key"),
    ("no version", _replace_header(b"Sec-WebSocket-Version", None), 426, "Version"),
    ("version 8", _replace_header(b"Sec-WebSocket-Version", b"8"), 426, "Version"),
    ("bad header", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed"),
    ("bad method", b"\x01\x02 / HTTP/1.1\r\n\r\n", 400, "malformed"),
    ("line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", 414, "request line"),
    ("head too large", b"GET / HTTP/1.1\r\nX: " + b"b" * 17000, 431, "exceed"),
    ("too many headers", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "more than"),
]


@pytest.mark.parametrize(
    ("name", "data", "status", "message"), HANDSHAKE_ERRORS, ids=[e[0] for e in HANDSHAKE_ERRORS]
)
def test_parse_handshake_errors(name: str, data: bytes, status: int, message: str) -> None:
    with pytest.raises(zcasgi.HandshakeError, match=message) as info:
        codec.parse_handshake(data)
    assert info.value.status == status
    assert isinstance(info.value, zcasgi.ZcasgiError)


def test_connection_token_lists_are_case_insensitive() -> None:
    data = _replace_header(b"Connection", b"keep-alive, UPGRADE")
    assert codec.parse_handshake(data) is not None


# --- exports ----------------------------------------------------------------------------------


def test_exports() -> None:
    assert sorted(codec.__all__) == sorted(
        name
        for name in vars(codec)
        if not name.startswith("_") and name not in {"annotations", "enum"}
    )
    assert codec.ProtocolError is zcasgi.ProtocolError
    assert issubclass(zcasgi.ProtocolError, zcasgi.ZcasgiError)
    assert issubclass(zcasgi.HandshakeError, zcasgi.ZcasgiError)
    assert issubclass(zcasgi.ClientDisconnected, OSError)
    assert Opcode.PING.is_control and not Opcode.BINARY.is_control
