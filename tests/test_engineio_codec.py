"""The Engine.IO v4 packet and payload codec of the core (``zcasgi.codec.eio_*``), with
python-engineio's own ``Packet`` and ``Payload`` as the oracle.

python-engineio turns message text that parses as JSON into objects, and encodes objects back
with compact separators; the comparisons here are of the wire form, which both must agree on
byte for byte. Where the core is stricter than python-engineio (a type digit 7-9, base64 with
characters outside the alphabet), the difference is asserted on its own.
"""

from __future__ import annotations

import json

import pytest
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from hypothesis import example, given
from hypothesis import strategies as st

from zcasgi import codec

TEXT_TYPES = st.integers(min_value=0, max_value=6)
# python-engineio's decoder reads a text payload's first character as the type; text data is
# anything, including the record separator's neighbours (but not the separator itself inside a
# polling payload, which the protocol cannot carry).
TEXT = st.text(st.characters(blacklist_characters="\x1e", blacklist_categories=("Cs",)))


def _packet() -> st.SearchStrategy[tuple[int, str | bytes]]:
    text_packets = st.tuples(TEXT_TYPES, TEXT)
    binary_messages = st.tuples(st.just(4), st.binary(max_size=512))
    return st.one_of(text_packets, binary_messages)


def _oracle_wire(kind: int, data: str | bytes, *, b64: bool) -> str | bytes:
    encoded: str | bytes = eio_packet.Packet(kind, data).encode(b64=b64)
    return encoded


def _same_data(theirs: eio_packet.Packet, kind: int, data: str | bytes) -> None:
    """python-engineio decoded ``(kind, data)``: the same, but for text it read as JSON."""
    assert theirs.packet_type == kind
    if isinstance(theirs.data, str | bytes):
        assert theirs.data == data
    else:
        assert isinstance(data, str)
        assert json.dumps(theirs.data) == json.dumps(json.loads(data))


@given(_packet())
@example((4, '{"a": 1}'))
@example((4, " 1"))
@example((2, "probe"))
def test_websocket_frames_match_python_engineio(pkt: tuple[int, str | bytes]) -> None:
    kind, data = pkt
    ours = codec.eio_encode_packet(kind, data)
    assert ours == _oracle_wire(kind, data, b64=False)
    assert codec.eio_decode_packet(ours) == (kind, data)
    _same_data(eio_packet.Packet(encoded_packet=ours), kind, data)


@given(st.lists(_packet(), min_size=1, max_size=16))
@example([(4, '{"a": [1, 2]}'), (4, b"\x00\x01"), (3, "probe"), (6, "")])
def test_polling_payloads_match_python_engineio(packets: list[tuple[int, str | bytes]]) -> None:
    ours = codec.eio_encode_payload(packets)
    oracle = eio_payload.Payload([eio_packet.Packet(kind, data) for kind, data in packets])
    assert ours == oracle.encode()
    assert codec.eio_decode_payload(ours.encode()) == packets
    decoded = eio_payload.Payload(encoded_payload=ours).packets
    assert len(decoded) == len(packets)
    for theirs, (kind, data) in zip(decoded, packets):
        _same_data(theirs, kind, data)


@given(st.lists(_packet(), min_size=17, max_size=24))
def test_both_refuse_more_than_16_packets(packets: list[tuple[int, str | bytes]]) -> None:
    body = codec.eio_encode_payload(packets)
    with pytest.raises(ValueError, match="more than 16 packets"):
        codec.eio_decode_payload(body.encode())
    with pytest.raises(ValueError, match="Too many packets"):
        eio_payload.Payload(encoded_payload=body)


def test_an_empty_body_holds_no_packets() -> None:
    assert codec.eio_decode_payload(b"") == []
    assert eio_payload.Payload(encoded_payload="").packets == []


@pytest.mark.parametrize("frame", ["", "7", "9x", "x", "é"])
def test_text_without_a_type_digit_is_refused(frame: str) -> None:
    """The core refuses any type outside 0-6; python-engineio refuses an empty packet and
    anything int() cannot read, and takes 7-9 as types nobody handles."""
    with pytest.raises(ValueError):
        codec.eio_decode_packet(frame)


def test_payload_limits_and_bad_input() -> None:
    with pytest.raises(ValueError, match="exceeds the limit of 8 bytes"):
        codec.eio_decode_payload(b"4123456789", max_bytes=8)
    with pytest.raises(ValueError, match="not UTF-8"):
        codec.eio_decode_payload(b"4\xff")
    with pytest.raises(ValueError, match="base64"):
        codec.eio_decode_payload(b"b!!!!")
    with pytest.raises(ValueError, match="empty packet"):
        codec.eio_decode_payload(b"4a\x1e")
    with pytest.raises(ValueError, match="only be of type MESSAGE"):
        codec.eio_encode_packet(2, b"\x00")
    with pytest.raises(ValueError, match=r"0\.\.=6"):
        codec.eio_encode_packet(7, "x")
