"""Hypothesis properties of the WebSocket codec, driven through ``zcasgi.codec``.

Every property runs 2000 examples. What each one checks:

1. Round trip: ``encode_frame`` then ``FrameDecoder`` gives back the frame, for every opcode,
   RSV bits and FIN, masked and unmasked, with lengths around the 125/126 and 65535/65536
   boundaries; the header uses the minimal length encoding.
2. Chunking: a stream decodes to the same frames (``FrameDecoder``) or the same events, bytes
   sent and error (``Connection``) whether fed whole, in random splits or one byte at a time.
3. Robustness: arbitrary bytes give frames/events or ``zcasgi.ProtocolError`` with a close code
   in {1002, 1007, 1009}, nothing else; after an error the close frame with that code is queued
   and the last event is ``("closed", code, "")``.
4. Oracles: ``FrameDecoder`` agrees with ``websockets.frames.Frame.parse`` frame by frame,
   ``encode_frame`` with ``Frame.serialize``, and ``Connection`` with websockets' sans-I/O
   ``Protocol`` (events, error close code, pongs and close frames sent).
5. Masking: ``apply_mask`` (any offset, any split) matches a pure-Python reference.
6. UTF-8: ``Utf8Validator``/``validate_utf8_stream`` and text messages through ``Connection``
   agree with ``bytes.decode("utf-8")``, for random text with invalid bytes mixed in, split into
   fragments and chunks at random points, and fail exactly when the text stops being a valid
   UTF-8 prefix.
7. Close codes: a received close frame with a valid code is reported and echoed; an invalid code
   or a 1-byte payload fails with 1002, a reason that is not UTF-8 with 1007; ``send_close``
   accepts exactly the valid codes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.frames import Close, Opcode
from websockets.frames import Frame as WsFrame
from websockets.protocol import Protocol, Side, State
from websockets.streams import StreamReader

import zcasgi
from zcasgi import codec
from zcasgi.codec import Connection, Frame, FrameDecoder

PROPERTY = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

T = TypeVar("T")

CLOSE_CODES = {1002, 1007, 1009}
CONTROL = {0x8, 0x9, 0xA}
RESERVED_OPCODES = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}
BOUNDARY_LENGTHS = [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537]
# Byte-by-byte feeding costs one Python call per byte: only streams up to this size.
BYTEWISE_LIMIT = 2048


# --- references -------------------------------------------------------------------------------


def mask_reference(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """RFC 6455 §5.3, one byte at a time."""
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_utf8_prefix(data: bytes) -> bool:
    """Whether ``data`` can be continued into valid UTF-8 (CPython's decoder as the reference)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data" and exc.end == len(data)
    return True


def is_valid_close_code(code: int) -> bool:
    """RFC 6455 §7.4 and the IANA registry: codes that may appear in a close frame."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def header_length(payload_len: int, masked: bool) -> int:
    size = 2 if payload_len <= 125 else 4 if payload_len <= 0xFFFF else 10
    return size + (4 if masked else 0)


# --- strategies -------------------------------------------------------------------------------


def filler(length: int, seed: int) -> bytes:
    """``length`` pseudo-random bytes: cheap for 64 KiB payloads, still shrinkable by seed."""
    return random.Random(seed).randbytes(length)


lengths = st.one_of(
    st.sampled_from(BOUNDARY_LENGTHS),
    st.integers(0, 300),
    st.integers(0, 70_000),
)
masks = st.binary(min_size=4, max_size=4)
small_payloads = st.binary(max_size=40)


@dataclass(frozen=True)
class Spec:
    """A frame to put on the wire."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    mask: bytes | None = None

    def encode(self) -> bytes:
        return codec.encode_frame(
            self.opcode, self.payload, fin=self.fin, rsv=self.rsv, mask=self.mask
        )

    def expected(self) -> Frame:
        return Frame(self.opcode, self.payload, fin=self.fin, rsv=self.rsv, masked=self.masked)

    @property
    def masked(self) -> bool:
        return self.mask is not None


@st.composite
def specs(
    draw: st.DrawFn,
    opcodes: st.SearchStrategy[int] = st.integers(0, 15),
    sizes: st.SearchStrategy[int] = lengths,
    masked: st.SearchStrategy[bool] = st.booleans(),
) -> Spec:
    """Any frame: every opcode, RSV bits and FIN, lengths around the encoding boundaries."""
    length = draw(sizes)
    payload = filler(length, draw(st.integers(0, 2**16)))
    mask = draw(masks) if draw(masked) else None
    return Spec(draw(opcodes), payload, draw(st.booleans()), draw(st.integers(0, 7)), mask)


valid_opcodes = st.sampled_from([0, 1, 2, 8, 9, 10])
# Mostly frames websockets can parse: known opcodes, RSV clear, short control frames.
plausible_specs = st.one_of(
    specs(opcodes=valid_opcodes, sizes=st.integers(0, 300)).map(
        lambda s: Spec(
            s.opcode,
            s.payload[:125] if s.opcode in CONTROL else s.payload,
            True if s.opcode in CONTROL else s.fin,
            0,
            s.mask,
        )
    ),
    specs(sizes=st.one_of(st.sampled_from(BOUNDARY_LENGTHS), st.integers(0, 300))),
)


def split_points(draw: st.DrawFn, data: bytes, max_cuts: int = 8) -> list[bytes]:
    """``data`` split at random points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@st.composite
def text_with_garbage(draw: st.DrawFn) -> bytes:
    """Random unicode, UTF-8 encoded, with random (often invalid) bytes spliced in sometimes."""
    data = draw(st.text(max_size=30)).encode()
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=3),
                    st.sampled_from(
                        [b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff"]
                    ),
                    st.sampled_from([b"\xe2\x82", b"\xf0\x9d", b"\xce"]),  # truncated
                )
            )
            data = data[:at] + junk + data[at:]
    return data


@st.composite
def client_frames(draw: st.DrawFn) -> list[Spec]:
    """What a client might send: messages in fragments with control frames between them, and
    now and then something wrong (bad UTF-8, bad close frame, RSV bits, unmasked, reserved
    opcode, long or fragmented control frame, continuation out of place)."""
    frames: list[Spec] = []

    def mask() -> bytes | None:
        return None if draw(st.integers(0, 40)) == 0 else draw(masks)

    def control() -> Spec:
        opcode = draw(st.sampled_from([0x9, 0xA, 0x9, 0xA, 0x8]))
        if opcode == 0x8:
            payload = draw(close_payloads())
        else:
            payload = draw(st.binary(max_size=20))
        return Spec(opcode, payload, mask=mask())

    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text", "text", "binary", "control", "random"]))
        if kind in ("text", "binary"):
            data = draw(text_with_garbage()) if kind == "text" else draw(small_payloads)
            pieces = split_points(draw, data, max_cuts=3)
            for i, piece in enumerate(pieces):
                opcode = (1 if kind == "text" else 2) if i == 0 else 0
                frames.append(Spec(opcode, piece, fin=i == len(pieces) - 1, mask=mask()))
                if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
                    frames.append(control())
        elif kind == "control":
            frames.append(control())
        else:
            frames.append(draw(specs(sizes=st.integers(0, 130), masked=st.just(True))))
    return frames


@st.composite
def close_payloads(draw: st.DrawFn) -> bytes:
    """Close frame payloads: empty, 1 byte, or a code (valid or not) with a reason (valid UTF-8
    or not). Invalid codes come with valid reasons: which of the two is reported first is not
    specified by RFC 6455 (websockets checks the reason first, zcasgi the code)."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return b""
    if kind == 1:
        return draw(st.binary(min_size=1, max_size=1))
    code = draw(st.one_of(st.sampled_from([1000, 1001, 1003, 1011, 3000, 4999]), st.integers(0, 0xFFFF)))
    if is_valid_close_code(code) and draw(st.integers(0, 3)) == 0:
        reason = draw(st.binary(max_size=10))
    else:
        reason = draw(st.text(max_size=10)).encode()
    return code.to_bytes(2, "big") + reason[:123]


def stream_of(frames: Sequence[Spec]) -> bytes:
    return b"".join(f.encode() for f in frames)


# --- drivers ----------------------------------------------------------------------------------


@dataclass
class Decoded:
    frames: list[Frame]
    error: int | None  # close code of the ProtocolError, if any
    buffered: int


def decode(chunks: Sequence[bytes], max_size: int | None = None) -> Decoded:
    """Feed ``chunks`` to a ``FrameDecoder``, then ``b""`` to surface a pending error."""
    decoder = FrameDecoder(max_size=max_size)
    frames: list[Frame] = []
    try:
        for chunk in [*chunks, b""]:
            frames += decoder.feed(chunk)
    except zcasgi.ProtocolError as exc:
        return Decoded(frames, exc.close_code, 0)
    return Decoded(frames, None, decoder.buffered)


@dataclass
class Outcome:
    events: list[tuple[Any, ...]]
    error: int | None
    sent: bytes
    error_at: int | None = None  # index of the chunk whose receive_data raised


def run(chunks: Sequence[bytes], **config: Any) -> Outcome:
    """Feed ``chunks`` to a fresh ``Connection``; collect events, the error and bytes sent."""
    conn = Connection(**config)
    events: list[tuple[Any, ...]] = []
    sent = b""
    error = error_at = None
    for i, chunk in enumerate(chunks):
        try:
            conn.receive_data(chunk)
        except zcasgi.ProtocolError as exc:
            assert error is None, "a closed connection raised again"
            error, error_at = exc.close_code, i
        events += conn.events()
        sent += conn.data_to_send()
    return Outcome(events, error, sent, error_at)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def ws_parse_frames(data: bytes, mask: bool | None = None) -> Iterator[Any]:
    """Parse ``data`` with ``websockets.frames.Frame.parse``, frame by frame.

    Yields a websockets ``Frame``, a ``ProtocolError`` (for a frame it consumed but rejected, or
    an invalid opcode, after which it cannot resynchronise and stops), or ``EOFError`` when the
    data ends inside a frame. ``mask`` defaults to each frame's own mask bit.
    """
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    while reader.buffer:
        frame_mask = mask if mask is not None else len(reader.buffer) > 1 and reader.buffer[1] >= 0x80
        parser = WsFrame.parse(reader.read_exact, mask=frame_mask, max_size=None, extensions=None)
        try:
            next(parser)
        except StopIteration as done:
            yield done.value
            continue
        except EOFError as exc:
            yield exc
            return
        except WsProtocolError as exc:
            yield exc
            if str(exc) == "invalid opcode":
                return
            continue
        raise AssertionError("Frame.parse waited for data after EOF")


def parse_sent(data: bytes) -> list[tuple[int, bytes]]:
    """Frames a server sent (unmasked), as ``(opcode, payload)``; close frames keep the code only."""
    out = []
    for frame in ws_parse_frames(data, mask=False):
        assert isinstance(frame, WsFrame), frame
        payload = bytes(frame.data)
        if frame.opcode is Opcode.CLOSE:
            payload = payload[:2]
        out.append((frame.opcode.value, payload))
    return out


# --- 1. round trip ----------------------------------------------------------------------------


@PROPERTY
@given(spec=specs())
def test_encode_decode_round_trip(spec: Spec) -> None:
    wire = spec.encode()
    head = header_length(len(spec.payload), spec.masked)
    assert len(wire) == head + len(spec.payload)
    body = wire[head:]
    assert body == (mask_reference(spec.payload, spec.mask) if spec.mask else spec.payload)
    if spec.mask:
        assert wire[head - 4 : head] == spec.mask
    assert decode([wire]) == Decoded([spec.expected()], None, 0)


