"""End-to-end permessage-deflate (RFC 7692): the real server with
``--ws-per-message-deflate true`` and the ``websockets`` client with ``compression="deflate"``,
on every backend."""

from __future__ import annotations

import json
import os
import socket
import zlib

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

from harness import ZcasgiServer

pytestmark = pytest.mark.timeout(60)

DEFLATE = ["--ws-per-message-deflate", "true"]


def _deflate_in_use(ws: object) -> PerMessageDeflate:
    extensions = ws.protocol.extensions  # type: ignore[attr-defined]
    assert len(extensions) == 1, extensions
    extension = extensions[0]
    assert isinstance(extension, PerMessageDeflate)
    return extension


def _assert_no_app_errors(output: str) -> None:
    assert "Traceback" not in output, output


@pytest.fixture
def echo(backend: str):  # type: ignore[no-untyped-def]
    with ZcasgiServer("apps.echo:app", backend, DEFLATE) as server:
        yield server
    _assert_no_app_errors(server.output())


async def test_negotiated_header(echo: ZcasgiServer) -> None:
    # websockets offers "permessage-deflate; client_max_window_bits".
    async with connect(echo.url(), compression="deflate") as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
        _deflate_in_use(ws)
        await ws.send("hello")
        assert await ws.recv() == "hello"


async def test_offer_parameters_are_honoured(echo: ZcasgiServer) -> None:
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=True, server_max_window_bits=10
    )
    async with connect(echo.url(), compression=None, extensions=[factory]) as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
        )
        extension = _deflate_in_use(ws)
        assert extension.remote_no_context_takeover
        assert extension.remote_max_window_bits == 10
        message = json.dumps([{"id": i, "name": f"user{i}", "online": True} for i in range(3000)])
        for _ in range(3):
            await ws.send(message)
            assert await ws.recv() == message


async def test_echo_large_compressible_text_and_binary(echo: ZcasgiServer) -> None:
    text = json.dumps({"rows": [{"id": i, "text": "κόσμε " * 8} for i in range(40_000)]})
    assert len(text) > 4 * 1024 * 1024
    binary = bytes(range(256)) * 16_384 + os.urandom(100_000)
    async with connect(echo.url(), compression="deflate", max_size=None) as ws:
        _deflate_in_use(ws)
        for message in (text, binary, "", b"", text, binary):
            await ws.send(message)
            assert await ws.recv() == message


async def test_fragmented_compressed_messages(echo: ZcasgiServer) -> None:
    text = "fragmented κόσμε " * 10_000
    async with connect(echo.url(), compression="deflate", max_size=None) as ws:
        _deflate_in_use(ws)
        await ws.send([text[i : i + 1000] for i in range(0, len(text), 1000)])
        assert await ws.recv() == text


async def test_not_negotiated_without_the_option(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend) as server:
        async with connect(server.url(), compression="deflate") as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert ws.protocol.extensions == []
            await ws.send("x" * 10_000)
            assert await ws.recv() == "x" * 10_000


async def test_inflated_size_limit_closes_1009(backend: str) -> None:
    args = [*DEFLATE, "--ws-max-size", "1000"]
    with ZcasgiServer("apps.echo:app", backend, args) as server:
        async with connect(server.url(), compression="deflate") as ws:
            _deflate_in_use(ws)
            await ws.send(b"a" * 1000)
            assert await ws.recv() == b"a" * 1000
            # About 100 bytes on the wire, 100 000 once inflated.
            await ws.send(b"a" * 100_000)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009
        async with connect(server.url(), compression="deflate") as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"
    _assert_no_app_errors(server.output())


def _compressed_zeros(size: int) -> bytes:
    """``size`` zero bytes compressed as one permessage-deflate message (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(bytes(size)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def _deflate_upgrade(port: int) -> socket.socket:
    """A raw client socket, upgraded with permessage-deflate."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"permessage-deflate" in head, head
    return sock


def test_compressed_flood_to_a_slow_app_keeps_memory_bounded(backend: str) -> None:
    """Issue 10 item 2: 40 frames of 16 KB, each inflating to 16 MiB, sent on 4 connections to
    an app that does not call ``receive``. The old server inflated ``ws_max_queue`` (32)
    messages per connection, about 2 GB here; reading now pauses at ``ws_max_queue_bytes``
    (1 MiB) plus one message per connection."""
    payload = _compressed_zeros(16 * 1024 * 1024)
    assert len(payload) < 65536
    # FIN, RSV1 (compressed), binary; masked with a zero key; 16-bit length.
    frame = bytes([0xC2, 0xFE]) + len(payload).to_bytes(2, "big") + bytes(4) + payload
    args = [*DEFLATE, "--timeout-graceful-shutdown", "1"]
    with ZcasgiServer("apps.echo:sleepy_app", backend, args) as server:
        baseline = server.rss_kib()
        clients = [_deflate_upgrade(server.port) for _ in range(4)]
        try:
            for sock in clients:
                sock.setblocking(False)
                for _ in range(40):
                    try:
                        sock.sendall(frame)
                    except BlockingIOError:
                        break  # the server stopped reading: what is sent is enough
            # Once the server has nothing left to do, it holds what it read and inflated.
            assert server.wait_quiet(30)
            rss = server.rss_kib()
        finally:
            for sock in clients:
                sock.close()
    assert rss < 200 * 1024, f"RSS {rss} KiB (baseline {baseline} KiB)"
