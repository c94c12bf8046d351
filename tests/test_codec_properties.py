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
   ``Protocol`` on whole client frames (events, error close code, pongs and close frames sent,
   under four message size limits; see ``ws_expected`` for the two documented differences).
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
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
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

CLOSE_CODES = {1002, 1007, 1009}
CONTROL = {0x8, 0x9, 0xA}
RESERVED_OPCODES = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}
BOUNDARY_LENGTHS = [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537]
# Byte-by-byte feeding costs one Python call per byte: only streams up to this size.
BYTEWISE_LIMIT = 2048


# --- references -------------------------------------------------------------------------------


def mask_reference(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """RFC 6455 §5.3: byte ``i`` XOR ``mask[(i + offset) % 4]``, as one big-integer XOR."""
    n = len(data)
    key = mask[offset % 4 :] + mask[: offset % 4]
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


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
ANY_OPCODE = st.integers(0, 15)
ANY_BOOL = st.booleans()
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
    opcodes: st.SearchStrategy[int] = ANY_OPCODE,
    sizes: st.SearchStrategy[int] = lengths,
    masked: st.SearchStrategy[bool] = ANY_BOOL,
) -> Spec:
    """Any frame: every opcode, RSV bits and FIN, lengths around the encoding boundaries."""
    length = draw(sizes)
    payload = filler(length, draw(st.integers(0, 2**16)))
    mask = draw(masks) if draw(masked) else None
    return Spec(draw(opcodes), payload, draw(st.booleans()), draw(st.integers(0, 7)), mask)


valid_opcodes = st.sampled_from([0, 1, 2, 8, 9, 10])
# Mostly (7 in 8) frames websockets can parse: known opcodes, RSV clear, short control frames.
valid_specs = specs(opcodes=valid_opcodes, sizes=st.integers(0, 300)).map(
    lambda s: Spec(
        s.opcode,
        s.payload[:125] if s.opcode in CONTROL else s.payload,
        True if s.opcode in CONTROL else s.fin,
        0,
        s.mask,
    )
)
plausible_specs = st.one_of(
    *[valid_specs] * 7,
    specs(sizes=st.one_of(st.sampled_from(BOUNDARY_LENGTHS), st.integers(0, 300))),
)


def split_points(
    draw: Callable[[st.SearchStrategy[Any]], Any], data: bytes, max_cuts: int = 8
) -> list[bytes]:
    """``data`` split at random points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


TRUNCATED = [b"\xe2\x82", b"\xf0\x9d", b"\xf0\x9d\x84", b"\xce"]


@st.composite
def text_with_garbage(draw: st.DrawFn, one_in: int = 2) -> bytes:
    """Random unicode, UTF-8 encoded; one time in ``one_in``, with random (often invalid) bytes
    spliced in, or a code point cut short at the end."""
    data = draw(st.text(max_size=30)).encode()
    if draw(st.integers(0, one_in - 1)) == 0:
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(data)))
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=3),
                    st.sampled_from(
                        [b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff"]
                    ),
                    st.sampled_from(TRUNCATED),
                )
            )
            data = data[:at] + junk + data[at:]
        if draw(st.integers(0, 3)) == 0:
            data += draw(st.sampled_from(TRUNCATED))
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
        payload = draw(close_payloads() if opcode == 0x8 else st.binary(max_size=20))
        return Spec(opcode, payload, mask=mask())

    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text"] * 3 + ["binary"] * 2 + ["control"] * 2 + ["random"]))
        if kind in ("text", "binary"):
            data = draw(text_with_garbage(one_in=4) if kind == "text" else small_payloads)
            pieces = split_points(draw, data, max_cuts=3)
            for i, piece in enumerate(pieces):
                opcode = (1 if kind == "text" else 2) if i == 0 else 0
                frames.append(Spec(opcode, piece, fin=i == len(pieces) - 1, mask=mask()))
                if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
                    frames.append(control())
        elif kind == "control":
            frames.append(control())
        else:
            spec = draw(specs(sizes=st.integers(0, 130), masked=st.just(True)))
            if spec.opcode == 0x8:
                # Random bytes would often be an invalid code *and* an invalid reason.
                spec = Spec(8, draw(close_payloads()), spec.fin, spec.rsv, spec.mask)
            frames.append(spec)
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
    code = draw(
        st.one_of(st.sampled_from([1000, 1001, 1003, 1011, 3000, 4999]), st.integers(0, 0xFFFF))
    )
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


def ws_parse_frames(
    data: bytes, mask: bool | None = None, max_size: int | None = None
) -> Iterator[Any]:
    """Parse ``data`` with ``websockets.frames.Frame.parse``, frame by frame.

    Yields a websockets ``Frame``, a ``ProtocolError`` (for a frame it consumed but rejected, or
    an invalid opcode, after which it cannot resynchronise and stops), ``PayloadTooBig`` (then
    stops), or ``EOFError`` when the data ends inside a frame. ``mask`` defaults to each frame's
    own mask bit, so that masking is never the error.
    """
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    while reader.buffer:
        frame_mask = (
            mask if mask is not None else len(reader.buffer) > 1 and reader.buffer[1] >= 0x80
        )
        parser = WsFrame.parse(reader.read_exact, mask=frame_mask, max_size=max_size)
        try:
            next(parser)
        except StopIteration as done:
            yield done.value
            continue
        except (EOFError, PayloadTooBig) as exc:
            yield exc
            return
        except WsProtocolError as exc:
            yield exc
            if str(exc) == "invalid opcode":
                return
            continue
        raise AssertionError("Frame.parse waited for data after EOF")


def parse_sent(data: bytes) -> list[tuple[int, bytes]]:
    """Frames a server sent (unmasked) as ``(opcode, payload)``; close frames keep the code only."""
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
    event(f"{head - 4 * spec.masked}-byte header, {'masked' if spec.masked else 'unmasked'}")
    assert len(wire) == head + len(spec.payload)
    body = wire[head:]
    assert body == (mask_reference(spec.payload, spec.mask) if spec.mask else spec.payload)
    if spec.mask:
        assert wire[head - 4 : head] == spec.mask
    assert decode([wire]) == Decoded([spec.expected()], None, 0)


# --- 2. chunking ------------------------------------------------------------------------------


@PROPERTY
@given(
    frames=st.lists(specs(), min_size=1, max_size=4),
    tail=st.binary(max_size=20),
    max_size=st.none() | st.integers(0, 70_000),
    data=st.data(),
)
def test_decoder_chunking_does_not_matter(
    frames: list[Spec], tail: bytes, max_size: int | None, data: st.DataObject
) -> None:
    stream = stream_of(frames) + tail
    whole = decode([stream], max_size)
    if max_size is None:
        assert whole.frames[: len(frames)] == [f.expected() for f in frames]
    assert decode(split_points(data.draw, stream), max_size) == whole
    if len(stream) <= BYTEWISE_LIMIT:
        assert decode(bytewise(stream), max_size) == whole


@PROPERTY
@given(
    frames=client_frames(),
    tail=st.binary(max_size=8),
    max_message_size=st.sampled_from([16 * 1024 * 1024, 40, 5]),
    data=st.data(),
)
def test_connection_chunking_does_not_matter(
    frames: list[Spec], tail: bytes, max_message_size: int, data: st.DataObject
) -> None:
    stream = stream_of(frames) + tail
    whole = run([stream], max_message_size=max_message_size)
    whole.error_at = None
    split = run(split_points(data.draw, stream), max_message_size=max_message_size)
    split.error_at = None
    assert split == whole
    if len(stream) <= BYTEWISE_LIMIT:
        one = run(bytewise(stream), max_message_size=max_message_size)
        one.error_at = None
        assert one == whole


# --- 3. arbitrary bytes -----------------------------------------------------------------------


@st.composite
def mangled_streams(draw: st.DrawFn) -> bytes:
    """Plausible client traffic with random bytes overwritten, or plain random bytes."""
    if draw(st.integers(0, 2)) == 0:
        return draw(st.binary(max_size=300))
    stream = bytearray(stream_of(draw(client_frames())) + draw(st.binary(max_size=8)))
    if stream:
        for at, value in draw(
            st.lists(st.tuples(st.integers(0, len(stream) - 1), st.integers(0, 255)), max_size=4)
        ):
            stream[at] = value
    return bytes(stream)


@PROPERTY
@given(stream=mangled_streams(), max_size=st.none() | st.integers(0, 200))
def test_decoder_arbitrary_bytes(stream: bytes, max_size: int | None) -> None:
    result = decode([stream], max_size)
    assert result.error in ({None, 1002} if max_size is None else {None, 1002, 1009})
    for frame in result.frames:
        assert 0 <= frame.opcode <= 15 and 0 <= frame.rsv <= 7
        if max_size is not None:
            assert len(frame.payload) <= max_size
    # Headers take at least their minimal encoding (the peer may use a longer one).
    consumed = sum(header_length(len(f.payload), f.masked) + len(f.payload) for f in result.frames)
    assert consumed + result.buffered <= len(stream)


EVENT_SHAPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "binary": (bytes,),
    "ping": (bytes,),
    "pong": (bytes,),
    "closed": (int, str),
}


@PROPERTY
@given(stream=mangled_streams(), max_message_size=st.sampled_from([16 * 1024 * 1024, 50, 0]))
def test_connection_arbitrary_bytes(stream: bytes, max_message_size: int) -> None:
    conn = Connection(max_message_size=max_message_size)
    try:
        conn.receive_data(stream)
    except zcasgi.ProtocolError as exc:
        error: int | None = exc.close_code
    else:
        error = None
    event(f"error {error}")
    events = conn.events()
    for ev in events:
        kind, *values = ev
        assert tuple(type(v) for v in values) == EVENT_SHAPES[kind], ev
    closed = [e for e in events if e[0] == "closed"]
    assert len(closed) <= 1
    sent = conn.data_to_send()
    if error is not None:
        assert error in CLOSE_CODES
        assert events[-1] == ("closed", error, "")
        assert sent.endswith(b"\x88\x02" + error.to_bytes(2, "big"))
        assert conn.is_closed
    elif closed:
        assert events[-1] == closed[0]
        code = closed[0][1]
        assert is_valid_close_code(code) or code == 1005
        assert conn.is_closed
    else:
        assert conn.is_open
    for ev in events:
        if ev[0] == "binary" or ev[0] == "text":
            data = ev[1].encode() if isinstance(ev[1], str) else ev[1]
            assert len(data) <= max_message_size


# --- 4. oracles -------------------------------------------------------------------------------


def rsv_of(frame: WsFrame) -> int:
    return frame.rsv1 << 2 | frame.rsv2 << 1 | frame.rsv3


@PROPERTY
@given(
    frames=st.lists(plausible_specs, max_size=5),
    tail=st.just(b"") | st.binary(max_size=12),
    max_size=st.none() | st.integers(0, 300),
)
def test_decoder_agrees_with_websockets(
    frames: list[Spec], tail: bytes, max_size: int | None
) -> None:
    stream = stream_of(frames) + tail
    ours = decode([stream], max_size)
    i = 0  # frames of ours matched so far
    for item in ws_parse_frames(stream, max_size=max_size):
        event(str(item) if isinstance(item, WsProtocolError) else type(item).__name__)
        if isinstance(item, WsFrame):
            frame = ours.frames[i]
            got = (frame.opcode, frame.payload, frame.fin, frame.rsv)
            assert got == (item.opcode.value, bytes(item.data), item.fin, rsv_of(item))
            i += 1
        elif isinstance(item, WsProtocolError):
            message = str(item)
            if message == "invalid opcode":
                # websockets stops after two bytes; we decode the frame, or need more bytes.
                if i < len(ours.frames):
                    assert ours.frames[i].opcode in RESERVED_OPCODES
                else:
                    assert ours.error is not None or ours.buffered
                return
            frame = ours.frames[i]
            if message == "reserved bits must be 0":
                assert frame.rsv != 0
            elif message == "control frame too long":
                assert frame.opcode in RESERVED_OPCODES | CONTROL and len(frame.payload) > 125
            elif message == "fragmented control frame":
                assert frame.opcode in RESERVED_OPCODES | CONTROL and not frame.fin
            else:
                raise AssertionError(f"unexpected websockets error: {message}")
            i += 1
        elif isinstance(item, PayloadTooBig):
            # websockets checks the limit before reading the mask, we once the header is whole;
            # a length with its top bit set is an error of its own for us.
            assert len(ours.frames) == i
            assert ours.error in (1009, 1002) or ours.buffered
            return
        else:
            assert isinstance(item, EOFError)
            # The stream ends inside a frame: we wait for it too, unless the length has its top
            # bit set (websockets waits for 2**63 bytes).
            assert len(ours.frames) == i
            assert ours.buffered or ours.error == 1002
            return
    assert (len(ours.frames), ours.error, ours.buffered) == (i, None, 0)


@PROPERTY
@given(spec=plausible_specs)
def test_encode_agrees_with_websockets_serialize(spec: Spec) -> None:
    valid = spec.opcode not in RESERVED_OPCODES and spec.rsv == 0
    if spec.opcode in CONTROL:
        valid = valid and spec.fin and len(spec.payload) <= 125
    if not valid:
        return
    reference = WsFrame(Opcode(spec.opcode), spec.payload, spec.fin).serialize(mask=False)
    assert codec.encode_frame(spec.opcode, spec.payload, fin=spec.fin) == reference


def ws_expected(stream: bytes, max_size: int) -> tuple[list[tuple[Any, ...]], int | None]:
    """Events and error close code for ``stream``, by websockets' sans-I/O ``Protocol``.

    websockets does not validate text (its I/O layers do), so text messages are checked here
    with CPython's decoder, failing at the first frame whose bytes are no longer a UTF-8 prefix.
    RFC 6455 allows a close frame in the middle of a fragmented message (control frames may be
    interleaved); websockets rejects it, zcasgi accepts the close: that one difference is
    translated. websockets counts control frames against ``max_size`` too, so the message size
    limit is applied here as well: data frames only, checked at each frame's header.
    """
    proto = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    proto.receive_data(stream)
    events: list[tuple[Any, ...]] = []
    error = None
    kind = None
    message = b""
    for frame in proto.events_received():
        assert isinstance(frame, WsFrame)
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if frame.opcode is not Opcode.CONT:
                kind = "text" if frame.opcode is Opcode.TEXT else "binary"
                message = b""
            if len(message) + len(frame.data) > max_size:
                error = 1009
                break
            message += frame.data
            if kind == "text" and not is_utf8_prefix(message):
                error = 1007
                break
            if frame.fin:
                if kind == "text":
                    if not is_utf8(message):
                        error = 1007
                        break
                    events.append(("text", message.decode()))
                else:
                    events.append(("binary", message))
        elif frame.opcode is Opcode.PING:
            events.append(("ping", frame.data))
        elif frame.opcode is Opcode.PONG:
            events.append(("pong", frame.data))
        else:
            close = Close.parse(frame.data)
            events.append(("closed", close.code, close.reason))
    else:
        exc = proto.parser_exc
        if isinstance(exc, WsProtocolError) and str(exc) == "incomplete fragmented message":
            event("close frame inside a fragmented message")
            assert proto.close_rcvd is not None
            events.append(("closed", proto.close_rcvd.code, proto.close_rcvd.reason))
        elif isinstance(exc, WsProtocolError):
            error = 1002
        elif isinstance(exc, UnicodeDecodeError):
            error = 1007
        else:
            assert exc is None, repr(exc)
    if error is not None:
        events.append(("closed", error, ""))
    return events, error


@PROPERTY
@given(frames=client_frames(), max_size=st.sampled_from([16 * 1024 * 1024, 64, 16, 0]))
def test_connection_agrees_with_websockets(frames: list[Spec], max_size: int) -> None:
    # Whole frames only: on a partial header websockets may fail after two bytes (say, on the
    # mask bit) where zcasgi waits for the rest of the header (at most 14 bytes) first.
    stream = stream_of(frames)
    events, error = ws_expected(stream, max_size)
    event(f"error {error}")
    ours = run([stream], max_message_size=max_size)
    assert (ours.events, ours.error) == (events, error)
    # What we sent: a pong per ping, then a close frame echoing the code (empty for 1005).
    expected_sent = [(0xA, e[1]) for e in events if e[0] == "ping"]
    if events and events[-1][0] == "closed":
        code = events[-1][1]
        expected_sent.append((0x8, b"" if code == 1005 else code.to_bytes(2, "big")))
    assert parse_sent(ours.sent) == expected_sent


# --- 5. masking -------------------------------------------------------------------------------


payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(filler, lengths, st.integers(0, 2**16)),
)


@PROPERTY
@given(data=payloads, mask=masks, offset=st.integers(0, 2**40), cut=st.integers(0, 2**20))
def test_masking_matches_reference(data: bytes, mask: bytes, offset: int, cut: int) -> None:
    masked_data = codec.apply_mask(data, mask, offset)
    assert masked_data == mask_reference(data, mask, offset)
    if len(data) <= 64:
        assert masked_data == bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))
    assert codec.apply_mask(masked_data, mask, offset) == data
    # Unmasking in pieces equals unmasking the whole (a payload arriving in several reads).
    cut = min(cut, len(data))
    pieces = codec.apply_mask(data[:cut], mask, offset) + codec.apply_mask(
        data[cut:], mask, offset + cut
    )
    assert pieces == masked_data
    # encode_frame masks with the same rule from offset 0.
    wire = codec.encode_frame(2, data, mask=mask)
    assert wire[header_length(len(data), True) :] == mask_reference(data, mask)


# --- 6. UTF-8 ---------------------------------------------------------------------------------


def first_invalid_prefix(data: bytes) -> int | None:
    """Smallest ``n`` such that ``data[:n]`` is not a UTF-8 prefix, if any."""
    if is_utf8_prefix(data):
        return None
    lo, hi = 1, len(data)  # "is a prefix" is monotonic: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if is_utf8_prefix(data[:mid]):
            lo = mid + 1
        else:
            hi = mid
    return lo


@PROPERTY
@given(text=text_with_garbage(), data=st.data())
def test_utf8_validator_agrees_with_python(text: bytes, data: st.DataObject) -> None:
    chunks = split_points(data.draw, text)
    assert codec.validate_utf8_stream(chunks) == is_utf8(text)
    validator = codec.Utf8Validator()
    verdicts = [validator.feed(chunk) for chunk in chunks]
    assert validator.finish() == is_utf8(text)
    # Fails fast: exactly from the chunk that holds the first byte breaking the prefix.
    bad = first_invalid_prefix(text)
    seen = 0
    for chunk, ok in zip(chunks, verdicts):
        seen += len(chunk)
        assert ok == (bad is None or seen < bad)


@PROPERTY
@given(text=text_with_garbage(), data=st.data())
def test_connection_text_agrees_with_python(text: bytes, data: st.DataObject) -> None:
    fragments = split_points(data.draw, text, max_cuts=4)
    specs_ = [
        Spec(1 if i == 0 else 0, piece, fin=i == len(fragments) - 1, mask=data.draw(masks))
        for i, piece in enumerate(fragments)
    ]
    # Stream offset of every byte of the message.
    positions: list[int] = []
    offset = 0
    for spec in specs_:
        head = header_length(len(spec.payload), True)
        positions += range(offset + head, offset + head + len(spec.payload))
        offset += head + len(spec.payload)
    stream = stream_of(specs_)
    chunks = split_points(data.draw, stream)
    ours = run(chunks)
    bad = first_invalid_prefix(text)
    event("valid" if is_utf8(text) else "truncated" if bad is None else "invalid")
    if is_utf8(text):
        assert (ours.events, ours.error) == ([("text", text.decode())], None)
        return
    assert (ours.events, ours.error) == ([("closed", 1007, "")], 1007)
    # The byte that breaks the prefix, or (a truncated code point) the end of the message.
    at = positions[bad - 1] if bad is not None else len(stream) - 1
    ends = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    assert ours.error_at == next(i for i, end in enumerate(ends) if end > at)


# --- 7. close codes ---------------------------------------------------------------------------


@PROPERTY
@given(
    code=st.one_of(st.integers(0, 0xFFFF), st.integers(995, 1020), st.integers(2995, 5005)),
    reason=st.one_of(st.text(max_size=70).map(str.encode), st.binary(max_size=10)),
    shape=st.sampled_from(["code", "code", "code", "empty", "one byte"]),
    mask=masks,
)
def test_received_close_codes(code: int, reason: bytes, shape: str, mask: bytes) -> None:
    payload = {
        "code": code.to_bytes(2, "big") + reason,
        "empty": b"",
        "one byte": bytes([code & 0xFF]),
    }[shape]
    ours = run([codec.encode_frame(8, payload, mask=mask)])
    if len(payload) > 125:
        expected, error = ("closed", 1002, ""), 1002  # control frame too long
    elif shape == "empty":
        expected, error = ("closed", 1005, ""), None
    elif shape == "one byte" or not is_valid_close_code(code):
        expected, error = ("closed", 1002, ""), 1002
    elif not is_utf8(reason):
        expected, error = ("closed", 1007, ""), 1007
    else:
        expected, error = ("closed", code, reason.decode()), None
    assert (ours.events, ours.error) == ([expected], error)
    # Valid codes are echoed (RFC 6455 §5.5.1); errors are answered with their own code.
    echoed = b"" if expected[1] == 1005 else expected[1].to_bytes(2, "big")
    assert parse_sent(ours.sent) == [(0x8, echoed)]
    # websockets agrees, except on which of two faults to report first.
    if len(payload) <= 125 and (is_valid_close_code(code) or is_utf8(reason) or shape != "code"):
        try:
            close = Close.parse(payload)
        except WsProtocolError:
            assert error == 1002
        except UnicodeDecodeError:
            assert error == 1007
        else:
            assert (close.code, close.reason) == expected[1:]


@PROPERTY
@given(
    code=st.one_of(st.integers(0, 0xFFFF), st.integers(995, 1020), st.integers(2995, 5005)),
    reason=st.text(max_size=70),
)
def test_send_close_codes(code: int, reason: str) -> None:
    conn = Connection()
    encoded = reason.encode()
    if is_valid_close_code(code) and len(encoded) <= 123:
        conn.send_close(code, reason)
        assert conn.data_to_send() == codec.encode_frame(8, code.to_bytes(2, "big") + encoded)
        assert not conn.is_open
    else:
        with pytest.raises(ValueError):
            conn.send_close(code, reason)
        assert conn.data_to_send() == b""
        assert conn.is_open
